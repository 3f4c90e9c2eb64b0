#!/usr/bin/env bash
# bench/memory.sh — the daemon's memory around a burst of large messages, per allocator
# (README, "Performance"; issue 17).
#
# For each allocator it builds the daemon (release; Cargo features `jemalloc` / `mimalloc`, or
# the system's), then examples/memory_burst.rs starts it on loopback, puts BENCH_SESSIONS
# sessions (default 1000) in the middle of DATA with BENCH_BYTES each (default 2,000,000), closes
# them all, and prints RSS idle, with every session mid-DATA, the peak (VmHWM), 2 s after the
# closes and BENCH_SETTLE seconds later. Runs under the default smtp.max_buffered_bytes; with
# BENCH_UNBOUNDED=1 also under a 4 GiB budget (what the daemon did before the budget).
#
#   bash bench/memory.sh      # BENCH_ALLOCATORS="system system-mmap jemalloc mimalloc" BENCH_KEEP=1
#
# "system-mmap" is glibc with MALLOC_MMAP_THRESHOLD_=131072 and MALLOC_ARENA_MAX=2 in the
# daemon's environment (a fixed mmap threshold: buffers of 128 KiB and more are mapped and
# unmapped, never left in an arena). Every process it starts is stopped by PID on exit; every
# address is on loopback.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALLOCATORS=${BENCH_ALLOCATORS:-"system system-mmap jemalloc mimalloc"}
SESSIONS=${BENCH_SESSIONS:-1000}
BYTES=${BENCH_BYTES:-2000000}
SETTLE=${BENCH_SETTLE:-10}
TARGET=${CARGO_TARGET_DIR:-target}
# BENCH_PROFILE=dev measures debug builds (a machine too busy for three release builds); the
# allocators' behaviour is the same, the absolute figures are larger.
PROFILE=${BENCH_PROFILE:-release}
OUT=$PROFILE
[ "$PROFILE" = dev ] && OUT=debug
T=""

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

cleanup() {
    local rc=$? f p
    set +e
    if [ -n "$T" ] && [ -d "$T" ]; then
        for f in "$T"/*/gatekeeper.pid; do
            [ -s "$f" ] || continue
            p=$(tr -dc 0-9 <"$f")
            [ -n "$p" ] && kill "$p" 2>/dev/null
        done
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

T=$(mktemp -d /tmp/gk-memory.XXXXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((2 * SESSIONS + 500)) ] \
    || die "descriptor limit $(ulimit -n) too low for $SESSIONS sessions"

log "building the load tool ($PROFILE)"
timeout 1800 cargo build --profile "$PROFILE" --locked --example memory_burst >&2
for alloc in $ALLOCATORS; do
    case "$alloc" in
        system | system-mmap) feature="" ;;
        jemalloc | mimalloc) feature="$alloc" ;;
        *) die "unknown allocator $alloc (system, system-mmap, jemalloc, mimalloc)" ;;
    esac
    bin="$T/gatekeeper-${feature:-system}"
    [ -x "$bin" ] && continue
    log "building the daemon with the ${feature:-system} allocator ($PROFILE)"
    # Built with the load tool, as `cargo test` builds it: one feature resolution for both, so
    # the dependencies already built are reused.
    timeout 1800 cargo build --profile "$PROFILE" --locked --bin gatekeeper --example memory_burst \
        ${feature:+--features "$feature"} >&2
    cp "$TARGET/$OUT/gatekeeper" "$bin"
done

budgets=(default)
[ "${BENCH_UNBOUNDED:-0}" = 1 ] && budgets+=(4294967296)
results=()
for alloc in $ALLOCATORS; do
    envs=()
    case "$alloc" in
        system-mmap) envs=(--env MALLOC_MMAP_THRESHOLD_=131072 --env MALLOC_ARENA_MAX=2); bin=system ;;
        system) bin=system ;;
        *) bin=$alloc ;;
    esac
    for budget in "${budgets[@]}"; do
        dir="$T/$alloc-$budget"
        mkdir -p "$dir"
        args=(--dir "$dir" --gatekeeper "$T/gatekeeper-$bin" --sessions "$SESSIONS"
            --bytes "$BYTES" --settle-secs "$SETTLE" --label "$alloc" "${envs[@]}")
        [ "$budget" = default ] || args+=(--budget "$budget")
        log "burst: $alloc, budget $budget"
        line=$("$TARGET/$OUT/examples/memory_burst" "${args[@]}") \
            || { tail -20 "$dir/gatekeeper.err" >&2; die "burst failed ($alloc, $budget)"; }
        log "$line"
        results+=("$line")
    done
done
printf '%s\n' "${results[@]}"
