#!/usr/bin/env bash
# The API flood of issue 19 (README "Performance"): 10,000 requests a second without a valid
# token for 10 s against the daemon, genuine confirmations meanwhile. Loopback only
# (127.0.0.1, 127.0.0.2); everything runs inside one process (examples/api_flood.rs), which
# exits at the end. Not part of the default test run; tests/abuse.rs is its 1.5 s version.
#
# Usage: bash bench/api_flood.sh [--rate N] [--secs S] [--connections C] [--confirmations K]
# Env: PROFILE=release (default) or dev.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
cargo run --locked --profile "$PROFILE" --example api_flood -- "$@"
