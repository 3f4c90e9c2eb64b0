# The OpenID Provider in the interop world (sourced by tests/interop/run.sh; SPEC §9).
#
# Two scenarios, with the world's own ministry Postfix + OpenDKIM signing Alice's reply:
#
# - oidc_browser: headless Debian Chromium (playwright-core) opens gatekeeper's /authorize
#   for a test relying party, types Alice's address, reads the session code; the ministry
#   sends her signed reply; the page's own polling takes the browser to the relying party's
#   redirect URI with a code, which exchanges at /token for an ID token whose RS256
#   signature verifies against /jwks.json. axe-core: 0 violations on the address page and
#   on the session-code page. Screenshot: $INTEROP_OUTPUT/oidc-session-code.png.
# - oidc_synapse: a real Matrix homeserver (PyPI matrix-synapse[oidc] in a virtualenv the
#   test creates and caches, SQLite) with oidc_providers pointing at gatekeeper. The browser
#   starts Synapse's SSO login, signs in through gatekeeper's page, lands on the Matrix
#   client's redirect with a loginToken that Synapse's /login exchanges for an access token;
#   the user @alice:matrix.test exists and has alice@interieur.gouv.fr as an email 3pid
#   (Synapse's SQLite). `skip_verification: true` is set only because the issuer is plain
#   http on loopback (Synapse otherwise insists on https).
#
# Caches (reused across runs, under the ignored target/): $OIDC_CACHE/node (playwright-core,
# @axe-core/playwright), $OIDC_CACHE/synapse-venv.

OIDC_CACHE=${INTEROP_CACHE:-$ROOT/target/interop-cache}
INTEROP_OUTPUT=${INTEROP_OUTPUT:-$ROOT/target/interop-output}
IP_SYN=127.0.0.11       # Synapse :8008, its Matrix client's redirect target :9998
IP_RP=127.0.0.12        # the test relying party's redirect URI :9997
OIDC_PORT=8443
ISSUER="http://$IP_GK:$OIDC_PORT"
PLAYWRIGHT_VERSION=1.65.2
AXE_VERSION=4.14.1
SYNAPSE_SPEC='matrix-synapse[oidc]==1.163.*'
OIDC_RP_SECRET=""
OIDC_SYN_SECRET=""
SYN_VENV_PID=""

# Packages the scenarios need (CI installs them from .ci/packages; a developer's run does
# it here, like ensure_packages does for the mail world).
oidc_packages() {
    local need=()
    command -v chromium >/dev/null || need+=(chromium)
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    [ "${#need[@]}" = 0 ] && return 0
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends "${need[@]}" >>"$T/apt.log" 2>&1 \
        || { tail -20 "$T/apt.log" >&2; return 1; }
}

# The node packages, once (npm registry; no browser download: the system Chromium is used).
oidc_node() {
    local d=$OIDC_CACHE/node
    if [ -f "$d/node_modules/playwright-core/package.json" ] && [ -f "$d/node_modules/@axe-core/playwright/package.json" ] \
        && grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$d/node_modules/playwright-core/package.json"; then
        return 0
    fi
    mkdir -p "$d"
    [ -f "$d/package.json" ] || echo '{"name":"gatekeeper-interop","private":true}' >"$d/package.json"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm install --prefix "$d" --no-audit --no-fund --loglevel=error \
        "playwright-core@$PLAYWRIGHT_VERSION" "@axe-core/playwright@$AXE_VERSION" >"$T/npm.log" 2>&1
}

# Synapse's virtualenv, once; started in the background at world set-up (pip takes ~45 s).
oidc_synapse_venv_start() {
    local v=$OIDC_CACHE/synapse-venv
    if [ -x "$v/bin/python" ] && "$v/bin/python" -c 'import synapse, authlib' 2>/dev/null; then
        return 0
    fi
    mkdir -p "$OIDC_CACHE"
    (
        rm -rf "$v"
        python3 -m venv "$v" && timeout 600 "$v/bin/pip" install -q --disable-pip-version-check "$SYNAPSE_SPEC"
    ) >"$T/pip.log" 2>&1 &
    SYN_VENV_PID=$!
    PIDS+=("$SYN_VENV_PID")
}

oidc_synapse_venv_wait() {
    local v=$OIDC_CACHE/synapse-venv
    if [ -n "$SYN_VENV_PID" ]; then
        wait "$SYN_VENV_PID" || true
        SYN_VENV_PID=""
    fi
    "$v/bin/python" -c 'import synapse, authlib' 2>/dev/null
}

