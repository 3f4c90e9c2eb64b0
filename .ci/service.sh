#!/usr/bin/env bash
# CI stage "service": the Debian package and the systemd units it ships.
#
#   1. cargo-deb (pinned) builds gatekeeper.deb from [package.metadata.deb], the metadata an
#      operator's `cargo deb --locked` release build uses; here on the debug binary `cargo
#      test` already built (a release build costs minutes), stripped, fast compression.
#   2. The package is inspected: control fields, conffiles, maintainer scripts, every path
#      and mode, the shipped units byte for byte, and the packaged binary runs check-config
#      on the packaged configuration.
#   3. systemd-analyze verify on the units as installed (the extracted package is the root),
#      and systemd-analyze security --offline: exposure at most MAX_EXPOSURE.
#   4. The syscall filter: the packaged binary runs unprivileged under strace, serves SMTP
#      with STARTTLS, the API, a reload and a drain; every syscall it made must be allowed
#      by the unit's SystemCallFilter= (expanded with systemd-analyze syscall-filter).
#
# Needs (.ci/packages): systemd, dpkg-dev, strace, openssl, curl; readelf (binutils, with gcc). Run from anywhere, as root
# (CI) or not; prints what it checks and fails on the first difference.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0
# systemd-analyze security prints one decimal; the unit is at 1.1.
MAX_EXPOSURE=1.5

