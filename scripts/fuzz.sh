#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60), one after another,
# and prints one JSON line per target: executions and crashes. A crash is
# copied to fuzz/regressions/TARGET/ so that `make test` replays it once
# it is fixed (commit it with the fix).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (about 2 minutes)" >&2
    cargo install cargo-fuzz --locked
fi
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    [ -d "seeds/$t" ] && cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    # The toolchain is stable; cargo-fuzz needs -Z flags (see PLATFORM.md).
    if RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" >"$log" 2>&1; then
        crashes=0
    else
        crashes=$(ls "artifacts/$t" | wc -l)
        mkdir -p "regressions/$t"
        cp "artifacts/$t"/* "regressions/$t/" 2>/dev/null || true
        status=1
        tail -30 "$log" >&2
    fi
    execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
    echo "{\"target\":\"$t\",\"seconds\":$secs,\"executions\":${execs:-0},\"crashes\":$crashes}"
    rm -f "$log"
done
exit $status
