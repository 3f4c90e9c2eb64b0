#!/usr/bin/env bash
# Fuzz smoke run for CI: every target of this crate for FUZZ_SECONDS (default 10) seconds,
# starting from its committed corpus, with its dictionary (dict/<target>.dict) if it has one.
# New inputs go to a temporary directory so the committed corpus stays as it is. A `--dev`
# build (no optimisation, AddressSanitizer kept): on 2 cores it compiles in about 4 minutes
# against about 10 for the optimised one, which matters more to a 10-second smoke than
# executions per second. Works on stable rustc through RUSTC_BOOTSTRAP=1 (see README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${FUZZ_SECONDS:-10}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    # Pinned: the version checked to build on rustc 1.95.
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target"
    echo "fuzz $target for ${seconds}s"
    status=0
    dict=()
    if [[ -f "dict/$target.dict" ]]; then
        dict=(-dict="dict/$target.dict")
    fi
    cargo fuzz run --dev "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${dict[@]}" >"$scratch/$target.log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units)' "$scratch/$target.log" || true
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz target $target failed (exit $status)" >&2
        exit 1
    fi
done