# Appended to gatekeeper.toml by setup_gatekeeper: the provider and its two clients.
oidc_gatekeeper_config() {
    local d=$T/gk
    OIDC_RP_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    OIDC_SYN_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$OIDC_RP_SECRET" >"$d/oidc-rp.secret"
    printf '%s\n' "$OIDC_SYN_SECRET" >"$d/oidc-matrix.secret"
    chmod 600 "$d/oidc-rp.secret" "$d/oidc-matrix.secret"
    cat <<EOF

[oidc]
listen = "$IP_GK:$OIDC_PORT"
issuer = "$ISSUER"
signing_key = "$d/oidc-signing-key.pem"
subject_key = "$d/oidc-subject-key"

[[oidc.client]]
id = "interop-rp"
secret_file = "$d/oidc-rp.secret"
redirect_uris = ["http://$IP_RP:9997/cb"]
name = "Service de test"

[[oidc.client]]
id = "matrix"
secret_file = "$d/oidc-matrix.secret"
redirect_uris = ["http://$IP_SYN:8008/_synapse/client/oidc/callback"]
name = "Messagerie Matrix de test"
EOF
}

# The reply to the challenge mail the page caused, with the code the browser saw, through
# the ministry's Postfix (OpenDKIM signs it).
oidc_reply() {
    local code_file=$1 name=$2
    if ! wait_until 60 test -s "$code_file"; then OIDC_ERR="the browser never showed a session code"; return 1; fi
    if ! wait_until 30 new_challenge_mail; then OIDC_ERR="no challenge mail reached Alice's Maildir"; return 1; fi
    CH_FILE=$(new_challenge_mail)
    echo "$CH_FILE" >>"$SEEN"
    CH_TOKEN_ADDR=$(hdr "$CH_FILE" Reply-To | grep -oE "confirm\+[A-Za-z0-9._=-]+@$CONFIRM_DOMAIN" | head -1)
    CH_MSGID=$(hdr "$CH_FILE" Message-ID | grep -oE '<[^>]+>' | head -1)
    CH_SUBJECT=$(hdr "$CH_FILE" Subject)
    CH_CODE=$(cat "$code_file")
    OIDC_TOKEN=${CH_TOKEN_ADDR#confirm+}
    OIDC_TOKEN=${OIDC_TOKEN%@*}
    make_reply "$T/$name-reply.eml"
    submit "$IP_MIN" "$ALICE" "$CH_TOKEN_ADDR" "$T/$name-reply.eml" --helo workstation.interieur.gouv.fr
    [ -n "$QUEUE_ID" ] || { OIDC_ERR="the ministry Postfix did not queue the reply"; return 1; }
    return 0
}

# run_browser NAME ENV...: the node script in the background; sets NODE_PID, NODE_OUT.
run_browser() {
    local name=$1; shift
    NODE_OUT=$T/$name
    mkdir -p "$NODE_OUT" "$INTEROP_OUTPUT"
    env NODE_MODULES="$OIDC_CACHE/node/node_modules" ADDRESS="$ALICE" CODE_FILE="$NODE_OUT/code" \
        SCREENSHOT="$INTEROP_OUTPUT/$name-session-code.png" TIMEOUT_MS=120000 "$@" \
        timeout 200 node "$ROOT/tests/interop/oidc_browser.mjs" >"$NODE_OUT/result.json" 2>"$NODE_OUT/node.log" &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}

sc_oidc_browser() {
    local name=oidc_browser
    oidc_node || { fail $name "npm install failed: $(tail -3 "$T/npm.log" | tr '\n' ' ')"; return; }
    run_browser "$name" MODE=rp ISSUER="$ISSUER" CLIENT_ID=interop-rp CLIENT_SECRET="$OIDC_RP_SECRET" CALLBACK="$IP_RP:9997"
    if ! oidc_reply "$NODE_OUT/code" "$name"; then
        kill "$NODE_PID" 2>/dev/null; fail $name "$OIDC_ERR ($(tail -3 "$NODE_OUT/node.log" | tr '\n' ' '))"; return
    fi
    local rc=0
    wait "$NODE_PID" || rc=$?
    local r; r=$(tail -1 "$NODE_OUT/result.json")
    cp "$NODE_OUT/result.json" "$INTEROP_OUTPUT/$name-result.json" 2>/dev/null
    if [ "$rc" != 0 ]; then fail $name "browser run failed (rc $rc): $r $(tail -5 "$NODE_OUT/node.log" | tr '\n' ' ')"; return; fi
    if ! jq -e --arg a "$ALICE" --arg iss "$ISSUER" '
            .session_code_shown and (.axe_address == []) and (.axe_pending == [])
            and (.page_has_token_address | not) and .state_ok and .iss_ok and (.token_status == 200)
            and (.id_token_alg == "RS256") and .id_token_signature_valid
            and (.claims.email == $a) and .claims.email_verified and (.claims.iss == $iss)
            and (.claims.aud == "interop-rp") and (.claims.nonce == "browser-nonce")
            and (.claims.amr == ["mail-reply"])
            and (.claims.gatekeeper_evidence.dkim_domain == "interieur.gouv.fr")
            and (.claims.gatekeeper_evidence.client_ip == "127.0.0.25")' <<<"$r" >/dev/null 2>&1; then
        fail $name "unexpected result: $r"; return
    fi
    # The challenge token never reached the browser's screen, a URL it saw, or a claim.
    if grep -qiF "$OIDC_TOKEN" "$NODE_OUT/result.json"; then fail $name "the challenge token is in the result"; return; fi
    [ -s "$INTEROP_OUTPUT/$name-session-code.png" ] || { fail $name "no screenshot"; return; }
    pass $name
}

sc_oidc_synapse() {
    local name=oidc_synapse d=$T/synapse v=$OIDC_CACHE/synapse-venv
    oidc_node || { fail $name "npm install failed"; return; }
    oidc_synapse_venv_wait || { fail $name "pip install $SYNAPSE_SPEC failed: $(tail -3 "$T/pip.log" | tr '\n' ' ')"; return; }
    mkdir -p "$d/media"
    cat >"$d/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $d/homeserver.log
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
    cat >"$d/homeserver.yaml" <<EOF
server_name: "matrix.test"
pid_file: "$d/homeserver.pid"
public_baseurl: "http://$IP_SYN:8008/"
listeners:
  - port: 8008
    bind_addresses: ["$IP_SYN"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$d/homeserver.db"
log_config: "$d/log.yaml"
media_store_path: "$d/media"
signing_key_path: "$d/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
macaroon_secret_key: "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
form_secret: "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
enable_metrics: false
sso:
  client_whitelist: ["http://$IP_SYN:9998/"]
oidc_providers:
  - idp_id: gatekeeper
    idp_name: "Adresse professionnelle"
    issuer: "$ISSUER"
    client_id: "matrix"
    client_secret: "$OIDC_SYN_SECRET"
    client_auth_method: client_secret_basic
    scopes: ["openid", "email"]
    pkce_method: always
    # Only because the issuer is plain http on loopback: Synapse requires https otherwise.
    skip_verification: true
    user_mapping_provider:
      config:
        localpart_template: "{{ user.email.split('@')[0] }}"
        email_template: "{{ user.email }}"
EOF
    if ! timeout 60 "$v/bin/python" -m synapse.app.homeserver -c "$d/homeserver.yaml" --generate-keys >"$d/keys.out" 2>&1; then
        fail $name "synapse --generate-keys: $(tail -3 "$d/keys.out" | tr '\n' ' ')"; return
    fi
    (cd "$d" && exec "$v/bin/python" -m synapse.app.homeserver -c "$d/homeserver.yaml") >"$d/synapse.out" 2>&1 &
    local sp=$!
    PIDS+=("$sp")
    if ! wait_until 90 curl -sf -m 2 "http://$IP_SYN:8008/_matrix/client/versions"; then
        fail $name "Synapse did not start: $(tail -5 "$d/synapse.out" "$d/homeserver.log" 2>/dev/null | tr '\n' ' ')"; return
    fi
    local start="http://$IP_SYN:8008/_matrix/client/v3/login/sso/redirect/oidc-gatekeeper?redirectUrl=http%3A%2F%2F$IP_SYN%3A9998%2F"
    run_browser "$name" MODE=synapse START_URL="$start" SYNAPSE="http://$IP_SYN:8008" CALLBACK="$IP_SYN:9998"
    if ! oidc_reply "$NODE_OUT/code" "$name"; then
        kill "$NODE_PID" 2>/dev/null; fail $name "$OIDC_ERR ($(tail -3 "$NODE_OUT/node.log" | tr '\n' ' '))"; return
    fi
    local rc=0
    wait "$NODE_PID" || rc=$?
    local r; r=$(tail -1 "$NODE_OUT/result.json")
    cp "$NODE_OUT/result.json" "$INTEROP_OUTPUT/$name-result.json" 2>/dev/null
    if [ "$rc" != 0 ]; then
        fail $name "browser run failed (rc $rc): $r $(grep -iE 'error|oidc' "$d/homeserver.log" | tail -5 | tr '\n' ' ')"; return
    fi
    if ! jq -e '(.axe_address == []) and (.axe_pending == []) and (.login_status == 200)
            and (.user_id == "@alice:matrix.test") and .has_access_token' <<<"$r" >/dev/null 2>&1; then
        fail $name "unexpected result: $r"; return
    fi
    local threepid
    threepid=$("$v/bin/python" - "$d/homeserver.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for row in db.execute("SELECT user_id, medium, address FROM user_threepids"):
    print("|".join(row))
EOF
)
    if ! grep -qxF "@alice:matrix.test|email|$ALICE" <<<"$threepid"; then
        fail $name "the Matrix account has no email 3pid $ALICE (user_threepids: $threepid)"; return
    fi
    kill "$sp" 2>/dev/null
    pass $name
}
