#!/usr/bin/env python3
"""Turns benches/compare.sh's measurements into one table (printed, and
written to RESULTS.md with the machine's description).

    python3 benches/report.py MEASUREMENTS.tsv RESULTS.md "data set line" "machine lines"
"""
import sys

tsv, out, dataset, machine = sys.argv[1:5]
runs, facts = {}, {}
for line in open(tsv):
    f = line.rstrip("\n").split("\t")
    if len(f) == 3:
        runs[f[0]] = (float(f[1]), int(f[2]) / 1024)  # seconds, MiB
    elif len(f) == 2 and f[1]:
        facts[f[0]] = float(f[1])

events, mb = facts["events"], facts["bytes"] / 1e6


def secs(name):
    return runs[name][0] if name in runs else None


def rss(*names):
    vals = [runs[n][1] for n in names if n in runs]
    return max(vals) if vals else None


def total(*names):
    vals = [secs(n) for n in names]
    return None if None in vals else sum(vals)


rows = []  # (figure, credtrail, duckdb, ratio, target)


def row(figure, ours, theirs, fmt, target="", higher_is_better=False):
    def show(v):
        return "—" if v is None else fmt.format(v)

    ratio = ""
    if ours is not None and theirs:
        r = ours / theirs
        ratio = f"{r:.2f}×"
        if target:
            ok = r >= float(target.strip("≥≤× ")) if higher_is_better else r <= float(target.strip("≥≤× "))
            ratio += " ✅" if ok else " ❌"
    rows.append((figure, show(ours), show(theirs), ratio, target))


ct_i, dk_i, dk_p = secs("credtrail_ingest"), secs("duckdb_ingest"), secs("duckdb_ingest_plain")
eps = lambda s: None if s is None else events / s
# The target is against the plain `COPY`, the one line a user would write instead (issue 20).
row("ingest: events/s", eps(ct_i), eps(dk_i), "{:,.0f}")
row("ingest: MB/s of JSON", mb / ct_i if ct_i else None, mb / dk_i if dk_i else None, "{:,.1f}")
row("ingest: seconds", ct_i, dk_i, "{:.2f}")
row("ingest: peak RSS, MiB", rss("credtrail_ingest"), rss("duckdb_ingest"), "{:,.0f}")
row(
    "ingest: Parquet written, MB",
    facts.get("credtrail_parquet_bytes", 0) / 1e6,
    facts.get("duckdb_parquet_bytes", 0) / 1e6,
    "{:,.1f}",
)
row("ingest, DuckDB plain `COPY` (no sort/partitions): events/s", eps(ct_i), eps(dk_p), "{:,.0f}", "≥ 1.5×", True)
row("ingest, DuckDB plain: peak RSS, MiB", rss("credtrail_ingest"), rss("duckdb_ingest_plain"), "{:,.0f}")
# Memory must not grow with the input: the same commands on less of it.
small = facts.get("events_2_days")
if small and "credtrail_ingest_2_days" in runs:
    rows.append((f"ingest peak RSS, MiB: {small:,.0f} events (2 days) → {events:,.0f} (all)",
                 f"{rss('credtrail_ingest_2_days'):,.0f} → {rss('credtrail_ingest'):,.0f}", "—", "", "not to grow with the input"))
if "credtrail_baseline_2_days" in runs:
    rows.append(("baseline peak RSS, MiB: 2 days of history → all", f"{rss('credtrail_baseline_2_days'):,.0f} → "
                 f"{rss('credtrail_baseline'):,.0f}", "—", "", "not to grow with the input"))
ct_events = facts.get("ct_events")
ct_eps = lambda s: None if s is None or not ct_events else ct_events / s
row("CloudTrail ingest: events/s", ct_eps(secs("credtrail_ct_ingest")), ct_eps(secs("duckdb_ct_ingest")), "{:,.0f}",
    "≥ 1.5×", True)
