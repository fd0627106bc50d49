#!/usr/bin/env bash
# `elpis serve` streaming acceptance, driven with curl against the real binary:
# the five scenarios of the original streaming test plan (issue 3), the queue
# (503, pings, disconnect while queued) and the SIGTERM drain.
#
# Long streams: stories260K writes 2,000 tokens in about a second here, so
# the streams that must still be running when something happens to them use
# --ctx 4096 and max_tokens 4000 with ignore_eos (several seconds).
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""; PORT=""; LOG=""; URL=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT



# chat OUT HEADERS JSON [curl args...]: a streaming chat request (blocking).
chat() {
  local out=$1 hdr=$2 body=$3; shift 3
  curl -sN -D "$hdr" -H 'Content-Type: application/json' "$@" "$URL/v1/chat/completions" -d "$body" >"$out"
}
trace_of() { tr -d '\r' <"$1" | sed -n 's/^[Xx]-[Tt]race-[Ii]d: //p' | head -1; }
line_of() { grep -n -m1 -- "$1" "$LOG" | cut -d: -f1; }   # first log line number matching
metric() { curl -s "$URL/metrics" | sed -n "s/^$1 //p"; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }
# wait_for CMD...: up to 10 s until CMD succeeds
wait_for() { for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done; return 1; }
running_is_zero() { [ "$(metric elpis_requests_running)" = "0" ] && [ "$(metric elpis_kv_cells_used)" = "0" ]; }
ends_with_done() { tail -c 14 "$1" | cmp -s - <(printf 'data: [DONE]\n\n'); }

LONG='"max_tokens":4000,"ignore_eos":true,"stream":true'

srv_start main --ctx 4096 --parallel 4 --queue 8

# ---- 1. normal streaming -----------------------------------------------------------
chat "$TMP/s1" "$TMP/h1" '{"prompt":"Once upon a time","max_tokens":60,"stream":true}'
assert_contains "1: status 200" "$(head -1 "$TMP/h1")" "200"
assert_contains "1: event-stream" "$(grep -i '^content-type' "$TMP/h1")" "text/event-stream"
assert_contains "1: role in the first delta" "$(head -1 "$TMP/s1")" '"delta":{"role":"assistant","content":""}'
if [ "$(grep -c '"delta":{"content":' "$TMP/s1")" -ge 1 ]; then ok "1: content deltas"; else bad "1: content deltas"; fi
if grep -q '"finish_reason":"\(stop\|length\)"' "$TMP/s1"; then ok "1: finish_reason"; else bad "1: finish_reason" "$(tail -3 "$TMP/s1")"; fi
if ends_with_done "$TMP/s1"; then ok "1: ends with data: [DONE]"; else bad "1: ends with data: [DONE]" "$(tail -c 80 "$TMP/s1")"; fi
assert_eq "1: no usage without include_usage" "0" "$(grep -c 'usage' "$TMP/s1")"
bad_frames=$(grep -v -e '^data: ' -e '^$' "$TMP/s1" | wc -l)
assert_eq "1: only data: lines and blank separators" "0" "$bad_frames"
T1=$(trace_of "$TMP/h1")
assert_contains "1: completion id is the trace" "$(head -1 "$TMP/s1")" "\"id\":\"chatcmpl-$T1\""
wait_for grep -q "stream_end trace=$T1 " "$LOG"
assert_contains "1: logged stream_start" "$(cat "$LOG")" "stream_start trace=$T1 session=-"
assert_contains "1: logged stream_end" "$(grep "stream_end trace=$T1" "$LOG")" "finish="

# ---- 2. the client stops after 2 s -> client_disconnect, slot freed -----------------------------
chat "$TMP/s2" "$TMP/h2" "{\"prompt\":\"Once upon a time\",$LONG}" --max-time 2
T2=$(trace_of "$TMP/h2")
if [ "$(grep -c '"content"' "$TMP/s2")" -gt 5 ]; then ok "2: was streaming when stopped"; else bad "2: was streaming when stopped"; fi
if ! grep -q 'DONE' "$TMP/s2"; then ok "2: stream was cut before its end"; else bad "2: stream was cut before its end" "finished within 2 s"; fi
if wait_for grep -q "stream_cancelled trace=$T2 reason=client_disconnect" "$LOG"; then ok "2: logged client_disconnect"
else bad "2: logged client_disconnect" "$(grep "$T2" "$LOG")"; fi
if wait_for running_is_zero; then ok "2: slot and KV cells freed"; else bad "2: slot and KV cells freed" "$(curl -s "$URL/metrics" | grep -e running -e kv_cells_used)"; fi
assert_contains "2: cancellation counted" "$(curl -s "$URL/metrics")" 'elpis_requests_cancelled_total{reason="client_disconnect"} 1'

