#!/usr/bin/env bash
# Dreams in `elpis serve` (issue #8, spec §5.6), driven with curl:
#  1. POST /v1/psyche/dream without stream: {dream, theme, memories, stored},
#     and the stored memory has tag `dream` (GET /v1/memories/ID);
#  2. with stream: chat.completion.chunk events, then the summary event, then
#     [DONE]; a bad field is a 400 naming it;
#  3. a chat completion arriving during a streaming dream cancels the dream at
#     once (error event dream_interrupted, [DONE], the log line, the metric)
#     while the chat completes, and the cancelled dream stores nothing;
#  4. the idle dream: with --dream-delay 1 a dream is stored after a request
#     without anyone asking; without --data-dir and --dream-delay it is off.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""; PORT=""; LOG=""; URL=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

start_server() { NAME=$1; shift; serve_start "$NAME" -m "$MODEL" --ctx 4096 "$@"; }
# stop_server: a clean exit (0), and no sanitizer report on stderr
stop_server() {
  serve_stop
  assert_eq "server $NAME exits 0" 0 "$STOP_RC"
  if grep -q 'Sanitizer\|runtime error' "$TMP/$NAME.err"; then bad "server $NAME: no sanitizer report" "$(head -20 "$TMP/$NAME.err")"; fi
}
post() { curl -s -m 60 -H 'Content-Type: application/json' "$URL$1" --data-binary "$2"; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
count_log() { grep -c -- "$1" "$LOG" 2>/dev/null || true; }

# ---- 1. a dream, answered whole ------------------------------------------------------------------------
start_server main --data-dir "$TMP/data"
post /v1/memories '{"content":"We built a treehouse in the garden and watched the rivers from it"}' >/dev/null
R=$(post /v1/psyche/dream '{}')
assert_eq "non-stream: object" "elpis.dream" "$(echo "$R" | jget 'd["object"]')"
assert_eq "non-stream: a dream was generated" "True" "$(echo "$R" | jget 'len(d["dream"]) > 0')"
assert_eq "non-stream: the theme comes from the mood (neutral is excited: exploration)" "exploration" "$(echo "$R" | jget 'd["theme"]')"
assert_eq "non-stream: the stored memory surfaced" "1" "$(echo "$R" | jget 'd["memories"]')"
ID=$(echo "$R" | jget 'd["stored"]')
M=$(curl -s "$URL/v1/memories/$ID")
assert_eq "the dream is stored with tag dream" "True" "$(echo "$M" | jget '"dream" in d["tags"] and any(t.startswith("theme:") for t in d["tags"])')"
assert_contains "the stored dream names its theme" "$(echo "$M" | jget 'd["content"]')" "- exploration] "
if grep -q "dream_gather theme=exploration quadrant=excited .*queries=[6-9]" "$LOG"; then ok "topic queries fire (static 5 + dynamic)"; else bad "topic queries fire" "$(grep dream_gather "$LOG")"; fi
R=$(post /v1/psyche/dream '{"theme":"synthesis","max_tokens":8}')
assert_eq "a requested theme is used" "synthesis" "$(echo "$R" | jget 'd["theme"]')"

# ---- 2. a streamed dream ----------------------------------------------------------------------------------
curl -sN -m 60 "$URL/v1/psyche/dream" -d '{"stream":true,"max_tokens":30}' >"$TMP/s1.sse"
assert_contains "stream: chat.completion.chunk events" "$(head -c 400 "$TMP/s1.sse")" '"object":"chat.completion.chunk"'
TAIL=$(grep '^data: ' "$TMP/s1.sse" | tail -2)
assert_contains "stream: the summary event before [DONE]" "$TAIL" '"object":"elpis.dream"'
assert_contains "stream: ends with [DONE]" "$TAIL" 'data: [DONE]'
SID=$(grep '"object":"elpis.dream"' "$TMP/s1.sse" | sed 's/^data: //' | jget 'd["stored"]')
assert_eq "stream: its dream is stored" "200" "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/memories/$SID")"
R=$(curl -s -w ' %{http_code}' "$URL/v1/psyche/dream" -d '{"max_tokens":"many"}')
assert_eq "a bad field is a 400" "400" "${R##* }"
assert_contains "the 400 names the field" "$R" '"param":"max_tokens"'

# ---- 3. a user's request wakes the server from a dream -----------------------------------------------------
BEFORE=$(count_log "dream_stored")
curl -sN -m 60 "$URL/v1/psyche/dream" -d '{"stream":true,"max_tokens":3500,"ignore_eos":true}' >"$TMP/s2.sse" &
DREAM_CURL=$!
for _ in $(seq 100); do grep -q 'chat.completion.chunk' "$TMP/s2.sse" 2>/dev/null && break; sleep 0.05; done
C=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8}')
assert_eq "the chat completes" "True" "$(echo "$C" | jget 'd["choices"][0]["finish_reason"] in ("stop","length")')"
wait "$DREAM_CURL"
assert_contains "the dream stream ends with the cancel event" "$(grep '^data: ' "$TMP/s2.sse" | tail -2 | head -1)" '"code":"dream_interrupted"'
assert_contains "then [DONE]" "$(tail -2 "$TMP/s2.sse")" 'data: [DONE]'
N=$(grep -c 'chat.completion.chunk' "$TMP/s2.sse")
if [ "$N" -lt 3400 ]; then ok "the dream ended early ($N chunks)"; else bad "the dream ended early" "$N chunks"; fi
if grep -q 'stream_cancelled trace=[0-9a-f]* reason=dream_interrupted' "$LOG"; then ok "log: stream_cancelled reason=dream_interrupted"; else bad "log: stream_cancelled reason=dream_interrupted" "$(tail -5 "$LOG")"; fi
assert_contains "metrics count it" "$(curl -s "$URL/metrics")" 'elpis_requests_cancelled_total{reason="dream_interrupted"} 1'
sleep 0.5
assert_eq "the cancelled dream stored nothing" "$BEFORE" "$(count_log "dream_stored")"
stop_server

# ---- 4. the idle dream ---------------------------------------------------------------------------------------
start_server idle --data-dir "$TMP/data2" --dream-delay 1 --dream-interval 600
assert_eq "no dream before the first request" "0" "$(sleep 2; count_log "dream_start")"
post /v1/memories '{"content":"A quiet evening by the lake"}' >/dev/null
for _ in $(seq 300); do grep -q 'dream_stored' "$LOG" && break; sleep 0.1; done
if grep -q 'dream_start trace=[0-9a-f]* source=idle' "$LOG"; then ok "idle: the server dreams by itself"; else bad "idle: the server dreams by itself" "$(tail -5 "$LOG")"; fi
IID=$(sed -n 's/.* dream_stored .*id=\([0-9a-f-]*\).*/\1/p' "$LOG" | head -1)
assert_eq "idle: the dream is stored with tag dream" "True" "$(curl -s "$URL/v1/memories/$IID" | jget '"dream" in d["tags"]')"
assert_eq "idle: one dream per interval" "1" "$(sleep 1.5; count_log "dream_start")"
stop_server
start_server off
post /v1/memories '{"content":"nothing to dream of"}' >/dev/null
sleep 2
assert_contains "without --data-dir the idle dream is off by default" "$(grep dream_config "$LOG")" "delay=0 "
assert_eq "and nothing dreams" "0" "$(count_log "dream_start")"
stop_server
finish
