#!/usr/bin/env bash
# The test command of the README: installs the Debian packages the tests need (.ci/packages:
# rsyslog for the SIEM tests, systemd tools for the service tests, ...) when one is missing,
# then runs `cargo test --locked` with any arguments given (e.g. `--test siem`).
#
# Installing needs root (apt-get); when every package is present nothing is installed and any
# user can run it. `--install-only` stops after the packages (.ci/run's first stage).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

# Packages from .ci/packages, one per line; '#' starts a comment, blank lines are ignored.
listed_packages() {
    local line
    while IFS= read -r line || [[ -n "$line" ]]; do
        line=${line%%#*}
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        if [[ -n "$line" ]]; then
            echo "$line"
        fi
    done < .ci/packages
}

install_missing() {
    local missing=()
    local package
    while IFS= read -r package; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done < <(listed_packages)
    if ((${#missing[@]} == 0)); then
        echo "test packages: all installed"
        return 0
    fi
    echo "test packages missing: ${missing[*]}"
    if ((EUID != 0)); then
        echo "installing them needs root: run this as root (or install them with apt-get)" >&2
        exit 1
    fi
    apt-get update </dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
}

install_missing
if [[ "${1:-}" == "--install-only" ]]; then
    exit 0
fi
exec cargo test --locked "$@"
