#!/usr/bin/env bash
# Emotion end to end through `elpis serve` (issue 6 acceptance), with curl:
#   - [emotion]/[memory] configuration errors name key, value, range, source;
#     a missing or mismatched steering vector file stops the server at start;
#   - POST /v1/psyche/emotion events that push arousal to +1 make a request
#     without temperature run at 0.5, visible in the "elpis" echo (non-stream
#     body and last stream chunk); explicit values and
#     "emotional_modulation": false pass through; /v1/emotion and /metrics;
#   - a vector made here by `elpis vectors build` on stories260K, configured
#     for all quadrants with steering_strength > 0, changes greedy output;
#   - two concurrent streams started under different states (different
#     quadrant vectors) each match their own single-stream output;
#   - response analysis fires on completed and on cancelled (partial) text;
#   - the state survives kill -9: the last acknowledged event is there after
#     a restart.
# decay_rate = 0 everywhere the exact state matters, so time cannot move it.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""; PORT=""; LOG=""; URL=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# stop_server: SIGTERM must end the server cleanly (exit 0: no leak report either)
stop_server() {
  local log=$LOG
  serve_stop
  [ "$STOP_RC" = 0 ] || bad "server stops cleanly" "exit $STOP_RC: $(tail -5 "${log%.log}.err")"
}
kill9_server() { kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; SRV_PID=""; }

