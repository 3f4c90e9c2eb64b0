#!/usr/bin/env bash
# The OpenID Provider's benchmark (README, "Performance"): N complete sign-ins against a
# release `gatekeeper serve` child on loopback, in phases (page, reply, poll, token), with the
# server's CPU per phase from /proc. The load tool is examples/oidc_load.rs; its last line is
# the summary.
#
# Usage, from anywhere in the repository:   bash bench/oidc.sh
# Env (optional): BENCH_SIGNINS (500), BENCH_CONCURRENCY (20), BENCH_KEEP=1 keeps the temp dir.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T=$(mktemp -d /tmp/gk-oidc-bench.XXXXXX)
cleanup() { if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi; }
trap cleanup EXIT

timeout 1200 cargo build --locked --release --bin gatekeeper --example oidc_load >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)" >&2
"${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/oidc_load" --dir "$T" \
    --gatekeeper "${CARGO_TARGET_DIR:-$ROOT/target}/release/gatekeeper" \
    --n "${BENCH_SIGNINS:-500}" --concurrency "${BENCH_CONCURRENCY:-20}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
