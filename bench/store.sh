#!/usr/bin/env bash
# gatekeeper store benchmark (README, "Performance"): the accept path on SQLite, on PostgreSQL
# with one instance and with two instances sharing it, then the store's operations per second
# and point-read latency with 10^4, 10^5 and 10^6 challenges in the table, on both stores.
#
# Usage, as root, from anywhere in the repository:   bash bench/store.sh
# Env (all optional): BENCH_ACCEPT (2000 confirmations per accept run), BENCH_SESSIONS (20),
# BENCH_SIZES (10000,100000,1000000), BENCH_SKIP (any of accept,scale), BENCH_KEEP=1 keeps
# the temp dir, BENCH_NO_BUILD=1 uses the release binaries already in target/ as they are.
#
# What runs, loopback only, every process stopped by PID (or pg_ctl) on exit:
#   127.0.0.1:<free port>  a throwaway PostgreSQL 15 cluster (initdb + pg_ctl as `nobody`,
#                          as tests/common/postgres.rs does, but with fsync on: durable)
#   127.0.0.53:5354        the ministry's DNS, inside the load tool
#   127.0.0.20:2525/8025   gatekeeper serve (SMTP/API), child of the load tool
#   127.0.0.21:2525/8025   the second instance of the two-instance run
# The load tool is examples/smtp_load.rs (its accept phase only: N distinct confirmations over
# BENCH_SESSIONS concurrent sessions, server CPU from /proc); the table figures come from
# examples/store_scale.rs. PostgreSQL's own CPU is read from /proc for the postmaster and its
# children (SQLite's is inside gatekeeper's).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_BIN=/usr/lib/postgresql/15/bin
DNS_ADDR=127.0.0.53:5354
SMTP1=127.0.0.20:2525
API1=127.0.0.20:8025
SMTP2=127.0.0.21:2525
API2=127.0.0.21:8025
ACCEPT=${BENCH_ACCEPT:-2000}
SESSIONS=${BENCH_SESSIONS:-20}
SIZES=${BENCH_SIZES:-10000,100000,1000000}
SKIP=${BENCH_SKIP:-}

T=""
PG_STARTED=0

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

