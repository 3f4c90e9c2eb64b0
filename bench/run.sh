#!/usr/bin/env bash
# gatekeeper benchmark, against Postfix + OpenDKIM on the same machine (README, "Performance").
#
# Usage, as root, from anywhere in the repository:   bash bench/run.sh
# Env (all optional): BENCH_ACCEPT (2000 confirmations), BENCH_REJECT (5000 messages per
# smtp-source run), BENCH_SESSIONS (20), BENCH_IDLE (10000), BENCH_LORIS (1000),
# BENCH_LORIS_SECS (20), BENCH_SKIP (any of accept,reject,peer,idle,loris), BENCH_KEEP=1 keeps the temp dir.
#
# What runs, loopback only, every process stopped by PID on exit:
#   127.0.0.53:5354   the ministry's DNS, inside the load tool (TTL 1 h, RSA-2048 key it made)
#   127.0.0.20:2525   gatekeeper serve (API on :8025), child of the load tool
#   127.0.0.30:2526   the peer: a private Postfix instance (discards everything) with
#                     OpenDKIM in verify mode as its milter (127.0.0.30:8893)
#   127.0.0.31:2527   Postfix's smtp-sink, the do-nothing floor
# The load tool (examples/smtp_load.rs) creates the challenges, signs the replies, runs every
# phase (it calls smtp-source itself) and prints the figures; its last line is the summary.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Port 53: OpenDKIM's resolver (libunbound) is pointed at it with `Nameservers`, which
# takes addresses only. (Its `ResolverConfiguration` file crashed OpenDKIM under load:
# "fatal flex scanner internal error".)
DNS_ADDR=127.0.0.53:53
GK_SMTP=127.0.0.20:2525
GK_API=127.0.0.20:8025
PEER_IP=127.0.0.30
PEER_PORT=2526
MILTER_PORT=8893
SINK_ADDR=127.0.0.31:2527

