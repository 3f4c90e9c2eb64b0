#!/usr/bin/env bash
# Instruction counts of the pure per-message path, per stage, under callgrind (README,
# "Performance"). Instructions do not move with the load of the machine, so a change of a
# few percent shows here where a load test's CPU figures move by ±20 %.
#
# Usage, from anywhere in the repository:
#   bash bench/instructions.sh            # measure; compare with bench/instructions.baseline
#   bash bench/instructions.sh --save     # measure and write the baseline
#   bash bench/instructions.sh --sizes    # verify_accept and smtp against the body size
# Env: INSTR_N (iterations counted per stage, 20), INSTR_STAGES (space-separated subset),
#      INSTR_SIZES (body sizes in octets for --sizes), INSTR_TOLERANCE (ratio above which
#      --compare exits 1; 1.03).
#
# Each stage runs examples/instructions.rs under `valgrind --tool=callgrind` with collection
# on only inside its `measured` function (`--toggle-collect`): set-up, warm-up and the DNS
# server's first answers are not counted. The figure is the instructions of that function
# divided by the iterations. Needs Debian's `valgrind` (installed if missing, as root).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BASELINE=bench/instructions.baseline
N=${INSTR_N:-20}
STAGES=${INSTR_STAGES:-smtp headers dkim verify_accept verify_reject policy event_ecs event_cef}
SIZES=${INSTR_SIZES:-2048 8192 32768 131072 524288 2000000}
TOLERANCE=${INSTR_TOLERANCE:-1.03}
MODE=compare
case "${1:-}" in
    --save) MODE=save ;;
    --sizes) MODE=sizes ;;
    "" | --compare) MODE=compare ;;
    *) echo "usage: $0 [--save|--compare|--sizes]" >&2; exit 2 ;;
esac

if ! command -v valgrind >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "valgrind missing (apt-get install valgrind)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind >&2
fi

cargo build --release --locked --example instructions >&2
BIN=${CARGO_TARGET_DIR:-target}/release/examples/instructions
T=$(mktemp -d /tmp/gk-instr.XXXXXX)
trap 'rm -rf "$T"' EXIT

# Instructions per iteration of each stage, one process for all: `count "STAGES" N BODY`
# prints `stage instructions` lines. Collection is on only inside the `measured_<stage>`
# functions (never nested); a stage's figure is its function's inclusive count, the largest
# of the lines callgrind_annotate splits it into by source file (the entry part, whose
# inclusive count holds every call made). The sum over stages must match the total.
count() {
    local tag="$3" stages="$1"
    local out="$T/cg.$tag"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='instructions::measured_*' \
        "$BIN" "${stages// /,}" "$2" "$3" >"$T/stdout.$tag" 2>"$T/stderr.$tag" \
        || { cat "$T/stderr.$tag" >&2; echo "stages $stages failed" >&2; exit 1; }
    callgrind_annotate --inclusive=yes --threshold=100 "$out" >"$T/annotate.$tag" 2>/dev/null
    local total sum=0 s i
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    for s in $stages; do
        i=$(awk -v f="instructions::measured_$s" '
            { gsub(",", "", $1) }
            $1 ~ /^[0-9]+$/ && index($0, ":" f) && !index($0, ":" f "_") { if ($1 + 0 > m) m = $1 + 0 }
            END { print m + 0 }' "$T/annotate.$tag")
        [ "$i" -gt 0 ] || { echo "stage $s: nothing counted" >&2; exit 1; }
        sum=$((sum + i))
        echo "$s $(( i / $2 ))"
    done
    # Each stage's count is inside the total; more than 1 % unaccounted means the
    # attribution above missed something.
    awk -v s="$sum" -v t="$total" 'BEGIN {exit !(s <= t && s >= t * 0.99)}' \
        || { echo "stage counts $sum do not add up to the total $total" >&2; exit 1; }
}

case "$MODE" in
    save)
        {
            echo "# instructions per message and stage (bash bench/instructions.sh --save);"
            echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') rustc $(rustc --version | cut -d' ' -f2) valgrind $(valgrind --version | sed 's/valgrind-//')"
            count "$STAGES" "$N" 2048
        } >"$T/baseline"
        mv "$T/baseline" "$BASELINE"
        cat "$BASELINE"
        ;;
    compare)
        worse=0
        printf '%-14s %14s %14s %7s\n' stage baseline now ratio
        count "$STAGES" "$N" 2048 >"$T/now"
        while read -r s now; do
            before=$(awk -v s="$s" '$1 == s {print $2}' "$BASELINE" 2>/dev/null || true)
            if [ -z "$before" ]; then
                printf '%-14s %14s %14s %7s\n' "$s" "-" "$now" "-"
                continue
            fi
            ratio=$(awk -v a="$now" -v b="$before" 'BEGIN {printf "%.3f", a / b}')
            printf '%-14s %14s %14s %7s\n' "$s" "$before" "$now" "$ratio"
            if awk -v r="$ratio" -v t="$TOLERANCE" 'BEGIN {exit !(r > t)}'; then worse=1; fi
        done <"$T/now"
        [ "$worse" = 0 ] || { echo "some stage is above ${TOLERANCE}x its baseline" >&2; exit 1; }
        ;;
    sizes)
        printf '%-14s %10s %14s %12s\n' stage body instructions per-octet
        for b in $SIZES; do
            # Fewer iterations for the large bodies: the count is per iteration anyway.
            n=$(( b > 100000 ? 3 : N ))
            count "${INSTR_SIZE_STAGES:-smtp headers dkim verify_accept}" "$n" "$b" >"$T/size.$b"
            msg=$(awk 'NR == 1 {print $3}' "$T/stdout.$b")
            while read -r s i; do
                printf '%-14s %10s %14s %12s\n' "$s" "$msg" "$i" \
                    "$(awk -v i="$i" -v m="$msg" 'BEGIN {printf "%.1f", i / m}')"
            done <"$T/size.$b"
        done
        ;;
esac
