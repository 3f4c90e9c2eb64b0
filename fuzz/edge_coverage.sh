#!/usr/bin/env bash
# Edge coverage per source file of gatekeeper reached by a target's corpus, from the
# instrumented fuzz binary itself (libFuzzer's -print_coverage=1 over the corpus, no new
# inputs): for each file of src/, edges covered / edges in the functions the binary holds.
# Needs llvm-symbolizer (Debian llvm-22: /usr/lib/llvm-22/bin). Usage:
#   ./edge_coverage.sh <target> [src-path-prefix ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target="$1"
shift
export PATH="/usr/lib/llvm-22/bin:$PATH"
bin="target/x86_64-unknown-linux-gnu/release/$target"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$bin" -runs=0 -print_coverage=1 "corpus/$target" >"$log" 2>&1
root="$(cd .. && pwd)/"
grep -E '^(UN)?COVERED_FUNC' "$log" | awk -v root="$root" '
{
    # COVERED_FUNC: hits: H edges: C/T name path:line   |   UNCOVERED_FUNC: hits: 0 edges: 0/T ...
    split($5, e, "/");
    loc = $NF; sub(/:[0-9]+$/, "", loc);
    if (index(loc, root "src/") != 1) next;
    file = substr(loc, length(root) + 1);
    cov[file] += e[1]; tot[file] += e[2];
}
END { for (f in tot) printf "%s %d %d %.1f\n", f, cov[f], tot[f], tot[f] ? 100 * cov[f] / tot[f] : 0 }
' | sort | { if [[ $# -gt 0 ]]; then grep -E "^($(IFS='|'; echo "$*"))"; else cat; fi; }
