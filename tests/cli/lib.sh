# lib.sh -- helpers for the shell tests that drive the real `elpis` binary.
# Each test script sources this, calls `check NAME CMD...` or the assert_*
# helpers, and ends with `finish`, which prints "NAME: N passed, M failed"
# and exits non-zero if anything failed.
set -uo pipefail
: "${ELPIS_BIN:?ELPIS_BIN must point at the elpis binary (ctest sets it)}"
: "${ELPIS_SHARED:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../shared" && pwd)}"
SUITE=$(basename "$0" .sh)
PASSED=0; FAILED=0
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# serve and mcp keep their state in $XDG_DATA_HOME/elpis by default: never the user's
export XDG_DATA_HOME="$TMP/xdg"

ok()   { PASSED=$((PASSED + 1)); echo "ok   $1"; }
bad()  { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+: $2}"; }

# assert_eq NAME EXPECTED ACTUAL
assert_eq() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1" "expected [$2] got [$3]"; fi; }
# assert_contains NAME HAYSTACK NEEDLE
assert_contains() { if [[ "$2" == *"$3"* ]]; then ok "$1"; else bad "$1" "[$3] not in [$2]"; fi; }

finish() {
  echo "$SUITE: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
}
