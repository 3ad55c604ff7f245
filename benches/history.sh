#!/usr/bin/env bash
# Baseline cost against history (issue 20): seconds and peak RSS of
# `credtrail baseline` with 2, 7 and 28 days of history, three ways:
#   rescan   one scan of the whole window (`--rescan`, how baselines were learned before)
#   cold     from the per-day partials, none of them made yet (each day aggregated once, then merged)
#   nightly  the partials of the earlier days already made: one new day aggregated, then merged
# Prints a Markdown table (for benches/RESULTS.md).
#
#   bash benches/history.sh            # needs GNU time at /usr/bin/time
#
# Knobs (environment): CREDENTIALS, RATE_SCALE, SEED (the data set: 29 days of
# gateway logs), PROFILE (cargo profile, default release), BENCH_DIR (scratch
# space, default target/bench-history; the logs and lake are kept and reused),
# BEFORE (another credtrail binary, e.g. an older build, measured first as "before"),
# BIN (a credtrail binary to measure instead of building one).
set -euo pipefail

source "$(dirname "$0")/common.sh" bench-history
CREDENTIALS=${CREDENTIALS:-500}
RATE_SCALE=${RATE_SCALE:-1}

DATA=$WORK/data-c$CREDENTIALS-r$RATE_SCALE-s$SEED
LAKE=$WORK/lake-c$CREDENTIALS-r$RATE_SCALE-s$SEED
if [ ! -d "$LAKE/events" ]; then
    rm -rf "$DATA" "$LAKE"
    "$BIN" sample --days 29 --credentials "$CREDENTIALS" --rate-scale "$RATE_SCALE" --seed "$SEED" --out "$DATA" >&2
    "$BIN" ingest "$DATA/logs" --lake "$LAKE" --no-progress >&2
fi
LAST=$(ls "$LAKE/events" | sed -n 's/^date=//p' | sort | tail -1)
PREV=$(date -u -d "$LAST - 1 day" +%F)
EVENTS=$("$BIN" sql --lake "$LAKE" --format csv -c "SELECT count(*) AS n FROM events" | tail -1)

# run [BINARY] ARGS...: one `credtrail baseline`; prints "seconds peak-RSS-MiB".
run() {
    local bin=$BIN
    if [ -x "$1" ]; then bin=$1 && shift; fi
    "$TIME" -f '%e %M' -o "$WORK/time" "$bin" baseline --lake "$LAKE" "$@" > /dev/null
    awk '{ printf "%.2f %d\n", $1, $2 / 1024 }' "$WORK/time"
}

echo "$EVENTS events over $(ls "$LAKE/events" | wc -l) days; baseline until $LAST; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| days of history | before: s | before: peak RSS, MiB | rescan: s | rescan: peak RSS, MiB | cold partials: s | cold: peak RSS, MiB | nightly: s | nightly: peak RSS, MiB |"
echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
for days in 2 7 28; do
    bs=— bm=—
    if [ -n "${BEFORE:-}" ]; then
        rm -rf "$LAKE/models"
        read -r bs bm < <(run "$BEFORE" --until "$LAST" --days "$days")
    fi
    rm -rf "$LAKE/models"
    read -r rs rm < <(run --until "$LAST" --days "$days" --rescan)
    rm -rf "$LAKE/models"
    read -r cs cm < <(run --until "$LAST" --days "$days")
    # The night before made every partial of the window but the last day's.
    rm -rf "$LAKE/models"
    run --until "$PREV" --days "$days" > /dev/null
    read -r ns nm < <(run --until "$LAST" --days "$days")
    echo "| $days | $bs | $bm | $rs | $rm | $cs | $cm | $ns | $nm |"
done

# The nightly `run`'s detection work against DuckDB's (issue 20's target:
# credtrail ≤ 0.5× DuckDB's time with 28 days of history). The night before
# made every partial up to the day before PREV; tonight's baseline adds
# PREV's and merges the window, then detects LAST. DuckDB runs the same
# baseline and detection SQL as compare.sh (benches/duckdb/) over the window.
if python3 -c 'import duckdb' 2> /dev/null; then
    FROM=$(date -u -d "$PREV - 27 days" +%F)
    DUCK_MODELS=$WORK/duckdb-models
    rm -rf "$LAKE/models" "$DUCK_MODELS" && mkdir -p "$DUCK_MODELS"
    "$BIN" baseline --lake "$LAKE" --until "$(date -u -d "$PREV - 1 day" +%F)" --days 28 > /dev/null
    timed() { "$TIME" -f '%e %M' -o "$WORK/time" "$@" > /dev/null && awk '{ printf "%.2f %d\n", $1, $2 / 1024 }' "$WORK/time"; }
    read -r cbs cbm < <(timed "$BIN" baseline --lake "$LAKE" --until "$PREV" --days 28)
    read -r cds cdm < <(timed "$BIN" detect --lake "$LAKE" --date "$LAST" --inventory "$DATA/inventory.csv")
    read -r dbs dbm < <(timed python3 benches/duckdb_run.py benches/duckdb/baseline.sql \
        lake="$LAKE" from="$FROM" until="$PREV" models="$DUCK_MODELS")
    read -r dds ddm < <(timed python3 benches/duckdb_run.py benches/duckdb/detect.sql \
        lake="$LAKE" day="$LAST" from="$LAST" to="$LAST" baseline="$PREV" models="$DUCK_MODELS" \
        inventory="$DATA/inventory.csv" alerts="$WORK/duckdb-alerts.parquet")
    echo
    echo "Nightly detection with 28 days of history (baseline until $PREV, detect $LAST), DuckDB $(python3 -c 'import duckdb; print(duckdb.__version__)'):"
    echo
    echo "| step | credtrail: s | credtrail: peak RSS, MiB | DuckDB: s | DuckDB: peak RSS, MiB |"
    echo "|---|--:|--:|--:|--:|"
    echo "| baseline (one new day + merge; DuckDB: the 28-day window) | $cbs | $cbm | $dbs | $dbm |"
    echo "| detect $LAST | $cds | $cdm | $dds | $ddm |"
    echo "| **total** | $(awk "BEGIN{print $cbs + $cds}") | | $(awk "BEGIN{print $dbs + $dds}") | |"
    echo
    echo "credtrail ÷ DuckDB: $(awk "BEGIN{printf \"%.2f\", ($cbs + $cds) / ($dbs + $dds)}")× (target ≤ 0.5×)"
else
    echo "(DuckDB's Python package is missing: \`python3 -m pip install duckdb\` for the nightly comparison)"
fi
