#!/usr/bin/env python3
"""Streaming benchmark for `credtrail watch`: sustained throughput and alert latency.

Two measurements, each against a real `credtrail watch` process following a
real file:

  throughput  a file is appended at full speed with N gateway lines of a
              sample day generated at the rate its history was learned at,
              so the day is a normal one; events/s is N over the time until
              the watcher's metrics endpoint counts all N events both
              committed to the lake and judged by a detection pass (commits
              run ahead of passes when passes are slow). Pinned to one core
              with `taskset -c 0` when available.
              With --replayed, also the same run on the latency runs' day
              repeated (fresh request ids) until N lines: every credential
              at a multiple of its learned volume, a fleet-wide billing spike
              that opens most detectors' gates, so the worst case of a pass.

  latency     background traffic at a steady rate, and every --attack-every
              seconds one use of an expired credential (an out-of-scope alert
              that a single line completes). Latency is the time from that
              line's write (after flush) to its alert on the watcher's stdout.

Usage: benches/stream.py --bin target/release/credtrail [--events 1000000]
Prints a table and, with --json FILE, writes the figures as JSON.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metric(port, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def peak_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def prepare(bin_, work, credentials, seed, lines, name="sample"):
    """A sample with two days of history ingested; returns (lake, inventory, live-day lines)."""
    sample = os.path.join(work, name)
    # A live day long enough for the latency runs, so no line is replayed: a
    # replayed day doubles every credential's volume and raises alerts of its
    # own. (A sample day has about 300 lines per credential at rate x1.)
    scale = max(1.0, round(1.2 * lines / (300 * credentials), 1))
    run([bin_, "sample", "--days", "3", "--credentials", str(credentials), "--rate-scale", str(scale), "--seed", str(seed),
         "--out", sample])
    logs = sorted(os.path.join(sample, "logs", f) for f in os.listdir(os.path.join(sample, "logs")))
    lake = os.path.join(work, f"{name}-lake")
    subprocess.run([bin_, "ingest", *logs[:-1], "--lake", lake, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    run([bin_, "baseline", "--lake", lake])
    with open(logs[-1]) as f:
        day = [json.loads(l) for l in f if l.strip()]
    if len(day) < lines:
        print(f"warning: the live day has {len(day)} lines, fewer than the {lines} asked for; lines are replayed",
              file=sys.stderr)
    return lake, os.path.join(sample, "inventory.csv"), day


def start_watch(bin_, work, lake, log, port, extra, pin, keep_stdout=False):
    cmd = [bin_, "watch", "-f", log, "--lake", lake, "--from-beginning", "--metrics", f"127.0.0.1:{port}",
           "--flush-interval", "1s", "--progress-every", "5s", *extra]
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    err = open(os.path.join(work, "watch.err"), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL, stderr=err, text=True,
                         bufsize=1)
    deadline = time.time() + 120
    while metric(port, "credtrail_watch_files") is None:
        if time.time() > deadline or p.poll() is not None:
            sys.exit(f"watch did not start; see {work}/watch.err")
        time.sleep(0.1)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)


def throughput(bin_, work, lake, day, n, pin, tag="throughput"):
    run_lake = f"{lake}-{tag}"
    shutil.copytree(lake, run_lake)
    lake = run_lake
    log = os.path.join(work, f"{tag}.log")
    open(log, "w").close()
    port = free_port()
    p = start_watch(bin_, work, lake, log, port, ["--flush-events", "200000"], pin)
    lines = []
    for i in range(n):
        e = dict(day[i % len(day)])
        e["request_id"] = f"tp_{i:09d}"
        lines.append(json.dumps(e, separators=(",", ":")))
    data = ("\n".join(lines) + "\n").encode()
    mb = len(data) / 1e6
    started = time.perf_counter()
    with open(log, "ab") as f:
        for k in range(0, len(data), 1 << 20):
            f.write(data[k : k + (1 << 20)])
            f.flush()
    written = time.perf_counter() - started
    # Done when every event is both in the lake and judged by a detection
    # pass: a watcher that commits fast and judges late has not kept up.
    while (metric(port, "credtrail_watch_flushed_events_total") or 0) < n or (
        metric(port, "credtrail_watch_judged_events_total") or 0
    ) < n:
        if p.poll() is not None:
            sys.exit(f"watch exited; see {work}/watch.err")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    # taskset execs the watcher, so the pid is the watcher's either way.
    rss = peak_rss_kb(p.pid)
    passes = metric(port, "credtrail_watch_detect_pass_seconds_count"), metric(port, "credtrail_watch_detect_pass_seconds_sum")
    stop(p)
    return {"events": n, "live_day_lines": len(day), "mb": round(mb, 1), "write_seconds": round(written, 2), "seconds": round(seconds, 2),
            "events_per_sec": round(n / seconds), "peak_rss_mb": round(rss / 1024) if rss else None,
            "passes": passes[0], "pass_seconds": round(passes[1], 2) if passes[1] is not None else None}


def latency(bin_, work, lake, inventory, day, rate, seconds, attack_every, prefill=0):
    inv = os.path.join(work, "inventory-bench.csv")
    attacks = int(seconds / attack_every)
    with open(inventory) as f:
        header = f.readline()
        body = f.read()
    with open(inv, "w") as f:
        f.write(header + body)
        # Each key expired on a day of its own: one expiry shared by many keys
        # is a fleet finding (`detect::fleet`), emitted once for all of them.
        for i in range(attacks):
            expired = datetime.date(2025, 2, 1) + datetime.timedelta(days=i)
            f.write(f"key_EXPIRED{i:05d},bench@example.com,app:bench,api_key,2025-01-01,{expired},inference,gpt-*,,,\n")
    lake_copy = f"{lake}-latency-{prefill}"
    shutil.copytree(lake, lake_copy)
    lake = lake_copy
    log = os.path.join(work, f"latency-{prefill}.log")
    open(log, "w").close()
    port = free_port()
    p = start_watch(bin_, work, lake, log, port, ["--inventory", inv], pin=False, keep_stdout=True)
    arrivals = {}

    def read():
        for line in p.stdout:
            t = time.perf_counter()
            a = json.loads(line)
            for rid in a.get("evidence", []):
                if rid.startswith("attack_"):
                    arrivals.setdefault(rid, t)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    written = {}
    f = open(log, "a")
    if prefill:
        # The live day already holds `prefill` events (as hours into a busy
        # day would): every pass judges them again for the credentials that move.
        for k in range(prefill):
            e = dict(day[k % len(day)])
            e["request_id"] = f"pf_{k:09d}"
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
        f.flush()
        while (metric(port, "credtrail_watch_flushed_events_total") or 0) < prefill or (
            metric(port, "credtrail_watch_judged_events_total") or 0
        ) < prefill:
            time.sleep(0.1)
        time.sleep(3)
    started = time.perf_counter()
    sent = prefill
    next_attack = started + attack_every
    i = 0
    while time.perf_counter() - started < seconds:
        due = prefill + int((time.perf_counter() - started) * rate)
        while sent < due:
            e = dict(day[sent % len(day)])
            e["request_id"] = f"bg_{sent:09d}"
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
            sent += 1
        now = time.perf_counter()
        if now >= next_attack and i < attacks:
            e = dict(day[sent % len(day)])
            e.update(credential_id=f"key_EXPIRED{i:05d}", request_id=f"attack_{i:05d}", principal="app:bench",
                     action="inference", model="gpt-4o", tool=None, resource=None, status=200, error_code=None)
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
            f.flush()
            written[f"attack_{i:05d}"] = time.perf_counter()
            i += 1
            next_attack += attack_every
        f.flush()
        time.sleep(0.005)
    f.close()
    time.sleep(3)
    passes = metric(port, "credtrail_watch_detect_pass_seconds_count"), metric(port, "credtrail_watch_detect_pass_seconds_sum")
    stop(p)
    reader.join(timeout=5)
    lat = sorted(arrivals[k] - written[k] for k in written if k in arrivals)
    missed = len(written) - len(lat)
    if not lat:
        return {"attacks": len(written), "alerted": 0}
    q = lambda p_: lat[min(len(lat) - 1, int(p_ * len(lat)))]
    return {"attacks": len(written), "alerted": len(lat), "missed": missed, "background_events_per_sec": rate,
            "live_events_at_start": prefill,
            "p50_ms": round(q(0.50) * 1000), "p99_ms": round(q(0.99) * 1000), "max_ms": round(lat[-1] * 1000),
            "mean_ms": round(statistics.mean(lat) * 1000),
            "passes": passes[0], "mean_pass_ms": round(1000 * passes[1] / passes[0]) if passes[0] else None,
            # (seconds into the run, latency ms) per attack: shows whether latency grows with the live day.
            "series": [(round(written[k] - started, 2), round((arrivals[k] - written[k]) * 1000))
                       for k in sorted(written) if k in arrivals]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/credtrail")
    ap.add_argument("--events", type=int, default=1_000_000, help="lines for the throughput run")
    ap.add_argument("--credentials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rate", type=int, default=2000, help="background events/s during the latency run")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--attack-every", type=float, default=0.25)
    ap.add_argument("--prefill", type=int, default=0,
                    help="also measure latency with this many events already in the live day")
    ap.add_argument("--replayed", action="store_true",
                    help="also measure throughput on the latency runs' day replayed up to --events lines")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the throughput run to one core")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    bin_ = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="credtrail-stream-")
    try:
        lake, inventory, day = prepare(bin_, work, a.credentials, a.seed, a.prefill + int(a.rate * a.seconds) + 1000)
        # The throughput run gets a day of its own when the latency runs' day
        # is shorter: a replayed day is every credential at a multiple of
        # its volume, a billing spike across the fleet, not a normal day.
        if a.events > len(day):
            tp_lake, _, tp_day = prepare(bin_, work, a.credentials, a.seed, a.events, name="throughput-sample")
        else:
            tp_lake, tp_day = lake, day
        tp = throughput(bin_, work, tp_lake, tp_day, a.events, not a.no_pin)
        replayed = throughput(bin_, work, lake, day, a.events, not a.no_pin, "replayed") \
            if a.replayed and a.events > len(day) else None
        lat = latency(bin_, work, lake, inventory, day, a.rate, a.seconds, a.attack_every)
        full = latency(bin_, work, lake, inventory, day, a.rate, a.seconds, a.attack_every, a.prefill) if a.prefill else None
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"throughput: {tp['events']} events ({tp['mb']} MB) committed and judged in {tp['seconds']} s ="
          f" {tp['events_per_sec']} events/s on {'one core' if not a.no_pin else 'all cores'},"
          f" peak RSS {tp['peak_rss_mb']} MB; {tp['passes']} detection passes, {tp['pass_seconds']} s in all")
    if replayed:
        print(f"throughput, a {replayed['live_day_lines']}-line day replayed to {replayed['events']} lines:"
              f" {replayed['events_per_sec']} events/s, peak RSS {replayed['peak_rss_mb']} MB;"
              f" {replayed['passes']} detection passes, {replayed['pass_seconds']} s in all")
    print(f"latency: {lat.get('alerted')}/{lat['attacks']} attacks alerted at {a.rate} background events/s;"
          f" p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms")
    if full:
        print(f"latency with {a.prefill} events already in the live day: {full.get('alerted')}/{full['attacks']} attacks"
              f" alerted; p50 {full.get('p50_ms')} ms, p99 {full.get('p99_ms')} ms, max {full.get('max_ms')} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"throughput": tp, "throughput_replayed": replayed, "latency": lat, "latency_prefilled": full}, f, indent=2)


if __name__ == "__main__":
    main()
