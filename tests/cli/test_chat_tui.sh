#!/usr/bin/env bash
# The full-screen `elpis chat`, driven in tmux (send-keys, capture-pane):
#  1. against `elpis serve` with stories260K: a reply streams into the chat
#     view, Ctrl+C mid-reply stops it (marked, and the server logs
#     client_disconnect), /emotion and /status answer, Ctrl+C twice quits;
#  2. against the scripted fake server (chat_fake_server.mjs): a tool call
#     runs list_directory and its result returns to the model, ../outside is
#     refused, execute_bash asks for confirmation, thoughts show in the
#     thought panel, the sidebar shows the emotion bars.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
command -v tmux >/dev/null || { bad "tmux present"; finish; exit 1; }
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }
NODE=$(command -v node) || { bad "node present"; finish; exit 1; }

SOCK="elpis-chat-test-$$"
SRV_PID=""; FAKE_PID=""
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null
  [ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
screen() { tm capture-pane -t chat -p; }
type_line() { tm send-keys -t chat -l "$1"; tm send-keys -t chat Enter; }   # -l: "escape" is text, not the key
# wait_screen NEEDLE [SECONDS]: until the screen shows NEEDLE
wait_screen() { for _ in $(seq $(( ${2:-10} * 10 ))); do screen | grep -qF -- "$1" && return 0; sleep 0.1; done; return 1; }
expect_screen() { if wait_screen "$2" "${3:-10}"; then ok "$1"; else bad "$1" "[$2] not on screen:
$(screen)"; fi; }
# start_chat ARGS...: elpis chat in a 110x34 tmux window; the exit code is printed when it ends
# (the new window opens before the old one closes: killing a server's last session makes it exit, and a
# new-session racing that exit failed once with "server exited unexpectedly")
start_chat() {
  tm new-session -d -s next -x 110 -y 34 \
    "env LANG=C.UTF-8 LC_ALL=C.UTF-8 '$ELPIS_BIN' chat $*; echo EXIT=\$?; sleep 60"
  tm kill-session -t chat 2>/dev/null
  tm rename-session -t next chat
  expect_screen "ui starts" "Type your message"
}

mkdir -p "$TMP/ws/sub" "$TMP/outside"
printf 'line one\n' >"$TMP/ws/a.txt"
echo "TOP SECRET" >"$TMP/outside/secret.txt"

# ---- 1. the real server ------------------------------------------------------------------------------------------
srv_start server --ctx 4096

start_chat --server "http://127.0.0.1:$PORT" --workspace "'$TMP/ws'" --max-tokens 4000 --param ignore_eos=true
expect_screen "header names the model" "llama @ http://127.0.0.1:$PORT"
expect_screen "sidebar" "Status"
type_line 'Once upon a time'
expect_screen "the message shows" "Once upon a time"
expect_screen "a reply streams" "Assistant:"
for _ in $(seq 100); do grep -q 'stream_start' "$LOG" && break; sleep 0.05; done
sleep 0.3
tm send-keys -t chat C-c
expect_screen "Ctrl+C marks the partial reply" "[interrupted]"
if grep -q 'stream_cancelled trace=[0-9a-f]* reason=client_disconnect' "$LOG"; then ok "Ctrl+C: server logs client_disconnect"
else sleep 1; if grep -q 'reason=client_disconnect' "$LOG"; then ok "Ctrl+C: server logs client_disconnect"; else bad "Ctrl+C: server logs client_disconnect" "$(tail -3 "$LOG")"; fi; fi
type_line '/status'
expect_screen "/status after the interrupt: the partial reply is kept" "messages: 2 (replies 0, tool calls 0)"
type_line '/emotion'
if wait_screen "valence  [" 5 || wait_screen "emotion: not available" 1; then ok "/emotion answers (bars, or not available)"; else bad "/emotion answers" "$(screen)"; fi
type_line '/thoughts on'
expect_screen "/thoughts on opens the thought panel" "thoughts ─"
tm send-keys -t chat C-c
expect_screen "one idle Ctrl+C: notice" "Press Ctrl+C again to quit"
tm send-keys -t chat C-c
expect_screen "Ctrl+C twice quits with 0" "EXIT=0"
kill -TERM "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; SRV_PID=""

# ---- 2. tools, confirmation, thoughts, emotion with the scripted server ----------------------------------------------
"$NODE" "$(dirname "$0")/chat_fake_server.mjs" "$TMP/port" "$TMP/fake.log" 2>"$TMP/fake.err" &
FAKE_PID=$!
for _ in $(seq 100); do [ -f "$TMP/port" ] && break; sleep 0.1; done
[ -f "$TMP/port" ] || { bad "fake server starts" "$(cat "$TMP/fake.err")"; finish; exit 1; }
start_chat --server "http://127.0.0.1:$(cat "$TMP/port")" --workspace "'$TMP/ws'"
expect_screen "sidebar: emotion from the server" "V [#####-----] +0.00"
type_line 'list'
expect_screen "list_directory ran, result returned to the model" "Done after 1 tool results."
expect_screen "sidebar: tool activity" "OK  Listing ."
if grep -qF '"name":"list_directory","content":"{\"tool_call_id\"' "$TMP/fake.log" &&
   grep -q 'a.txt' "$TMP/fake.log"; then ok "the tool message reached the server"; else bad "the tool message reached the server" "$(tail -c 600 "$TMP/fake.log")"; fi
type_line 'escape'
expect_screen "../outside is refused" "'..' is not allowed"
expect_screen "sidebar: refused tool marked" "!!  Reading ../outside"
type_line 'bash'
expect_screen "execute_bash asks first" "Allow execute_bash: \$ echo from-bash > made.txt ? [y/N]"
if [ ! -e "$TMP/ws/made.txt" ]; then ok "nothing ran before the answer"; else bad "nothing ran before the answer"; fi
tm send-keys -t chat y
for _ in $(seq 50); do [ -e "$TMP/ws/made.txt" ] && break; sleep 0.1; done
assert_eq "after y the command ran in the workspace" "from-bash" "$(cat "$TMP/ws/made.txt" 2>/dev/null)"
expect_screen "sidebar: the emotion moved after tool outcomes" "V [######----] +0.10"
expect_screen "the bash turn ends" "Done after 3 tool results."
tm send-keys -t chat C-t
type_line 'think'
expect_screen "the thought panel shows the reasoning" "The user wants a thought."
expect_screen "the answer shows without tags" "The answer is 42."
if screen | grep -q '<reasoning>'; then bad "no reasoning tags on screen"; else ok "no reasoning tags on screen"; fi
type_line 'hist-one'
expect_screen "plain reply" "Hello from the fake server."
tm send-keys -t chat Up
expect_screen "Up recalls the last line" "> hist-one"
tm send-keys -t chat C-u
type_line '/quit'
expect_screen "/quit exits 0" "EXIT=0"

finish
