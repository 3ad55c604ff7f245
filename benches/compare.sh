#!/usr/bin/env bash
# credtrail against DuckDB on the same files, in one run, on this machine:
#   1. ingest: JSON lines -> zstd Parquet (events/s, MB/s, peak RSS, output size)
#   1b. ingest of CloudTrail delivery files, credtrail vs DuckDB read_json + unnest(Records)
#   2. detection: `credtrail baseline` + `detect` of the last day vs the same
#      work as DuckDB SQL (benches/duckdb/*.sql) over the same Parquet lake
#   3. streaming: `credtrail watch` (benches/stream.py): events/s on one core, alert latency p50/p99
#   4. floors: `cat > /dev/null` of the input, and a full scan of the lake
# Prints one table and writes it, with the machine's description, to
# benches/RESULTS.md.
#
#   bash benches/compare.sh            # from a fresh clone; needs cargo, python3 and pip
#
# Knobs (environment): CREDENTIALS, RATE_SCALE, DAYS, SEED (the data set:
# the defaults give about 5 million events, 2.2 GB, over 7 days), REPEAT (runs of each
# measurement, the fastest is kept; default 1), PROFILE (cargo profile,
# default release), BENCH_DIR (scratch space, default target/bench; the
# generated logs are kept there and reused), RESULTS (where the table goes),
# BIN (a credtrail binary to measure instead of building one).
set -euo pipefail

source "$(dirname "$0")/common.sh" bench
CREDENTIALS=${CREDENTIALS:-1000}
RATE_SCALE=${RATE_SCALE:-3.6}
DAYS=${DAYS:-7}
REPEAT=${REPEAT:-1}
RESULTS=${RESULTS:-$ROOT/benches/RESULTS.md}
OUT=$WORK/out
mkdir -p "$OUT"
TSV=$WORK/measurements.tsv
: > "$TSV"

if ! python3 -c 'import duckdb' 2>/dev/null; then
    say "installing DuckDB from PyPI"
    python3 -m pip install --quiet --user duckdb || python3 -m pip install --quiet --user --break-system-packages duckdb
fi
DUCKDB_VERSION=$(python3 -c 'import duckdb; print(duckdb.__version__)')

DATA=$WORK/data-d$DAYS-c$CREDENTIALS-r$RATE_SCALE-s$SEED
if [ ! -f "$DATA/events" ]; then
    say "generating the data set ($DAYS days, $CREDENTIALS credentials, rate x$RATE_SCALE)"
    rm -rf "$DATA"
    "$BIN" sample --days "$DAYS" --credentials "$CREDENTIALS" --rate-scale "$RATE_SCALE" --seed "$SEED" --out "$DATA" \
        | tee "$OUT/sample.txt"
    sed -n 's/^wrote \([0-9]*\) events.*/\1/p' "$OUT/sample.txt" > "$DATA/events"