# An empty reply means the connection failed: say whether the server is alive and
# what it printed, so a failure explains itself (one was seen once under load).
post() {
  local out
  out=$(curl -s -H 'Content-Type: application/json' "$URL$1" -d "$2")
  if [ -z "$out" ]; then
    echo "diag: empty reply to POST $1; server $(kill -0 "$SRV_PID" 2>/dev/null && echo alive || echo DEAD);" \
         "stderr: $(tail -5 "${LOG%.log}.err" 2>/dev/null); log: $(tail -3 "$LOG" 2>/dev/null)" >&2
  fi
  printf '%s' "$out"
}
event() { post /v1/psyche/emotion "{\"event_type\":\"$1\",\"intensity\":$2}"; }
# jget JSON EXPR: a field of a JSON text (EXPR like .elpis.temperature), strings bare
jget() { node -e 'const d=JSON.parse(process.argv[1]); const v=eval("d"+process.argv[2]);
  console.log(typeof v === "string" ? v : JSON.stringify(v))' "$1" "$2"; }
# sse_text FILE: the streamed content; sse_elpis FILE: the "elpis" echo of the last chunk that has one
sse_text() { node -e 'let t=""; for (const l of require("fs").readFileSync(process.argv[1],"utf8").split("\n"))
  if (l.startsWith("data: {")) { const c=JSON.parse(l.slice(6)).choices; if (c && c[0] && c[0].delta.content) t+=c[0].delta.content; }
  process.stdout.write(t)' "$1"; }
sse_elpis() { node -e 'let e=null; for (const l of require("fs").readFileSync(process.argv[1],"utf8").split("\n"))
  if (l.startsWith("data: {")) { const o=JSON.parse(l.slice(6)); if (o.elpis) e=o.elpis; }
  console.log(JSON.stringify(e))' "$1"; }
# stream OUT JSON: a streamed chat completion into OUT (blocking)
stream() { curl -sN -H 'Content-Type: application/json' "$URL/v1/chat/completions" -d "$2" >"$1"; }
greedy() { echo "{\"prompt\":\"Once upon a time\",\"max_tokens\":$1,\"temperature\":0${2:+,$2}}"; }

# ---- configuration errors: exit non-zero naming key, value, range and source -----------------
printf '[emotion]\ndecay_rate = 20\n' >"$TMP/bad1.ini"
"$ELPIS_BIN" serve -m "$MODEL" --port 0 --config "$TMP/bad1.ini" >/dev/null 2>"$TMP/e1"; rc=$?
assert_eq "bad [emotion] value exits 2" 2 "$rc"
assert_contains "bad [emotion] value is named" "$(cat "$TMP/e1")" "$TMP/bad1.ini:2: emotion.decay_rate = '20': expected a number in 0..10"
ELPIS_EMOTION__MAX_DELTA=5 "$ELPIS_BIN" serve -m "$MODEL" --port 0 >/dev/null 2>"$TMP/e2"; rc=$?
assert_eq "bad ELPIS_EMOTION__ value exits 2" 2 "$rc"
assert_contains "bad ELPIS_EMOTION__ value names the variable" "$(cat "$TMP/e2")" "ELPIS_EMOTION__MAX_DELTA: emotion.max_delta = '5': expected a number in 0..2"
ELPIS_MEMORY__MAX_CONTENT_BYTES=0 "$ELPIS_BIN" serve -m "$MODEL" --port 0 >/dev/null 2>"$TMP/e3"; rc=$?
assert_eq "bad ELPIS_MEMORY__ value exits 2" 2 "$rc"
assert_contains "bad ELPIS_MEMORY__ value names the variable" "$(cat "$TMP/e3")" "ELPIS_MEMORY__MAX_CONTENT_BYTES: memory config: max_content_bytes: '0'"
printf '[emotion]\nvelocity_window = 50\n' >"$TMP/bad4.ini"
"$ELPIS_BIN" serve -m "$MODEL" --port 0 --config "$TMP/bad4.ini" >/dev/null 2>"$TMP/e4"; rc=$?
assert_eq "keys that contradict each other exit 2" 2 "$rc"
assert_contains "the relation is named" "$(cat "$TMP/e4")" "emotion.velocity_window = 50: must not exceed trajectory_history_size (20)"

# ---- steering vectors, built here ----------------------------------------------------------------
printf 'I am so happy and excited today!\nWhat a wonderful, joyful day.\nWe laughed and played in the sun.\n' >"$TMP/pos.txt"
printf 'I am so sad and tired today.\nWhat a terrible, gloomy day.\nWe cried alone in the dark rain.\n' >"$TMP/neg.txt"
"$ELPIS_BIN" vectors build -m "$MODEL" --positive "$TMP/pos.txt" --negative "$TMP/neg.txt" -o "$TMP/v.gguf" 2>"$TMP/vb.err" &&
"$ELPIS_BIN" vectors build -m "$MODEL" --positive "$TMP/neg.txt" --negative "$TMP/pos.txt" -o "$TMP/w.gguf" 2>>"$TMP/vb.err"
if [ -s "$TMP/v.gguf" ] && [ -s "$TMP/w.gguf" ]; then ok "elpis vectors build made two vector files"
else bad "elpis vectors build made two vector files" "$(cat "$TMP/vb.err")"; fi

printf '[emotion]\nsteering_strength = 1\nvectors_calm = %s\n' "$TMP/missing.gguf" >"$TMP/miss.ini"
"$ELPIS_BIN" serve -m "$MODEL" --port 0 --data-dir "$TMP/dmiss" --config "$TMP/miss.ini" --log-file "$TMP/miss.log" >/dev/null 2>"$TMP/e5"; rc=$?
if [ "$rc" -ne 0 ]; then ok "a missing vector file stops the server (exit $rc)"; else bad "a missing vector file stops the server"; fi
assert_contains "the missing file is named" "$(cat "$TMP/e5")" "emotion.vectors_calm: $TMP/missing.gguf"
printf '[emotion]\nsteering_strength = 1\nvectors_depleted = %s\n' "$MODEL" >"$TMP/mism.ini"
"$ELPIS_BIN" serve -m "$MODEL" --port 0 --data-dir "$TMP/dmiss" --config "$TMP/mism.ini" --log-file "$TMP/miss.log" >/dev/null 2>"$TMP/e6"; rc=$?
if [ "$rc" -ne 0 ]; then ok "a file that is not a control vector stops the server"; else bad "a file that is not a control vector stops the server"; fi
assert_contains "the mismatch is explained" "$(cat "$TMP/e6")" 'not a control vector'

# ---- 1. modulation: arousal +1 -> temperature 0.5 -----------------------------------------------------
printf '[emotion]\ndecay_rate = 0\nresponse_analysis = false\n' >"$TMP/plain.ini"
srv_start plain --data-dir "$TMP/d1" --config "$TMP/plain.ini"
assert_eq "fresh state at the baseline" '{"valence":0.0,"arousal":0.0,"quadrant":"excited"}' "$(curl -s "$URL/v1/psyche/emotion")"
r=$(post /v1/chat/completions "$(echo '{"prompt":"Once upon a time","max_tokens":8}')")
assert_eq "baseline: temperature is the base 0.7" "0.7" "$(jget "$r" .elpis.temperature)"
assert_eq "baseline: top_p is the base 0.9" "0.9" "$(jget "$r" .elpis.top_p)"
UNSTEERED=$(jget "$(post /v1/chat/completions "$(greedy 60)")" '.choices[0].message.content')
for _ in 1 2 3; do last=$(event insight 2); done
assert_eq "three insight events at intensity 2: arousal +1" '{"valence":1.0,"arousal":1.0,"quadrant":"excited"}' "$last"
r=$(post /v1/chat/completions '{"prompt":"Once upon a time","max_tokens":8}')
assert_eq "arousal +1: a request without temperature runs at 0.5" "0.5" "$(jget "$r" .elpis.temperature)"
assert_eq "valence +1: top_p 1.0" "1" "$(jget "$r" .elpis.top_p)"
assert_eq "the echo carries the state" '{"valence":1,"arousal":1,"quadrant":"excited"}' "$(jget "$r" .elpis.emotion)"
stream "$TMP/s1" '{"prompt":"Once upon a time","max_tokens":8,"stream":true}'
assert_eq "stream: the last chunk echoes temperature 0.5" "0.5" "$(jget "$(sse_elpis "$TMP/s1")" .temperature)"
assert_eq "stream: only the finish chunk carries the echo" 1 "$(grep -c '"elpis"' "$TMP/s1")"
r=$(post /v1/completions '{"prompt":"Once upon a time","max_tokens":8,"temperature":0.2}')
assert_eq "an explicit temperature passes through" "0.2" "$(jget "$r" .elpis.temperature)"
assert_eq "top_p is still modulated then" "1" "$(jget "$r" .elpis.top_p)"
r=$(post /v1/chat/completions '{"prompt":"Once upon a time","max_tokens":8,"emotional_modulation":false}')
assert_eq "emotional_modulation false: the base temperature" "0.7" "$(jget "$r" .elpis.temperature)"
full=$(curl -s "$URL/v1/emotion")
assert_eq "GET /v1/emotion: update_count" 3 "$(jget "$full" .update_count)"
assert_eq "GET /v1/emotion: steering coefficients" 1 "$(jget "$full" .steering_coefficients.excited)"
assert_eq "GET /v1/emotion: trajectory" improving "$(jget "$full" .trajectory.trend)"
assert_contains "/metrics: arousal gauge" "$(curl -s "$URL/metrics")" "elpis_emotion_arousal 1"
r=$(curl -s -w ' %{http_code}' "$URL/v1/psyche/emotion" -d '{"intensity":1}')
assert_eq "POST without event_type: 400" 400 "${r##* }"

# ---- kill -9: the last acknowledged event survives ---------------------------------------------------
ack=$(event failure 1)
kill9_server
srv_start plain2 --data-dir "$TMP/d1" --config "$TMP/plain.ini"
assert_eq "after kill -9: the last acknowledged state" "$ack" "$(curl -s "$URL/v1/psyche/emotion")"
assert_eq "after kill -9: update_count includes it" 4 "$(jget "$(curl -s "$URL/v1/emotion")" .update_count)"
stop_server

# ---- 2. steering: one vector for all quadrants changes greedy output ----------------------------------
printf '[emotion]\ndecay_rate = 0\nresponse_analysis = false\nsteering_strength = 2\n' >"$TMP/all.ini"
for q in excited frustrated calm depleted; do echo "vectors_$q = $TMP/v.gguf" >>"$TMP/all.ini"; done
srv_start all --data-dir "$TMP/d2" --config "$TMP/all.ini"
assert_contains "steering is on" "$(cat "$LOG")" "steering=on"
r=$(post /v1/chat/completions "$(greedy 60)")
STEERED=$(jget "$r" '.choices[0].message.content')
assert_eq "the echo says steered" "true" "$(jget "$r" .elpis.steered)"
if [ -n "$STEERED" ] && [ "$STEERED" != "$UNSTEERED" ]; then ok "steering changes greedy output"
else bad "steering changes greedy output" "steered [$STEERED] unsteered [$UNSTEERED]"; fi
r=$(post /v1/chat/completions "$(greedy 60 '"emotional_modulation":false')")
assert_eq "emotional_modulation false: unsteered output" "$UNSTEERED" "$(jget "$r" '.choices[0].message.content')"
stop_server

# ---- 3. concurrent streams under different states -------------------------------------------------------
# excited -> v.gguf, frustrated -> w.gguf (the opposite direction); X = (1, 1), Y = (-1, 1)
printf '[emotion]\ndecay_rate = 0\nresponse_analysis = false\nsteering_strength = 2\nvectors_excited = %s\nvectors_frustrated = %s\n' \
  "$TMP/v.gguf" "$TMP/w.gguf" >"$TMP/two.ini"
srv_start two --data-dir "$TMP/d3" --config "$TMP/two.ini" --ctx 4096 --parallel 4
to_x() { for _ in 1 2 3 4; do event insight 2 >/dev/null; done; }      # valence -> +1, arousal -> +1
to_y() { for _ in 1 2 3 4 5; do event failure 2 >/dev/null; done; }    # valence -> -1, arousal stays +1
# long enough that the first concurrent stream still runs when the second starts (sanitizer builds are ~20x slower)
LONG_TOKENS=2500; [ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && LONG_TOKENS=400
# elpis_memory false: the first reply would be stored and recalled into the second prompt (agent.c)
LONGREQ="{\"prompt\":\"Once upon a time\",\"max_tokens\":$LONG_TOKENS,\"ignore_eos\":true,\"temperature\":0,\"stream\":true,\"elpis_memory\":false}"
to_x; stream "$TMP/x1" "$LONGREQ"
to_y; stream "$TMP/y1" "$LONGREQ"
assert_eq "state X is excited" excited "$(jget "$(sse_elpis "$TMP/x1")" .emotion.quadrant)"
assert_eq "state Y is frustrated" frustrated "$(jget "$(sse_elpis "$TMP/y1")" .emotion.quadrant)"
if ! cmp -s <(sse_text "$TMP/x1") <(sse_text "$TMP/y1"); then ok "the two states steer differently"
else bad "the two states steer differently" "identical output"; fi
to_x; stream "$TMP/x2" "$LONGREQ" & P1=$!
for _ in $(seq 200); do [ -s "$TMP/x2" ] && break; sleep 0.01; done   # X's stream has started
to_y; stream "$TMP/y2" "$LONGREQ" & P2=$!
wait $P1 $P2
T1=$(sed -n 's/.*stream_start trace=\([0-9a-f]*\) .*/\1/p' "$LOG" | tail -2 | head -1)
T2=$(sed -n 's/.*stream_start trace=\([0-9a-f]*\) .*/\1/p' "$LOG" | tail -1)
l_start2=$(grep -n "stream_start trace=$T2 " "$LOG" | cut -d: -f1); l_end1=$(grep -n "stream_end trace=$T1 " "$LOG" | cut -d: -f1)
if [ -n "$l_start2" ] && [ -n "$l_end1" ] && [ "$l_start2" -lt "$l_end1" ]; then ok "the two streams overlapped"
else bad "the two streams overlapped" "start of the 2nd at line $l_start2, end of the 1st at line $l_end1"; fi
if cmp -s <(sse_text "$TMP/x1") <(sse_text "$TMP/x2"); then ok "concurrent stream under X matches its single-stream output"
else bad "concurrent stream under X matches its single-stream output" "$(sse_text "$TMP/x2" | head -c 200)"; fi
if cmp -s <(sse_text "$TMP/y1") <(sse_text "$TMP/y2"); then ok "concurrent stream under Y matches its single-stream output"
else bad "concurrent stream under Y matches its single-stream output" "$(sse_text "$TMP/y2" | head -c 200)"; fi
stop_server

# ---- 4. response analysis: completed and cancelled text -------------------------------------------------
printf '[emotion]\ndecay_rate = 0\nsuccess_words = e\n' >"$TMP/an.ini"   # "e": in any story
srv_start an --data-dir "$TMP/d4" --config "$TMP/an.ini" --ctx 4096
post /v1/chat/completions "$(greedy 40)" >/dev/null
for _ in $(seq 100); do grep -q emotion_from_response "$LOG" && break; sleep 0.05; done
assert_eq "a completed reply is analysed" 1 "$(jget "$(curl -s "$URL/v1/emotion")" .update_count)"
curl -sN --max-time 0.5 -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d '{"prompt":"Once upon a time","max_tokens":4000,"ignore_eos":true,"stream":true}' >/dev/null
for _ in $(seq 100); do [ "$(grep -c emotion_from_response "$LOG")" -ge 2 ] && break; sleep 0.05; done
assert_contains "the client left" "$(cat "$LOG")" "reason=client_disconnect"
assert_eq "a cancelled reply's partial text is analysed" 2 "$(jget "$(curl -s "$URL/v1/emotion")" .update_count)"
stop_server

if grep -q -e 'Sanitizer' -e 'runtime error' "$TMP"/*.err; then bad "no sanitizer reports" "$(grep -h -m3 -e Sanitizer -e 'runtime error' "$TMP"/*.err)"
else ok "no sanitizer reports"; fi
finish