cleanup() {
    local rc=$?
    set +e
    if [ "$PG_STARTED" = 1 ]; then
        (cd / && as_nobody "$PG_BIN/pg_ctl" -D "$T/pg/data" -w -m fast stop >/dev/null 2>&1)
    fi
    if [ -n "$T" ] && [ -d "$T" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (the cluster runs as nobody through setpriv)"
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL 15 is not installed: apt-get install postgresql"

# --- build ------------------------------------------------------------------------------------
if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    for b in target/release/gatekeeper target/release/examples/smtp_load target/release/examples/store_scale; do
        [ -x "$b" ] || die "BENCH_NO_BUILD=1 but $b is missing"
    done
else
    log "building (release)"
    # Two invocations, as bench/run.sh explains: the daemon measured is the one shipped, not
    # one built with the examples' dev-dependencies.
    timeout 1800 cargo build --release --locked --bin gatekeeper >&2
    timeout 1800 cargo build --release --locked --example smtp_load --example store_scale >&2
fi

T=$(mktemp -d /tmp/gk-store-bench.XXXXXX)
chmod 755 "$T"

# --- PostgreSQL -------------------------------------------------------------------------------
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$T/pg"
chown nobody:nogroup "$T/pg"
(cd / && as_nobody "$PG_BIN/initdb" -D "$T/pg/data" -U postgres --auth=trust -E UTF8 >"$T/pg/initdb.log" 2>&1) \
    || { cat "$T/pg/initdb.log" >&2; die "initdb failed"; }
# Durable (fsync and synchronous_commit at their defaults, on), as SQLite's synchronous=FULL.
(cd / && as_nobody "$PG_BIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$T/pg -c max_connections=100" start >&2) \
    || { cat "$T/pg/log" >&2; die "pg_ctl start failed"; }
PG_STARTED=1
psql_su() { (cd / && as_nobody "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$T/pg" -p "$PG_PORT" -U postgres -d postgres -c "$1"); }
psql_su "CREATE ROLE gk LOGIN PASSWORD 'gk-secret'"
for db in gk_one gk_two gk_scale; do psql_su "CREATE DATABASE $db OWNER gk"; done
printf 'gk-secret\n' >"$T/pg-password"
chmod 644 "$T/pg-password"
url() { echo "postgresql://gk@127.0.0.1:$PG_PORT/$1"; }
POSTMASTER=$(head -1 "$T/pg/data/postmaster.pid")

# utime+stime of the postmaster, of its live children and of its reaped ones, in ms.
pg_cpu_ms() {
    local hz ticks=0 p f
    hz=$(getconf CLK_TCK)
    for p in "$POSTMASTER" $(ps -o pid= --ppid "$POSTMASTER"); do
        f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
        # After ")": utime stime cutime cstime are fields 12-15 (state is 1).
        ticks=$((ticks + $(echo "$f" | awk '{print $12 + $13 + $14 + $15}')))
    done
    echo $((ticks * 1000 / hz))
}

# --- accept path ------------------------------------------------------------------------------
RESULTS=()
# One accept run: label, dir, extra smtp_load args. Prints the figures line.
accept_run() {
    local label=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    local pg0 pg1 line db_ms
    pg0=$(pg_cpu_ms)
    timeout 900 target/release/examples/smtp_load \
        --dir "$dir" --gatekeeper target/release/gatekeeper \
        --dns "$DNS_ADDR" --smtp "$SMTP1" --api "$API1" \
        --accept "$ACCEPT" --sessions "$SESSIONS" --skip reject,peer,idle,loris \
        "$@" >"$dir/summary.txt" 2>"$dir/load.err" \
        || { tail -20 "$dir/load.err" "$dir"/gatekeeper*.err >&2; die "$label: load tool failed"; }
    pg1=$(pg_cpu_ms)
    line=$(grep -o 'accept: .*confirmations in.*latency p50 [0-9.]* ms p99 [0-9.]* ms' "$dir/load.err" | tail -1)
    [ -n "$line" ] || die "$label: no accept figures in $dir/load.err"
    db_ms=$(awk -v a="$pg0" -v b="$pg1" -v n="$ACCEPT" 'BEGIN { printf "%.3f", (b - a) / n }')
    RESULTS+=("$label: $line; PostgreSQL CPU $db_ms ms/msg")
    log "${RESULTS[-1]}"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE ($(nproc) cores)"
if [[ ",$SKIP," != *",accept,"* ]]; then
    accept_run "SQLite" "$T/sqlite"
    accept_run "PostgreSQL, one instance" "$T/pg1" \
        --store-url "$(url gk_one)" --store-password-file "$T/pg-password"
    accept_run "PostgreSQL, two instances" "$T/pg2" \
        --store-url "$(url gk_two)" --store-password-file "$T/pg-password" \
        --smtp2 "$SMTP2" --api2 "$API2"
fi

# --- the store at 10^4..10^6 rows -------------------------------------------------------------
if [[ ",$SKIP," != *",scale,"* ]]; then
    mkdir -p "$T/scale"
    timeout 1800 target/release/examples/store_scale sqlite "$T/scale" "$SIZES" >"$T/scale-sqlite.txt" \
        || die "store_scale sqlite failed"
    timeout 1800 target/release/examples/store_scale postgres "$(url gk_scale)" "$T/pg-password" "$SIZES" >"$T/scale-pg.txt" \
        || die "store_scale postgres failed"
    while IFS= read -r l; do RESULTS+=("$l"); done < <(cat "$T/scale-sqlite.txt" "$T/scale-pg.txt")
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
printf '%s\n' "${RESULTS[@]}"
echo "load avg before/after: $LOAD_BEFORE / $LOAD_AFTER ($(nproc) cores)"