T=""
PIDS=()
PEER_DIR=""
POLICY_RC_CREATED=0

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ -n "$T" ] && [ -s "$T/gatekeeper.pid" ]; then
        PIDS+=("$(tr -dc 0-9 <"$T/gatekeeper.pid")")
    fi
    if [ -n "$PEER_DIR" ]; then
        timeout 20 postfix -c "$PEER_DIR" stop >/dev/null 2>&1
        local mp="$PEER_DIR/queue/pid/master.pid"
        if [ -s "$mp" ]; then PIDS+=("$(tr -dc 0-9 <"$mp")"); fi
    fi
    local p
    for p in "${PIDS[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    for _ in $(seq 1 50); do
        local alive=0
        for p in "${PIDS[@]}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for p in "${PIDS[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    if [ -n "$T" ] && [ -d "$T" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (packages, a private Postfix instance, 10,000 descriptors)"

# --- packages: smtp-source and smtp-sink come with postfix -----------------------------------
need=()
command -v smtp-source >/dev/null || need+=(postfix)
command -v opendkim >/dev/null || need+=(opendkim)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    # No package may start its system instance: policy-rc.d says no.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    if ! DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends "${need[@]}" >/tmp/bench-apt.log 2>&1; then
        timeout 120 apt-get update >>/tmp/bench-apt.log 2>&1
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/bench-apt.log 2>&1 \
            || { tail -20 /tmp/bench-apt.log >&2; die "apt-get install failed"; }
    fi
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
fi

# --- build ------------------------------------------------------------------------------------
log "building (release)"
# Two invocations on purpose: built together, the example's dev-dependencies would unify
# into the daemon's (tokio's test-util clock among them) and the daemon measured would not
# be the one shipped. Cargo keeps both builds of the library, so reruns compile nothing.
timeout 1200 cargo build --release --locked --bin gatekeeper >&2
timeout 1200 cargo build --release --locked --example smtp_load >&2

T=$(mktemp -d /tmp/gk-bench.XXXXXX)
chmod 755 "$T"
# Each side holds one descriptor per idle session: raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $(( ${BENCH_IDLE:-10000} + 2000 )) ] \
    || die "descriptor limit $(ulimit -n) too low for ${BENCH_IDLE:-10000} idle sessions"

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
wait_tcp() { # host port seconds
    local end=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$end" ]; do tcp_open "$1" "$2" && return 0; sleep 0.2; done
    return 1
}
for a in "$DNS_ADDR" "$GK_SMTP" "$GK_API" "$PEER_IP:$PEER_PORT" "$PEER_IP:$MILTER_PORT" "$SINK_ADDR"; do
    tcp_open "${a%:*}" "${a##*:}" && die "$a is already in use"
done

# --- the peer: OpenDKIM (verify) + a private Postfix instance that discards -----------------
PD=$T/peer
mkdir -p "$PD/queue" "$PD/data" "$PD/dkim"
cat >"$PD/dkim/opendkim.conf" <<EOF
Mode                    v
Socket                  inet:$MILTER_PORT@$PEER_IP
PidFile                 $PD/dkim/opendkim.pid
Syslog                  no
Nameservers             ${DNS_ADDR%:*}
QueryCache              yes
AlwaysAddARHeader       yes
EOF
opendkim -f -x "$PD/dkim/opendkim.conf" >"$PD/dkim/opendkim.out" 2>&1 &
PIDS+=("$!")
wait_tcp "$PEER_IP" "$MILTER_PORT" 10 || { cat "$PD/dkim/opendkim.out" >&2; die "OpenDKIM did not listen"; }

cat >"$PD/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PD/queue
data_directory = $PD/data
maillog_file = $PD/maillog
maillog_file_prefixes = $PD
myhostname = peer.bench.example
mydomain = bench.example
# The listener binds $PEER_IP explicitly in master.cf (lo carries only 127.0.0.1).
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination = verify.example.gouv.fr
local_recipient_maps =
local_transport = discard
default_transport = discard
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
smtpd_tls_security_level = none
smtpd_milters = inet:$PEER_IP:$MILTER_PORT
milter_default_action = tempfail
milter_protocol = 6
# Log every message OpenDKIM verified (its Authentication-Results), so the load tool can
# count that the peer did the work rather than answer 4xx fast.
milter_header_checks = regexp:$PD/ar_checks
EOF
printf '/^Authentication-Results:.*dkim=pass/ WARN peer-dkim-pass\n' >"$PD/ar_checks"
printf '%s:%s inet n - n - - smtpd\n' "$PEER_IP" "$PEER_PORT" >"$PD/master.cf"
cat >>"$PD/master.cf" <<'EOF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
timeout 30 postfix -c "$PD" set-permissions >"$PD/postfix.out" 2>&1 || true
PEER_DIR=$PD
timeout 30 postfix -c "$PD" start >>"$PD/postfix.out" 2>&1 || { cat "$PD/postfix.out" >&2; die "peer postfix did not start"; }
wait_tcp "$PEER_IP" "$PEER_PORT" 15 || { cat "$PD/postfix.out" "$PD/maillog" >&2; die "peer postfix did not listen"; }

smtp-sink -u postfix "$SINK_ADDR" 1024 >"$T/smtp-sink.out" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
wait_tcp "${SINK_ADDR%:*}" "${SINK_ADDR##*:}" 10 || die "smtp-sink did not listen"

# --- the run ------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE ($(nproc) cores)"
set +e
timeout 900 target/release/examples/smtp_load \
    --dir "$T" --gatekeeper target/release/gatekeeper \
    --dns "$DNS_ADDR" --smtp "$GK_SMTP" --api "$GK_API" \
    --peer "$PEER_IP:$PEER_PORT" --peer-log "$PD/maillog" --sink "$SINK_ADDR" --sink-pid "$SINK_PID" \
    --accept "${BENCH_ACCEPT:-2000}" --reject "${BENCH_REJECT:-5000}" \
    --sessions "${BENCH_SESSIONS:-20}" --idle "${BENCH_IDLE:-10000}" \
    --loris "${BENCH_LORIS:-1000}" --loris-secs "${BENCH_LORIS_SECS:-20}" \
    --skip "${BENCH_SKIP:-}" >"$T/summary.txt"
rc=$?
set -e
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
[ "$rc" = 0 ] || { tail -30 "$T/gatekeeper.err" >&2 2>/dev/null; die "load tool failed (exit $rc)"; }
echo "$(cat "$T/summary.txt"); load avg before/after: $LOAD_BEFORE / $LOAD_AFTER"
