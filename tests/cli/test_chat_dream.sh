#!/usr/bin/env bash
# Dreams in the full-screen `elpis chat` (issue #8), driven in tmux
# (send-keys, capture-pane) against its in-process server (-m, --data-dir):
#  1. after --dream-delay 2 idle seconds a dream streams into the thought
#     panel after "[dream]", with "dreaming" in the sidebar, ends normally
#     and is stored as a memory with tag `dream`;
#  2. a key pressed while the next dream streams ends it at once: the
#     transfer is aborted, the server logs the dream's stream_cancelled
#     (client_disconnect), the panel says so, the key reaches the input line,
#     and the cancelled dream is not stored;
#  3. /dream dreams on demand through the same path;
#  4. plain mode dreams only with an explicit --dream-delay (to stderr), and
#     a piped message still gets its reply and exit 0 without one.
# The dreams run long (--param ignore_eos=true, --max-tokens 1500) so that a
# key reliably lands inside one; every wait is bounded, generously enough for
# a sanitizer build.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
command -v tmux >/dev/null || { bad "tmux present"; finish; exit 1; }
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SOCK="elpis-dream-test-$$"
cleanup() { tmux -L "$SOCK" kill-server 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
screen() { tm capture-pane -t chat -p; }
type_line() { tm send-keys -t chat -l "$1"; tm send-keys -t chat Enter; }
wait_screen() { for _ in $(seq $(( ${2:-10} * 10 ))); do screen | grep -qF -- "$1" && return 0; sleep 0.1; done; return 1; }
expect_screen() { if wait_screen "$2" "${3:-10}"; then ok "$1"; else bad "$1" "[$2] not on screen:
$(screen)"; fi; }
LOG="$TMP/chat-server.log"
count_log() { grep -c -- "$1" "$LOG" 2>/dev/null || true; }
# wait_log PATTERN COUNT SECONDS: until PATTERN occurs COUNT times in the server log
wait_log() { for _ in $(seq $(( $3 * 10 ))); do [ "$(count_log "$1")" -ge "$2" ] && return 0; sleep 0.1; done; return 1; }
expect_log() { if wait_log "$2" "${3:-1}" "${4:-30}"; then ok "$1"; else bad "$1" "[$2] x${3:-1} not in the log:
$(tail -5 "$LOG")"; fi; }

tm new-session -d -s chat -x 110 -y 34 \
  "env LANG=C.UTF-8 LC_ALL=C.UTF-8 '$ELPIS_BIN' chat -m '$MODEL' -c 4096 --data-dir '$TMP/data' --log-file '$LOG' \
   --dream-delay 2 --max-tokens 1500 --param ignore_eos=true; echo EXIT=\$?; sleep 60"
expect_screen "ui starts" "Type your message" 30

# ---- 1. an idle dream -------------------------------------------------------------------------------------------
expect_screen "a dream appears in the thought panel" "[dream] " 60
expect_screen "the sidebar says dreaming" "dreaming" 10
expect_log "the server ran it as a dream" "dream_start trace=[0-9a-f]* source=route" 1 5
expect_log "the dream ends normally" "dream_end trace=[0-9a-f]* .*finish=done" 1 180
expect_log "the dream is stored" "dream_stored trace=" 1 20
expect_screen "the thought panel is open" "thoughts ─"

# ---- 2. a key ends a running dream -------------------------------------------------------------------------------
tm send-keys -t chat -l "x"   # activity: the idle clock starts again
expect_log "a second dream starts after the delay" "dream_start trace=" 2 30
tm send-keys -t chat -l "y"   # at once: the dream has just begun (its 1500 tokens take seconds)
TRACE=$(sed -n 's/.* dream_start trace=\([0-9a-f]*\).*/\1/p' "$LOG" | sed -n 2p)
expect_screen "the panel marks the interrupted dream" "[dream interrupted]" 10
expect_screen "the key still reaches the input line" "> xy" 5
expect_log "the server cancels that dream (client_disconnect)" "stream_cancelled trace=$TRACE reason=client_disconnect" 1 10
expect_log "its dream_end says cancelled" "dream_end trace=$TRACE .*finish=cancelled" 1 10
assert_eq "the cancelled dream is not stored" "0" "$(count_log "dream_stored trace=$TRACE")"

# ---- 3. /dream, then quit -------------------------------------------------------------------------------------------
tm send-keys -t chat C-u
N0=$(count_log "dream_start trace=")
type_line '/dream'
expect_log "/dream dreams now" "dream_start trace=" $((N0 + 1)) 10
LAST=$(sed -n 's/.* dream_start trace=\([0-9a-f]*\).*/\1/p' "$LOG" | tail -1)
expect_log "/dream's dream ends and is stored" "dream_stored trace=$LAST" 1 180
tm send-keys -t chat C-c
sleep 0.2
tm send-keys -t chat C-c
expect_screen "Ctrl+C twice quits with 0" "EXIT=0" 15

N=$("$ELPIS_BIN" memory --data-dir "$TMP/data" --no-model list -n 0 --json 2>"$TMP/mem.err" |
    python3 -c 'import json,sys; print(sum("dream" in json.loads(l)["tags"] for l in sys.stdin if l.strip()))')
assert_eq "memories with tag dream in --data-dir: one per finished dream" "$(count_log 'dream_end trace=.*finish=done')" "$N"
if [ "$N" -ge 2 ]; then ok "at least the idle dream and /dream's are stored"; else bad "at least two dreams stored" "$N"; fi

# ---- 4. plain mode ----------------------------------------------------------------------------------------------------
OUT=$(echo hello | timeout 60 "$ELPIS_BIN" chat --plain -m "$MODEL" --data-dir "$TMP/data" --log-file "$TMP/p1.log" --max-tokens 16 2>"$TMP/p1.err"); rc=$?
assert_eq "plain, piped, no --dream-delay: exit 0" 0 "$rc"
if [ -n "$OUT" ]; then ok "plain: the reply is printed"; else bad "plain: the reply is printed" "$(cat "$TMP/p1.err")"; fi
if grep -q dream_start "$TMP/p1.log"; then bad "plain: no dream without --dream-delay"; else ok "plain: no dream without --dream-delay"; fi
mkfifo "$TMP/in"
timeout 120 "$ELPIS_BIN" chat --plain -m "$MODEL" --data-dir "$TMP/data" --log-file "$TMP/p2.log" \
  --dream-delay 1 --max-tokens 16 <"$TMP/in" >/dev/null 2>"$TMP/p2.err" &
PLAIN=$!
exec 3>"$TMP/in"   # the writer stays open: no EOF, the chat waits idle
for _ in $(seq 900); do grep -q 'dream_end' "$TMP/p2.log" 2>/dev/null && break; sleep 0.1; done
echo /quit >&3; exec 3>&-
wait "$PLAIN"; rc=$?
assert_eq "plain with --dream-delay 1: exit 0" 0 "$rc"
assert_contains "plain with --dream-delay 1: a dream on stderr" "$(cat "$TMP/p2.err")" "[dream] "
finish
