#!/usr/bin/env bash
# The long fuzzing run (not CI): each target named (default: all) for RUNS executions
# (default 10,000,000) or MAX_SECONDS (default 3600), whichever comes first, under nice,
# from its committed corpus, with its dictionary if it has one. New inputs go to
# campaign/<target>/ (not committed; minimise them into corpus/<target>/ with
# `cargo fuzz cmin`, see README), libFuzzer's log and final stats to campaign/<target>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

runs="${RUNS:-10000000}"
seconds="${MAX_SECONDS:-3600}"
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

for target in "${targets[@]}"; do
    mkdir -p "campaign/$target" "corpus/$target"
    dict=()
    if [[ -f "dict/$target.dict" ]]; then
        dict=(-dict="dict/$target.dict")
    fi
    start=$(date +%s)
    status=0
    nice -n 10 cargo fuzz run -O "$target" "campaign/$target" "corpus/$target" -- \
        -runs="$runs" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        "${dict[@]}" >"campaign/$target.log" 2>&1 || status=$?
    end=$(date +%s)
    executed=$(grep -E '^stat::number_of_executed_units' "campaign/$target.log" | awk '{print $2}')
    echo "$target: ${executed:-?} executions in $((end - start)) s (exit $status)"
    if [[ $status -ne 0 ]]; then
        tail -n 40 "campaign/$target.log" >&2
    fi
done