# the same for a non-stream request: its client waits silently, the watcher sees it leave (ollama #11889)
curl -s -D "$TMP/h2n" -o /dev/null --max-time 1 -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d '{"prompt":"Once upon a time","max_tokens":4000,"ignore_eos":true}'
T2N=$(trace_of "$TMP/h2n")
[ -n "$T2N" ] || T2N=$(sed -n 's/.*stream_start trace=\([0-9a-f]*\) .*/\1/p' "$LOG" | tail -1)
if wait_for grep -q "stream_cancelled trace=$T2N reason=client_disconnect" "$LOG"; then ok "2: non-stream client leaving is cancelled"
else bad "2: non-stream client leaving is cancelled" "$(grep "$T2N" "$LOG")"; fi
if wait_for running_is_zero; then ok "2: non-stream slot freed"; else bad "2: non-stream slot freed"; fi

# ---- 3. B 100 ms after A in the same session -----------------------------------------------------
chat "$TMP/s3a" "$TMP/h3a" "{\"prompt\":\"Once upon a time\",$LONG}" -H 'X-Session-Id: sess-3' &
PA=$!
sleep 0.1
t0=$(date +%s%N)
chat "$TMP/s3b" "$TMP/h3b" '{"prompt":"Tell me a story","max_tokens":30,"stream":true}' -H 'X-Session-Id: sess-3'
t_b=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$PA"
TA=$(trace_of "$TMP/h3a"); TB=$(trace_of "$TMP/h3b")
assert_contains "3: A ends with the superseded error" "$(grep '"error"' "$TMP/s3a")" '"type":"request_cancelled","param":null,"code":"superseded"'
if ends_with_done "$TMP/s3a"; then ok "3: A ends with [DONE]"; else bad "3: A ends with [DONE]" "$(tail -c 200 "$TMP/s3a")"; fi
if grep -q '"finish_reason":"\(stop\|length\)"' "$TMP/s3b" && ends_with_done "$TMP/s3b"; then ok "3: B answered completely"
else bad "3: B answered completely" "$(tail -c 300 "$TMP/s3b")"; fi
# A alone would run for 5-8 s (x10 under sanitizers): B must not wait for it.
PROMPT_MS=$([ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && echo 30000 || echo 5000)
if [ "$t_b" -lt "$PROMPT_MS" ]; then ok "3: B answered promptly (${t_b} ms)"; else bad "3: B answered promptly" "${t_b} ms (limit $PROMPT_MS)"; fi
wait_for grep -q "stream_end trace=$TB " "$LOG"
seq3=(
  "$(line_of "stream_start trace=$TA session=sess-3")"
  "$(line_of "stream_start trace=$TB session=sess-3")"
  "$(line_of "stream_cancelled trace=$TA reason=registry_new_stream")"
  "$(line_of "prev_stream_finished_cleanly session=sess-3 trace=$TA")"
  "$(line_of "stream_end trace=$TA ")"
  "$(line_of "stream_end trace=$TB ")"
)
order_ok=1; prev=0
for n in "${seq3[@]}"; do if [ -z "$n" ] || [ "$n" -le "$prev" ]; then order_ok=0; break; fi; prev=$n; done
if [ "$order_ok" = 1 ]; then ok "3: log order start A, start B, cancelled A, prev finished, end A, end B"
else bad "3: log order" "lines ${seq3[*]}: $(grep -e "$TA" -e "$TB" "$LOG")"; fi
assert_eq "3: no timeout on cancel" "0" "$(grep -c prev_stream_timeout_on_cancel "$LOG")"

# ---- 4. five requests 50 ms apart all complete --------------------------------------------------
pids=()
for i in 1 2 3 4 5; do
  chat "$TMP/s4_$i" "$TMP/h4_$i" '{"prompt":"Once upon a time","max_tokens":120,"ignore_eos":true,"stream":true}' &
  pids+=($!)
  sleep 0.05
done
wait "${pids[@]}"
complete=0
for i in 1 2 3 4 5; do
  grep -q '"finish_reason":"length"' "$TMP/s4_$i" && ends_with_done "$TMP/s4_$i" && complete=$((complete + 1))
done
assert_eq "4: five streams 50 ms apart all complete" 5 "$complete"

# ---- 5. two sessions: cancelling in session 1 leaves session 2 alone ------------------------------
chat "$TMP/s5a" "$TMP/h5a" "{\"prompt\":\"Once upon a time\",$LONG}" -H 'X-Session-Id: s1' &
PA=$!
chat "$TMP/s5c" "$TMP/h5c" '{"prompt":"The dog","max_tokens":600,"ignore_eos":true,"stream":true}' -H 'X-Session-Id: s2' &
PC=$!
sleep 0.2
chat "$TMP/s5b" "$TMP/h5b" '{"prompt":"Tell me a story","max_tokens":20,"stream":true}' -H 'X-Session-Id: s1'
wait "$PA" "$PC"
TC=$(trace_of "$TMP/h5c")
assert_contains "5: session 1's first stream was superseded" "$(cat "$TMP/s5a")" '"code":"superseded"'
if grep -q '"finish_reason":"length"' "$TMP/s5c" && ends_with_done "$TMP/s5c" && ! grep -q '"error"' "$TMP/s5c"; then
  ok "5: session 2 completed undisturbed"; else bad "5: session 2 completed undisturbed" "$(tail -c 300 "$TMP/s5c")"; fi
assert_eq "5: session 2 never cancelled" "0" "$(grep -c "stream_cancelled trace=$TC" "$LOG")"
tokens_c=$(sed -n "s/.*stream_end trace=$TC tokens=\([0-9]*\).*/\1/p" "$LOG")
assert_eq "5: session 2 got all its tokens" "600" "$tokens_c"
if wait_for running_is_zero; then ok "5: all slots free afterwards"; else bad "5: all slots free afterwards"; fi

serve_stop
assert_eq "main server exits 0 on SIGTERM" 0 "$STOP_RC"
assert_contains "main: shutdown logged" "$(cat "$LOG")" "shutdown_done"

# ---- queue: 503 when full, pings while queued, disconnect while queued, SIGTERM drain ---------------
srv_start queue --ctx 4096 --parallel 1 --queue 1 --ping-interval 0.2
chat "$TMP/qa" "$TMP/hqa" "{\"prompt\":\"Once upon a time\",$LONG}" &
PA=$!
wait_for metric_is elpis_requests_running 1
chat "$TMP/qb" "$TMP/hqb" "{\"prompt\":\"Once upon a time\",$LONG}" &
PB=$!
wait_for metric_is elpis_requests_queued 1
code=$(curl -s -o "$TMP/q503" -D "$TMP/hq503" -w '%{http_code}' -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d '{"prompt":"x","max_tokens":5,"stream":true}')
assert_eq "queue: full -> 503" 503 "$code"
assert_contains "queue: Retry-After" "$(tr -d '\r' <"$TMP/hq503" | grep -i '^retry-after')" "1"
assert_contains "queue: error envelope" "$(cat "$TMP/q503")" '"type":"unavailable_error"'
sleep 0.6   # B waits in the queue: silent for longer than --ping-interval
if grep -q '^: ping' "$TMP/qb"; then ok "queue: ': ping' while waiting"; else bad "queue: ': ping' while waiting" "$(head -c 300 "$TMP/qb")"; fi
# a queued client that leaves is dropped from the queue (llama.cpp #13262)
{ for p in $(pgrep -P "$PB"); do kill "$p"; done; kill "$PB"; wait "$PB"; } 2>/dev/null
TQB=$(trace_of "$TMP/hqb")
if wait_for grep -q "stream_cancelled trace=$TQB reason=client_disconnect" "$LOG"; then ok "queue: queued client leaving is logged"
else bad "queue: queued client leaving is logged" "$(grep "$TQB" "$LOG")"; fi
if wait_for metric_is elpis_requests_queued 0; then ok "queue: left the queue"; else bad "queue: left the queue"; fi
# SIGTERM while A streams: A ends with finish_reason length and [DONE], exit 0
serve_stop
assert_eq "drain: server exits 0" 0 "$STOP_RC"
wait "$PA"
if grep -q '"finish_reason":"length"' "$TMP/qa" && ends_with_done "$TMP/qa"; then ok "drain: running stream ended with length + [DONE]"
else bad "drain: running stream ended with length + [DONE]" "$(tail -c 300 "$TMP/qa")"; fi
tokens_a=$(grep -c '"content"' "$TMP/qa")
if [ "$tokens_a" -lt 3990 ]; then ok "drain: cut short ($tokens_a chunks)"; else bad "drain: cut short" "$tokens_a"; fi
assert_contains "drain: logged" "$(cat "$LOG")" "shutdown_begin signal=TERM"
finish
