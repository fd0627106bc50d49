#!/usr/bin/env bash
# The official `openai` npm client (tests/node, pinned by package-lock.json)
# against the real `elpis serve`: streaming, non-streaming, the usage chunk,
# error mapping, `break` out of a stream (the server must log
# client_disconnect and free the slot), and a superseded stream.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
NODE_DIR="$(cd "$(dirname "$0")/../node" && pwd)"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || { bad "node and npm installed"; finish; exit 1; }

if [ ! -d "$NODE_DIR/node_modules/openai" ]; then
  (cd "$NODE_DIR" && timeout 300 npm ci --silent --no-audit --no-fund) >"$TMP/npm.log" 2>&1 ||
    { bad "npm ci in tests/node" "$(tail -5 "$TMP/npm.log")"; finish; exit 1; }
fi

LOG="$TMP/server.log"
KEY="node-test-key"
SRV_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
srv_start server --ctx 4096 --api-key "$KEY"

(cd "$NODE_DIR" && ELPIS_URL="http://127.0.0.1:$PORT" ELPIS_LOG="$LOG" ELPIS_API_KEY="$KEY" \
  timeout 300 node --test --test-reporter=spec openai.test.mjs) >"$TMP/node.out" 2>&1
rc=$?
cat "$TMP/node.out"
assert_eq "node --test passes" 0 "$rc"

kill -TERM "$SRV_PID"
for _ in $(seq 300); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$SRV_PID" 2>/dev/null
wait "$SRV_PID"; rc=$?
SRV_PID=""
assert_eq "server exits 0 on SIGTERM" 0 "$rc"
finish