row("CloudTrail ingest: peak RSS, MiB", rss("credtrail_ct_ingest"), rss("duckdb_ct_ingest"), "{:,.0f}")
row("baseline: seconds", secs("credtrail_baseline"), secs("duckdb_baseline"), "{:.2f}")
row("detect (last day): seconds", secs("credtrail_detect"), secs("duckdb_detect"), "{:.2f}")
row(
    "baseline + detect: seconds",
    total("credtrail_baseline", "credtrail_detect"),
    total("duckdb_baseline", "duckdb_detect"),
    "{:.2f}",
    "≤ 0.8×",
)
row(
    "baseline + detect: peak RSS, MiB",
    rss("credtrail_baseline", "credtrail_detect"),
    rss("duckdb_baseline", "duckdb_detect"),
    "{:,.0f}",
)
# Streaming has no DuckDB counterpart: absolute targets, marked here.
def absolute(label, key, target, ok):
    v = facts.get(key)
    shown = "not measured" if v is None else f"{v:,.0f}" + ("" if ok is None else (" ✅" if ok(v) else " ❌"))
    rows.append((label, shown, "—", "", target))


absolute("streaming: events/s on one core", "watch_events_per_sec", "≥ 250,000", lambda v: v >= 250_000)
if "watch_replayed_lines" in facts:
    absolute(f"streaming: events/s on one core, a {facts['watch_replayed_lines']:,.0f}-line day replayed "
             "(every credential at a multiple of its volume)", "watch_replayed_events_per_sec", "", None)
absolute("streaming: alert latency p50, ms", "watch_p50_ms", "", None)
absolute("streaming: alert latency p99, ms", "watch_p99_ms", "< 1,000", lambda v: v < 1000)
if "watch_prefill" in facts:
    busy = f"with {facts['watch_prefill']:,.0f} events already in the live day"
    absolute(f"streaming: alert latency p50, ms, {busy}", "watch_prefilled_p50_ms", "", None)
    absolute(f"streaming: alert latency p99, ms, {busy}", "watch_prefilled_p99_ms", "< 1,000", lambda v: v < 1000)
row("floor: `cat` of the input, seconds (MB/s)", secs("cat"), None, "{:.2f}")
rows[-1] = (rows[-1][0], f"{secs('cat'):.2f} ({mb / secs('cat'):,.0f} MB/s)", "—", "", "")
row("floor: full scan of the lake, seconds", secs("credtrail_scan"), secs("duckdb_scan"), "{:.2f}")
row("floor: full scan: peak RSS, MiB", rss("credtrail_scan"), rss("duckdb_scan"), "{:,.0f}")

head = ("figure", "credtrail", "DuckDB", "credtrail ÷ DuckDB", "target")
table = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "--:", "--:", "--:", "---"]) + "|"]
table += ["| " + " | ".join(r) + " |" for r in rows]
limit_ok = all((rss(n) or 0) < 1024 for n in ("credtrail_ingest", "credtrail_baseline", "credtrail_detect"))
summary = (
    f"{events:,.0f} events, {mb:,.0f} MB of JSON lines. Peak RSS of credtrail ingest, baseline and detect "
    f"under 1 GiB: {'✅ yes' if limit_ok else '❌ no'}."
)
text = "\n".join(table)
print(text)
print(summary)

# The hand-written sections after the machine's description are kept.
kept = ""
try:
    old = open(out).read()
    after_machine = old.split("\n## Machine\n", 1)[1]
    if "\n## " in after_machine:
        kept = "\n## " + after_machine.split("\n## ", 1)[1]
except (OSError, IndexError):
    pass

with open(out, "w") as f:
    f.write(
        f"""# credtrail vs DuckDB

Written by `bash benches/compare.sh` (see the README's *Benchmarks*); do not
edit by hand. Every figure comes from one run of the script, both tools on
the same files, the same machine and the same warm page cache. Seconds are
wall-clock; peak RSS is the largest resident set of the process (DuckDB
runs inside Python, which adds ~40 MiB). DuckDB's side is the SQL in
`benches/duckdb/`: ingest writes the same layout (typed columns, a directory
per day, sorted by credential and time, zstd); detection is the baseline and
the detectors' queries, with the scoring credtrail does in Rust written as
SQL, over credtrail's lake.

{dataset}

{text}

{summary}

## Machine

{machine}
{kept}"""
    )