fi
EVENTS=$(cat "$DATA/events")
LOGS=$DATA/logs
BYTES=$(cat "$LOGS"/*.jsonl | wc -c)
LAST=$(ls "$LOGS" | sed -n 's/^gateway-\([0-9-]*\)\.jsonl$/\1/p' | sort | tail -1)
PREV=$(date -u -d "$LAST - 1 day" +%F)

# measure NAME CMD...: runs CMD REPEAT times (after `before NAME`, if
# defined, resets its output), keeps the fastest; records seconds and peak RSS.
measure() {
    local name=$1 best="" rss=""
    shift
    for _ in $(seq "$REPEAT"); do
        if declare -F before > /dev/null; then before "$name"; fi
        "$TIME" -f '%e %M' -o "$OUT/$name.time" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || {
            echo "$name failed:" >&2
            tail -20 "$OUT/$name.err" >&2
            exit 1
        }
        read -r s k < <(tail -1 "$OUT/$name.time")
        if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s rss=$k; fi
    done
    printf '%s\t%s\t%s\n' "$name" "$best" "$rss" >> "$TSV"
    printf '  %-24s %8.2f s  %8.0f MiB\n' "$name" "$best" "$((rss / 1024))" >&2
}
extra() { printf '%s\t%s\n' "$1" "$2" >> "$TSV"; }
extra events "$EVENTS"
extra bytes "$BYTES"

say "4. floors: reading the input"
cat "$LOGS"/*.jsonl > /dev/null # warm the page cache: every run below reads from memory
measure cat sh -c "cat '$LOGS'/*.jsonl > /dev/null"

say "1. ingest: JSON lines -> zstd Parquet"
LAKE=$WORK/lake
DUCK_LAKE=$WORK/duckdb-lake
before() {
    case $1 in
    credtrail_ingest) rm -rf "$LAKE" ;;
    duckdb_ingest | duckdb_ingest_plain) rm -rf "$DUCK_LAKE" && mkdir -p "$DUCK_LAKE" ;;
    esac
}
measure credtrail_ingest "$BIN" ingest "$LOGS" --lake "$LAKE"
extra credtrail_parquet_bytes "$(du -sb "$LAKE/events" | cut -f1)"
measure duckdb_ingest python3 benches/duckdb_run.py benches/duckdb/ingest.sql input="$LOGS" out="$DUCK_LAKE/events"
extra duckdb_parquet_bytes "$(du -sb "$DUCK_LAKE/events" | cut -f1)"
measure duckdb_ingest_plain python3 benches/duckdb_run.py benches/duckdb/ingest_plain.sql input="$LOGS" out="$DUCK_LAKE"
extra duckdb_plain_parquet_bytes "$(du -sb "$DUCK_LAKE" | cut -f1)"
rm -rf "$DUCK_LAKE"

say "1c. memory against input size: credtrail ingest of the first two days alone"
SMALL_LAKE=$WORK/lake-2-days
SMALL_LOGS=$(ls "$LOGS"/*.jsonl | head -2)
extra events_2_days "$(cat $SMALL_LOGS | wc -l)"
before() { rm -rf "$SMALL_LAKE"; }
measure credtrail_ingest_2_days "$BIN" ingest $SMALL_LOGS --lake "$SMALL_LAKE"
rm -rf "$SMALL_LAKE"

say "1b. ingest: CloudTrail delivery files (gzip Records) -> zstd Parquet"
CT_CREDENTIALS=${CT_CREDENTIALS:-300}
CT=$WORK/cloudtrail-d$DAYS-c$CT_CREDENTIALS-s$SEED
if [ ! -d "$CT/AWSLogs" ]; then
    rm -rf "$CT"
    "$BIN" sample --format cloudtrail --days "$DAYS" --credentials "$CT_CREDENTIALS" --seed "$SEED" --out "$CT" >&2
fi
CT_LAKE=$WORK/cloudtrail-lake
CT_DUCK=$WORK/cloudtrail-duckdb.parquet
before() {
    case $1 in
    credtrail_ct_ingest) rm -rf "$CT_LAKE" ;;
    duckdb_ct_ingest) rm -f "$CT_DUCK" ;;
    esac
}
measure credtrail_ct_ingest "$BIN" ingest "$CT/AWSLogs" --lake "$CT_LAKE" --json --no-progress
extra ct_events "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ingested"])' "$OUT/credtrail_ct_ingest.out")"
measure duckdb_ct_ingest python3 benches/duckdb_run.py benches/duckdb/cloudtrail_ingest.sql input="$CT/AWSLogs" out="$CT_DUCK"
rm -rf "$CT_LAKE" "$CT_DUCK"

say "2. detection: baseline until $PREV, then detect $LAST (history: up to 28 days)"
FROM=$(date -u -d "$PREV - 27 days" +%F)
DUCK_MODELS=$WORK/duckdb-models
before() {
    case $1 in
    # Each run learns from nothing: with REPEAT, a later run would reuse the first's per-day partials.
    credtrail_baseline | credtrail_baseline_2_days) rm -rf "$LAKE/models" ;;
    duckdb_baseline) rm -rf "$DUCK_MODELS" && mkdir -p "$DUCK_MODELS" ;;
    esac
}
# Memory against input size: a baseline over two days of history first
# (the full one below replaces it).
measure credtrail_baseline_2_days "$BIN" baseline --lake "$LAKE" --until "$PREV" --days 2
measure credtrail_baseline "$BIN" baseline --lake "$LAKE" --until "$PREV" --days 28
measure credtrail_detect "$BIN" detect --lake "$LAKE" --date "$LAST" --inventory "$DATA/inventory.csv"
if grep -q "learned baselines" "$OUT/credtrail_detect.out"; then
    echo "credtrail detect learned a baseline of its own: the baseline step did not cover it" >&2
    exit 1
fi
measure duckdb_baseline python3 benches/duckdb_run.py benches/duckdb/baseline.sql \
    lake="$LAKE" from="$FROM" until="$PREV" models="$DUCK_MODELS"
measure duckdb_detect python3 benches/duckdb_run.py benches/duckdb/detect.sql \
    lake="$LAKE" day="$LAST" from="$LAST" to="$LAST" baseline="$PREV" models="$DUCK_MODELS" inventory="$DATA/inventory.csv" alerts="$WORK/duckdb-alerts.parquet"
extra credtrail_alerts "$(grep -o '^detect [^:]*: [0-9]* alert' "$OUT/credtrail_detect.out" | grep -o '[0-9]* alert' | cut -d' ' -f1)"

say "3. streaming"
# ---- streaming: `credtrail watch` ----
# Sustained events/s on a file appended at full speed, and alert latency
# p50/p99 from line written to alert emitted.
if "$BIN" watch --help > /dev/null 2>&1; then
    # benches/stream.py runs the real watcher: throughput on a file appended at
    # full speed (pinned to one core), then alert latency under steady traffic.
    python3 benches/stream.py --bin "$BIN" --events "${STREAM_EVENTS:-1000000}" --prefill "${STREAM_PREFILL:-300000}" \
        --replayed --json "$OUT/stream.json" \
        | tee "$OUT/stream.txt" >&2
    # A run stream.py skipped (no replay when the day is long enough) is "".
    field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])).get(sys.argv[2]) or {}; print(d.get(sys.argv[3], ""))' "$OUT/stream.json" "$1" "$2"; }
    extra watch_events_per_sec "$(field throughput events_per_sec)"
    extra watch_peak_rss_mb "$(field throughput peak_rss_mb)"
    extra watch_replayed_lines "$(field throughput_replayed live_day_lines)"
    extra watch_replayed_events_per_sec "$(field throughput_replayed events_per_sec)"
    extra watch_p50_ms "$(field latency p50_ms)"
    extra watch_p99_ms "$(field latency p99_ms)"
    extra watch_prefill "$(field latency_prefilled live_events_at_start)"
    extra watch_prefilled_p50_ms "$(field latency_prefilled p50_ms)"
    extra watch_prefilled_p99_ms "$(field latency_prefilled p99_ms)"
else
    echo "  skipped: this credtrail has no \`watch\` command" >&2
fi
# ---- end of streaming ----

say "4. floors: a full scan of the lake (every column of every row)"
SCAN=$(grep -v '^--' benches/duckdb/scan.sql | sed "s|read_parquet('{lake}/events/\*/\*.parquet', hive_partitioning = true)|events|" | tr '\n' ' ')
measure credtrail_scan "$BIN" sql --lake "$LAKE" -c "$SCAN"
measure duckdb_scan python3 benches/duckdb_run.py benches/duckdb/scan.sql lake="$LAKE"

say "results"
MACHINE=$(
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores available to this run"
    echo "- memory: $(free -h | awk '/^Mem:/{print $2}') total; kernel $(uname -r)"
    echo "- $(rustc --version); credtrail $(git rev-parse --short HEAD 2>/dev/null || echo '?') built with profile \`$PROFILE\`"
    echo "- DuckDB $DUCKDB_VERSION (Python package), $(python3 --version)"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
)
python3 benches/report.py "$TSV" "$RESULTS" \
    "data set: \`credtrail sample --days $DAYS --credentials $CREDENTIALS --rate-scale $RATE_SCALE --seed $SEED\`; last day $LAST, history from $FROM; best of $REPEAT run(s)" \
    "$MACHINE"
