#!/usr/bin/env bash
# The mixed soak of issue 19 (README "Performance"): one real `gatekeeper serve` on loopback
# for 10 minutes (or --secs S) taking genuine replies, attacks, API calls and SIGHUP / SIGTERM
# / SIGKILL at random moments, restarted after each stop; then checks that every 250 is
# confirmed, every refusal has its event, RSS is flat after the first minute and no file
# descriptor leaks. Not part of the default test run. Exit status 1 if a check fails.
#
# Usage: bash bench/soak.sh [--secs 600] [--repliers 3] [--seed N]
# Env: PROFILE=release (default) or dev (then the debug binary is soaked).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --locked --profile "$PROFILE" --bin gatekeeper --example soak
exec "$TARGET/$DIR/examples/soak" --bin "$TARGET/$DIR/gatekeeper" "$@"
