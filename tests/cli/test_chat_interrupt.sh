#!/usr/bin/env bash
# Ctrl+C in `elpis chat --plain`: SIGINT during a long reply interrupts it
# (the partial reply is kept, marked "[interrupted]", and the server cancels
# the generation: client_disconnect in its log); the conversation goes on;
# two SIGINTs within 1.5 s while idle quit with exit code 0.
#
# Long replies: stories260K writes ~2,000 tokens/s here, so the server runs
# with --ctx 4096 and the client asks for 4000 tokens with ignore_eos.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""; CLI_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; [ -n "$CLI_PID" ] && kill -KILL "$CLI_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

srv_start server --ctx 4096

wait_for() { for _ in $(seq 100); do "$@" && return 0; sleep 0.05; done; return 1; }
out_bigger_than() { [ "$(stat -c %s "$TMP/out")" -gt "$1" ]; }
alive() { kill -0 "$CLI_PID" 2>/dev/null; }

# The client reads from a fifo held open by this script, so it stays idle between our lines.
# --no-tools: the server would teach the six tools in the system prompt (1354 tokens for the tiny
# model's vocabulary), whose prefill under sanitizers outlasts the 5 s wait for the first output.
mkfifo "$TMP/in"
"$ELPIS_BIN" chat --plain --no-tools --server "http://127.0.0.1:$PORT" --max-tokens 4000 --param ignore_eos=true \
  <"$TMP/in" >"$TMP/out" 2>"$TMP/err" &
CLI_PID=$!
exec 7>"$TMP/in"

echo "Once upon a time" >&7
if wait_for out_bigger_than 200; then ok "reply streams"; else bad "reply streams" "$(cat "$TMP/err")"; fi
kill -INT "$CLI_PID"
if wait_for grep -q 'interrupted' "$TMP/out"; then ok "partial reply marked [interrupted]"; else bad "partial reply marked [interrupted]" "$(tail -c 200 "$TMP/out")"; fi
if wait_for grep -q 'stream_cancelled trace=[0-9a-f]* reason=client_disconnect' "$LOG"; then ok "server cancelled: client_disconnect"
else bad "server cancelled: client_disconnect" "$(tail -5 "$LOG")"; fi
tokens=$(sed -n 's/.* stream_end .*tokens=\([0-9]*\) .*finish=cancelled.*/\1/p' "$LOG" | head -1)
if [ -n "$tokens" ] && [ "$tokens" -lt 4000 ]; then ok "generation stopped early ($tokens of 4000 tokens)"; else bad "generation stopped early" "$tokens"; fi
if alive; then ok "client still running after the interrupt"; else bad "client still running after the interrupt"; fi
partial=$(grep -c . "$TMP/out")

# the conversation goes on: the partial reply is in the history
echo "/status" >&7
if wait_for grep -q '^messages: 2 ' "$TMP/out"; then ok "partial reply kept in the history"; else bad "partial reply kept in the history" "$(tail -c 300 "$TMP/out")"; fi

# one idle Ctrl+C: a notice, no exit; a second one within 1.5 s quits
kill -INT "$CLI_PID"
if wait_for grep -q 'press Ctrl+C again to quit' "$TMP/err"; then ok "idle Ctrl+C: notice"; else bad "idle Ctrl+C: notice" "$(cat "$TMP/err")"; fi
sleep 0.1
if alive; then ok "one idle Ctrl+C does not quit"; else bad "one idle Ctrl+C does not quit"; fi
kill -INT "$CLI_PID"
if wait_for bash -c "! kill -0 $CLI_PID 2>/dev/null"; then ok "double Ctrl+C quits"; else bad "double Ctrl+C quits"; fi
wait "$CLI_PID"; rc=$?; CLI_PID=""
assert_eq "exit code 0 after double Ctrl+C" "0" "$rc"
exec 7>&-
if [ "$partial" -ge 1 ]; then ok "partial reply printed"; else bad "partial reply printed"; fi

finish