work=$(mktemp -d)
daemon_pid=
cleanup() {
    if [[ -n "$daemon_pid" ]]; then
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

step() {
    echo "--- $*"
}

# ---------------------------------------------------------------------------------------
step "cargo-deb ${CARGO_DEB_VERSION}"
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
cargo deb --version

step "build the package (debug binary)"
# A no-op after `cargo test`; builds the binary when the stage runs alone.
cargo build --locked --bin gatekeeper
deb="$work/gatekeeper.deb"
cargo deb --locked --no-build --profile dev --fast --output "$deb"
ls -l "$deb"

# ---------------------------------------------------------------------------------------
step "inspect: dpkg-deb -I"
dpkg-deb -I "$deb" | tee "$work/info"
field() {
    dpkg-deb -f "$deb" "$1"
}
[[ "$(field Package)" == gatekeeper ]] || fail "Package: $(field Package)"
[[ "$(field Architecture)" == "$(dpkg --print-architecture)" ]] || fail "Architecture"
[[ "$(field Section)" == mail ]] || fail "Section: $(field Section)"
depends=$(field Depends)
for dep in libc6 systemd procps init-system-helpers; do
    grep -qE "(^|, )${dep}( |,|$)" <<<"$depends" || fail "Depends lacks ${dep}: ${depends}"
done

mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
[[ "$(cat "$work/control/conffiles")" == "/etc/gatekeeper/gatekeeper.toml" ]] ||
    fail "conffiles: $(cat "$work/control/conffiles")"
for script in postinst prerm postrm; do
    [[ -x "$work/control/$script" ]] || fail "maintainer script $script missing"
    sh -n "$work/control/$script" || fail "$script: syntax"
done
grep -q 'systemd-sysusers gatekeeper.conf' "$work/control/postinst" || fail "postinst: sysusers"
grep -q 'systemd-tmpfiles --create gatekeeper.conf' "$work/control/postinst" ||
    fail "postinst: tmpfiles"

step "inspect: dpkg-deb -c"
dpkg-deb -c "$deb" | tee "$work/contents"
# mode owner path, as dpkg-deb -c prints them.
expect_entry() {
    local mode=$1 path=$2
    awk -v m="$mode" -v p="./$path" '$1 == m && ($2 == "0/0" || $2 == "root/root") && $6 == p { ok = 1 }
        END { exit !ok }' "$work/contents" || fail "no ${mode} root-owned ./${path}"
}
expect_entry -rwxr-xr-x usr/bin/gatekeeper
expect_entry -rw-r--r-- lib/systemd/system/gatekeeper.service
expect_entry -rw-r--r-- lib/systemd/system/gatekeeper.socket
expect_entry -rw-r--r-- usr/lib/sysusers.d/gatekeeper.conf
expect_entry -rw-r--r-- usr/lib/tmpfiles.d/gatekeeper.conf
expect_entry -rw-r----- etc/gatekeeper/gatekeeper.toml
expect_entry -rw-r--r-- usr/share/doc/gatekeeper/README.md
expect_entry -rw-r--r-- usr/share/doc/gatekeeper/copyright
expect_entry -rw-r--r-- usr/share/doc/gatekeeper/examples/gatekeeper.toml

root="$work/root"
dpkg-deb -x "$deb" "$root"
same() {
    cmp -s "$1" "$root/$2" || fail "$2 differs from $1"
}
same systemd/gatekeeper.service lib/systemd/system/gatekeeper.service
same systemd/gatekeeper.socket lib/systemd/system/gatekeeper.socket
same systemd/gatekeeper.sysusers usr/lib/sysusers.d/gatekeeper.conf
same systemd/gatekeeper.tmpfiles usr/lib/tmpfiles.d/gatekeeper.conf
same conf/examples/production.toml etc/gatekeeper/gatekeeper.toml
# Stripped: the debug build's symbols are not shipped.
if readelf -S "$root/usr/bin/gatekeeper" | grep -q '\.debug_info'; then
    fail "usr/bin/gatekeeper is not stripped"
fi
"$root/usr/bin/gatekeeper" --version
[[ "$("$root/usr/bin/gatekeeper" check-config -c "$root/etc/gatekeeper/gatekeeper.toml")" == ok ]] ||
    fail "check-config on the packaged configuration"

step "postinst effect: sysusers and tmpfiles on the extracted root"
# What the postinst runs, against the package's root instead of this machine's.
if [[ "$(id -u)" == 0 ]]; then
    mkdir -p "$root/etc"
    touch "$root/etc/passwd" "$root/etc/group"
    systemd-sysusers --root="$root" gatekeeper.conf
    uid=$(awk -F: '$1 == "gatekeeper" { print $3 }' "$root/etc/passwd")
    gid=$(awk -F: '$1 == "gatekeeper" { print $3 }' "$root/etc/group")
    [[ -n "$uid" && -n "$gid" ]] || fail "sysusers created no gatekeeper account"
    grep -q '^gatekeeper:x:[0-9]*:[0-9]*:[^:]*:/var/lib/gatekeeper:/usr/sbin/nologin$' \
        "$root/etc/passwd" || fail "account: $(grep gatekeeper "$root/etc/passwd")"
    systemd-tmpfiles --root="$root" --create gatekeeper.conf
    expect_stat() {
        local want=$1 path=$2 got
        got=$(stat -c '%a %u:%g' "$root/$path")
        [[ "$got" == "$want" ]] || fail "$path: ${got}, want ${want}"
        echo "$path: $got"
    }
    expect_stat "750 0:${gid}" etc/gatekeeper
    expect_stat "750 0:${gid}" etc/gatekeeper/tls
    expect_stat "750 0:${gid}" etc/gatekeeper/dkim
    expect_stat "640 0:${gid}" etc/gatekeeper/gatekeeper.toml
    expect_stat "750 ${uid}:${gid}" var/lib/gatekeeper
    expect_stat "750 ${uid}:${gid}" var/lib/gatekeeper/outbox
else
    echo "not root: skipped"
fi

# ---------------------------------------------------------------------------------------
step "systemd-analyze verify (units as installed)"
# The extracted package is the root; systemd's own units (sysinit.target, ...) and the
# ExecReload= kill come from this machine.
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
kill_bin=$(type -P kill) || fail "no kill binary (procps)"
mkdir -p "$root/bin"
cp "$kill_bin" "$root/bin/kill"
verify_out=$(systemd-analyze verify --root="$root" \
    "$root/lib/systemd/system/gatekeeper.service" \
    "$root/lib/systemd/system/gatekeeper.socket" 2>&1) || fail "verify: ${verify_out}"
# Unknown keys and other mistakes are warnings with exit 0: any output fails.
[[ -z "$verify_out" ]] || fail "verify: ${verify_out}"
echo "verify: no findings"

step "systemd-analyze security --offline"
systemd-analyze security --offline=true "$root/lib/systemd/system/gatekeeper.service" \
    >"$work/security" 2>&1 || true
grep -v '^✓' "$work/security"
exposure=$(sed -n 's/.*Overall exposure level for gatekeeper.service: \([0-9.]*\).*/\1/p' \
    "$work/security")
[[ -n "$exposure" ]] || fail "no exposure level in the output"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
    fail "exposure ${exposure} above ${MAX_EXPOSURE}"
echo "exposure ${exposure} (at most ${MAX_EXPOSURE})"

# ---------------------------------------------------------------------------------------
step "syscall filter against a traced run"
# The set the unit allows: SystemCallFilter= lines, first allow-list then deny-lists.
expand() {
    systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/^ *//; /^#/d; /^$/d' |
        while read -r name; do
            if [[ "$name" == @* ]]; then expand "$name"; else echo "$name"; fi
        done
}
unit="$root/lib/systemd/system/gatekeeper.service"
: >"$work/allowed"
while read -r value; do
    if [[ "$value" == "~"* ]]; then
        deny=""
        for group in ${value#\~}; do deny+="$(expand "$group")"$'\n'; done
        grep -vxFf <(printf '%s' "$deny" | sed '/^$/d') "$work/allowed" >"$work/allowed.next" || true
        mv "$work/allowed.next" "$work/allowed"
    else
        for group in $value; do expand "$group" >>"$work/allowed"; done
    fi
done < <(sed -n 's/^SystemCallFilter=//p' "$unit")
sort -u -o "$work/allowed" "$work/allowed"
echo "$(wc -l <"$work/allowed") syscalls allowed"

site="$work/site"
mkdir -p "$site/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -days 2 -keyout "$site/tls/key.pem" -out "$site/tls/cert.pem" 2>/dev/null
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 30000-60000 -n 1
}
smtp_port=$(free_port)
api_port=$(free_port)
cat >"$site/gatekeeper.toml" <<EOF
[smtp]
listen = ["127.0.0.1:${smtp_port}"]
hostname = "mx.ci.example"
shutdown_grace = "2s"
[smtp.tls]
certificate = "tls/cert.pem"
private_key = "tls/key.pem"
[confirm]
domain = "verify.example.gouv.fr"
[policy]
allowed_domains = ["gouv.fr"]
[dns]
nameservers = ["127.0.0.1:9"]
timeout = "1s"
[store]
path = "state/gatekeeper.db"
[api]
listen = "127.0.0.1:${api_port}"
token_file = "state/api-token"
[outbound]
from = "Inscription <noreply@verify.example.gouv.fr>"
directory = "state/outbox"
[siem]
spool_path = "state/siem-spool.db"
[[siem.sink]]
type = "file"
path = "state/events.jsonl"
[[siem.sink]]
type = "syslog"
address = "127.0.0.1:9"
transport = "udp"
EOF
chmod -R a+rX "$work"
chown -R nobody "$site" 2>/dev/null || true
runner=()
if [[ "$(id -u)" == 0 ]]; then
    # Unprivileged, as under systemd (SQLite, for one, behaves differently as root).
    runner=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
(cd "$site" && exec strace -f -qq -o "$work/trace" "${runner[@]}" \
    "$root/usr/bin/gatekeeper" serve -c gatekeeper.toml 2>"$work/daemon.log") &
strace_pid=$!
for _ in $(seq 100); do
    grep -q 'gatekeeper serving' "$work/daemon.log" 2>/dev/null && break
    sleep 0.1
done
grep -q 'gatekeeper serving' "$work/daemon.log" || fail "daemon did not start: $(cat "$work/daemon.log")"
daemon_pid=$(pgrep -P "$strace_pid" -f "usr/bin/gatekeeper serve" || true)
[[ -n "$daemon_pid" ]] || daemon_pid=$(pgrep -n -f "^$root/usr/bin/gatekeeper serve")
token=$(cat "$site/state/api-token")
curl -fsS -m 10 "http://127.0.0.1:${api_port}/healthz" >/dev/null
curl -fsS -m 10 -H "Authorization: Bearer ${token}" -H 'content-type: application/json' \
    -d '{"address":"alice@interieur.gouv.fr"}' "http://127.0.0.1:${api_port}/v1/challenges" >/dev/null
curl -fsS -m 10 -H "Authorization: Bearer ${token}" "http://127.0.0.1:${api_port}/metrics" >/dev/null
smtp=$(printf 'EHLO client.example\r\nMAIL FROM:<alice@interieur.gouv.fr>\r\nRCPT TO:<confirm+x@verify.example.gouv.fr>\r\nQUIT\r\n' |
    timeout 10 openssl s_client -quiet -starttls smtp -connect "127.0.0.1:${smtp_port}" 2>/dev/null || true)
grep -q '^221' <<<"$smtp" || fail "STARTTLS session: ${smtp}"
kill -HUP "$daemon_pid"
for _ in $(seq 100); do
    grep -q 'configuration reloaded' "$work/daemon.log" && break
    sleep 0.1
done
kill -TERM "$daemon_pid"
wait "$strace_pid" || fail "daemon exit: $(tail -5 "$work/daemon.log")"
daemon_pid=
grep -q 'gatekeeper stopped' "$work/daemon.log" || fail "no clean stop: $(tail -5 "$work/daemon.log")"
# Syscalls after the daemon's execve (setpriv's own setup is not the service's).
awk -v bin="$root/usr/bin/gatekeeper" '
    !started && index($0, "execve(\"" bin "\"") && / = 0$/ { started = 1; next }
    started && match($2, /^[a-z0-9_]+\(/) { print substr($2, 1, RLENGTH - 1) }
' "$work/trace" | sort -u >"$work/used"
echo "$(wc -l <"$work/used") distinct syscalls used: $(tr '\n' ' ' <"$work/used")"
[[ -s "$work/used" ]] || fail "empty trace"
denied=$(comm -23 "$work/used" "$work/allowed")
[[ -z "$denied" ]] || fail "syscalls the unit's SystemCallFilter= denies: ${denied}"
echo "every syscall used is allowed"
