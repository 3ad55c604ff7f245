# Sourced by the bench scripts, not run: what they all set up first.
#   source "$(dirname "$0")/common.sh" SCRATCH   # SCRATCH: the default work directory's name under target/
# Leaves the working directory at the repository root and sets ROOT,
# PROFILE (cargo profile, default release), SEED (default 1), TARGET,
# WORK (BENCH_DIR, or target/SCRATCH; made), TIME (GNU time, for peak RSS)
# and BIN (the credtrail binary measured: $BIN if given, else built with
# PROFILE); defines `say`, which prints a heading to stderr.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
SEED=${SEED:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${BENCH_DIR:-$TARGET/$1}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time at /usr/bin/time (apt-get install time) for peak RSS" >&2; exit 1; }

say() { printf '\n== %s\n' "$*" >&2; }

if [ -z "${BIN:-}" ]; then
    say "building credtrail (profile $PROFILE)"
    cargo build --locked --profile "$PROFILE" --bin credtrail >&2
    case $PROFILE in dev) BIN=$TARGET/debug/credtrail ;; *) BIN=$TARGET/$PROFILE/credtrail ;; esac
fi
