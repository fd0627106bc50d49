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

# ---- `elpis serve` helpers (tests that need one server at a time) -----------------------------------
# serve_start NAME ARGS...: `elpis serve ARGS` on a free loopback port with the event log $TMP/NAME.log
#   (appended to on a restart); sets SRV_PID, PORT, URL, LOG (the test kills SRV_PID in its EXIT trap).
#   Fails the suite if it does not start.
# srv_start NAME ARGS...: the same with the tiny model (-m stories260K).
# serve_stop / srv_stop: SIGTERM, at most 30 s for the drain, then SIGKILL; STOP_RC is its exit code.
# http METHOD PATH [BODY]: prints "BODY STATUS"; status_of / body_of split it.
# jget JSON EXPR: a field (node), e.g. jget "$r" .elpis.memories
SRV_PID=""; LOG=""; URL=""; PORT=""
serve_start() {
  local name=$1; shift
  LOG="$TMP/$name.log"
  local before; before=$(grep -c ' server_start ' "$LOG" 2>/dev/null); before=${before:-0}
  "$ELPIS_BIN" serve --host 127.0.0.1 --port 0 --log-file "$LOG" "$@" 2>"$TMP/$name.err" &
  SRV_PID=$!
  for _ in $(seq 300); do   # a restart appends to the same log: wait for a new line
    [ "$(grep -c ' server_start ' "$LOG" 2>/dev/null)" -gt "$before" ] 2>/dev/null && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  PORT=$(sed -n 's/.* server_start .*port=\([0-9]*\).*/\1/p' "$LOG" 2>/dev/null | tail -1)
  URL="http://127.0.0.1:$PORT"
  [ -n "$PORT" ] || { bad "server $name starts" "$(cat "$TMP/$name.err")"; finish; exit 1; }
}
srv_start() { local name=$1; shift; serve_start "$name" -m "$ELPIS_SHARED/models/stories260K.gguf" "$@"; }
serve_stop() {
  kill -TERM "$SRV_PID" 2>/dev/null
  for _ in $(seq 300); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SRV_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null; STOP_RC=$?
  SRV_PID=""
}
srv_stop() { serve_stop; }
http() {
  if [ -n "${3-}" ]; then curl -s -X "$1" -w ' %{http_code}' -H 'Content-Type: application/json' "$URL$2" --data-binary "$3"
  else curl -s -X "$1" -w ' %{http_code}' "$URL$2"; fi
}
status_of() { echo "${1##* }"; }
body_of() { echo "${1% *}"; }
jget() { node -e 'const d=JSON.parse(process.argv[1]); const v=eval("d"+process.argv[2]);
  console.log(typeof v === "string" ? v : JSON.stringify(v))' "$1" "$2"; }
