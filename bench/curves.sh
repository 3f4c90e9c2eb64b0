#!/usr/bin/env bash
# Cost curves (README, "Performance"): the accept path's server CPU per message and p99
# latency against the number of concurrent sessions, and the per-message instructions against
# the message size. Writes bench/curves-*.txt (the figures) and bench/curves-*.svg (plots,
# bench/plot.py, standard library only).
#
# Usage, as root, from anywhere in the repository:   bash bench/curves.sh [concurrency] [size]
# (both when none is named). Env: CURVE_SESSIONS ("1 20 200 2000"), CURVE_ACCEPT (messages per
# point, 2000), INSTR_SIZES (see bench/instructions.sh).
#
# concurrency: one `bench/run.sh` per point with only the accept phase
#   (BENCH_SKIP=reject,peer,idle,loris BENCH_SESSIONS=S); its summary line gives the server
#   CPU per message (utime+stime of the daemon over the phase) and the p99 latency
#   (connect → 250 after DATA). Same loopback-only set-up as bench/run.sh.
# size: `bench/instructions.sh --sizes`: instructions per message of the SMTP session, the
#   header checks, DKIM and the whole verification from 2 KiB to 2 MiB; the per-octet column
#   shows whether the cost grows linearly (a quadratic step would make it grow with the size).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WHAT=${*:-concurrency size}

for w in $WHAT; do
    case "$w" in
        concurrency)
            out=bench/curves-concurrency.txt
            echo "# sessions cpu_ms_per_msg p99_ms (accept path; bash bench/curves.sh concurrency; $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1 /proc/loadavg))" >"$out.tmp"
            echo "sessions cpu_ms_per_msg p99_ms" >>"$out.tmp"
            for s in ${CURVE_SESSIONS:-1 20 200 2000}; do
                line=$(BENCH_SKIP=reject,peer,idle,loris BENCH_SESSIONS=$s \
                    BENCH_ACCEPT=${CURVE_ACCEPT:-2000} bash bench/run.sh | tail -1)
                # "gatekeeper accept: 5063/s (0.250 ms CPU/msg, p50 3.9 ms, p99 6.4 ms); ..."
                cpu=$(sed -n 's/.*accept: [0-9.]*\/s (\([0-9.]*\) ms CPU\/msg.*/\1/p' <<<"$line")
                p99=$(sed -n 's/.*accept: [^;]*p99 \([0-9.]*\) ms).*/\1/p' <<<"$line")
                echo "$s ${cpu:--} ${p99:--}" | tee -a "$out.tmp"
            done
            mv "$out.tmp" "$out"
            grep -v '^#' "$out" | awk '{print $1, $2}' \
                | python3 bench/plot.py "accept path: server CPU per message" \
                    "concurrent sessions" "ms CPU / message" bench/curves-concurrency-cpu.svg
            grep -v '^#' "$out" | awk '{print $1, $3}' \
                | python3 bench/plot.py "accept path: p99 latency" \
                    "concurrent sessions" "p99 ms (connect to 250)" bench/curves-concurrency-p99.svg
            ;;
        size)
            out=bench/curves-size.txt
            bash bench/instructions.sh --sizes | tee "$out.tmp"
            mv "$out.tmp" "$out"
            # One column per stage, one row per message size: instructions per octet.
            awk 'NR > 1 {v[$2, $1] = $4; if (!($2 in seen)) {seen[$2] = 1; xs[++nx] = $2}
                         if (!($1 in st)) {st[$1] = 1; ss[++ns] = $1}}
                 END {printf "octets"; for (j = 1; j <= ns; j++) printf " %s", ss[j]; print ""
                      for (i = 1; i <= nx; i++) {printf "%s", xs[i]
                          for (j = 1; j <= ns; j++) printf " %s", ((xs[i], ss[j]) in v) ? v[xs[i], ss[j]] : "-"
                          print ""}}' "$out" \
                | python3 bench/plot.py "instructions per octet against message size" \
                    "message octets" "instructions / octet" bench/curves-size.svg
            ;;
        *) echo "usage: $0 [concurrency] [size]" >&2; exit 2 ;;
    esac
done
