#!/usr/bin/env bash
# `elpis chat` in plain line mode against a real `elpis serve` (stories260K):
# a two-turn conversation in one session, the commands, the in-process
# server (-m), and the errors a script sees (no server, bad options).
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

LOG="$TMP/server.log"
"$ELPIS_BIN" serve -m "$MODEL" --host 127.0.0.1 --port 0 --log-file "$LOG" 2>"$TMP/server.err" &
SRV_PID=$!
for _ in $(seq 300); do grep -q ' server_start ' "$LOG" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/.* server_start .*port=\([0-9]*\).*/\1/p' "$LOG" | head -1)
[ -n "$PORT" ] || { bad "server starts" "$(cat "$TMP/server.err")"; finish; exit 1; }
URL="http://127.0.0.1:$PORT"
mkdir -p "$TMP/ws"

# ---- two turns, commands in between --------------------------------------------------------------
printf 'Once upon a time\n/status\nTell me more\n/status\n/thoughts on\n/help\n/nonsense\n' |
  "$ELPIS_BIN" chat --server "$URL" --workspace "$TMP/ws" --max-tokens 30 >"$TMP/out" 2>"$TMP/err"
assert_eq "conversation exits 0" "0" "$?"
OUT=$(cat "$TMP/out")
assert_contains "first /status: one exchange" "$OUT" "messages: 2 (replies 1, tool calls 0)"
assert_contains "second /status: two exchanges" "$OUT" "messages: 4 (replies 2, tool calls 0)"
assert_contains "/status names the server" "$OUT" "server: $URL (ok"
assert_contains "/status names the model" "$OUT" "model: llama"
assert_contains "/status shows the workspace" "$OUT" "workspace: $(cd "$TMP/ws" && pwd -P) (tools on, confirmations on)"
assert_contains "/thoughts on" "$OUT" "thoughts: on"
assert_contains "/help lists commands" "$OUT" "/remember TEXT"
assert_contains "unknown command on stderr" "$(cat "$TMP/err")" "unknown command /nonsense"
# the replies are the lines before each /status block
reply1=$(sed -n '1p' "$TMP/out"); reply2=$(sed -n '/^thoughts: off$/{n;p;q}' "$TMP/out")
if [ -n "$reply1" ] && [[ "$reply1" != server:* ]]; then ok "first reply printed"; else bad "first reply printed" "$OUT"; fi
if [ -n "$reply2" ] && [[ "$reply2" != server:* ]]; then ok "second reply printed"; else bad "second reply printed" "$OUT"; fi
SESSION=$(sed -n 's/^session: //p' "$TMP/out" | head -1)
assert_eq "one session id throughout" "1" "$(sed -n 's/^session: //p' "$TMP/out" | sort -u | wc -l)"
assert_eq "both requests carried X-Session-Id" "2" "$(grep -c "stream_start trace=[0-9a-f]* session=$SESSION\$" "$LOG")"

# ---- /clear starts a new session; server features that are missing are reported ---------------------------
printf '/status\n/clear\n/status\n/emotion\n/memory search cats\n/remember cats purr\n/dream\n/quit\nnot sent\n' |
  "$ELPIS_BIN" chat --server "$URL" --plain >"$TMP/out2" 2>"$TMP/err2"
assert_eq "/quit exits 0" "0" "$?"
assert_eq "/clear draws a new session id" "2" "$(sed -n 's/^session: //p' "$TMP/out2" | sort -u | wc -l)"
assert_contains "/clear says so" "$(cat "$TMP/out2")" "conversation cleared"
# each either works (the route exists) or says "not available on this server"; never a client failure
either() {   # NAME STDOUT-NEEDLE STDERR-NEEDLE
  if grep -qF -- "$2" "$TMP/out2" || grep -qF -- "$3" "$TMP/err2"; then ok "$1"; else bad "$1" "$(cat "$TMP/out2" "$TMP/err2")"; fi
}
either "/emotion: bars or not available" "valence  [" "emotion: not available on this server"
either "/memory search: hits or not available" "no memories found" "memory: not available on this server"
either "/remember: stored or not available" "remembered" "remember: memories are not available on this server"
either "/dream: a dream or not available" "[dream]" "dream: not available on this server"
assert_eq "nothing sent after /quit" "0" "$(grep -c 'not sent' "$LOG")"

# ---- in-process server: echo hello | elpis chat --plain -m MODEL -------------------------------------------
out=$(echo hello | "$ELPIS_BIN" chat --plain -m "$MODEL" --log-file "$TMP/inproc.log" --max-tokens 20 2>"$TMP/err3")
assert_eq "in-process: exit 0" "0" "$?"
if [ -n "$out" ]; then ok "in-process: a reply"; else bad "in-process: a reply" "$(cat "$TMP/err3")"; fi
assert_contains "in-process: private key" "$(cat "$TMP/inproc.log")" "auth=on"
assert_contains "in-process: loopback" "$(cat "$TMP/inproc.log")" "server_start host=127.0.0.1"
assert_contains "in-process: drained on exit" "$(cat "$TMP/inproc.log")" "shutdown_done"

# ---- errors --------------------------------------------------------------------------------------------
echo hi | "$ELPIS_BIN" chat --server http://127.0.0.1:1 >/dev/null 2>"$TMP/err4"
assert_eq "no server: exit 1" "1" "$?"
assert_contains "no server: says why" "$(cat "$TMP/err4")" "cannot use the server"
"$ELPIS_BIN" chat --bogus </dev/null >/dev/null 2>"$TMP/err5"
assert_eq "bad option: exit 2" "2" "$?"
"$ELPIS_BIN" chat --server ftp://x </dev/null >/dev/null 2>&1
assert_eq "bad URL: exit 2" "2" "$?"
"$ELPIS_BIN" chat --server "$URL" -m "$MODEL" </dev/null >/dev/null 2>&1
assert_eq "--server with -m: exit 2" "2" "$?"
"$ELPIS_BIN" chat --help >"$TMP/help"
assert_eq "--help exits 0" "0" "$?"
assert_contains "--help lists --workspace" "$(cat "$TMP/help")" "--workspace DIR"

finish
