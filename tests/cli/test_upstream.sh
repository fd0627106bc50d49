#!/usr/bin/env bash
# `elpis serve --upstream URL` (issue 9): two real servers, the front one
# forwarding generation to the back one over HTTP + SSE (upstream.c).
#   1. a stream and 2. a non-stream completion through the front
#   3. a client that hangs up mid-stream: the BACK server logs
#      client_disconnect for its stream (the front closed the transfer)
#   4. same-session supersede through the front; the plan's scenarios 4 (five
#      requests 50 ms apart) and 5 (a cancel in one session leaves another alone)
#   5. a mid-stream kill of the back server: error event + [DONE], the front
#      stays healthy, and a back server restarted on the same port serves again
#   6. no upstream listening: 502 (stream and non-stream)
#   7. two upstreams: session affinity, least-busy routing, one killed ->
#      new requests and the session go to the healthy one
# The back server requires an API key, so the front must send --upstream-key;
# the key must never appear in the front's log.
# Waits are bounded polls (wait_for), never fixed sleeps used as assertions.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }
KEY="upkey-$RANDOM-secret"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$TMP"' EXIT

# start NAME PORT [flags...] -> sets START_PID, START_PORT (log: $TMP/NAME.log)
start() {
  local name=$1 port=$2; shift 2
  local log="$TMP/$name.log"
  "$ELPIS_BIN" serve -m "$MODEL" --host 127.0.0.1 --port "$port" --log-file "$log" --ctx 4096 --data-dir :memory: \
    "$@" 2>"$TMP/$name.err" &
  START_PID=$!
  PIDS+=("$START_PID")
  for _ in $(seq 300); do
    grep -q ' server_start ' "$log" 2>/dev/null && break
    kill -0 "$START_PID" 2>/dev/null || break
    sleep 0.1
  done
  START_PORT=$(sed -n 's/.* server_start .*port=\([0-9]*\).*/\1/p' "$log" 2>/dev/null | tail -1)
  [ -n "$START_PORT" ] || { bad "server $name starts" "$(cat "$TMP/$name.err")"; finish; exit 1; }
}
wait_for() { for _ in $(seq 150); do "$@" && return 0; sleep 0.1; done; return 1; }
has_data() { grep -q '"content"' "$1" 2>/dev/null; }
count() { grep -c -- "$2" "$1" 2>/dev/null; }
count_gt() { [ "$(count "$1" "$2")" -gt "$3" ]; }   # evaluated at each poll of wait_for
ends_with_done() { tail -c 14 "$1" | cmp -s - <(printf 'data: [DONE]\n\n'); }
status_of() { tr -d '\r' <"$1" | sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -1; }
LONG='"max_tokens":4000,"ignore_eos":true,"stream":true'
MSG='"messages":[{"role":"user","content":"Once upon a time"}]'

start back 0 --api-key "$KEY" --parallel 4
BACK_PID=$START_PID; BACK_PORT=$START_PORT; BLOG="$TMP/back.log"
start front 0 --upstream "http://127.0.0.1:$BACK_PORT" --upstream-key "$KEY" --upstream-model stories --parallel 4
FRONT_PID=$START_PID; FURL="http://127.0.0.1:$START_PORT"; FLOG="$TMP/front.log"
post() { curl -sN -D "$1" -H 'Content-Type: application/json' "${@:3}" "$FURL/v1/chat/completions" -d "$2"; }
# bgpost: the same, for `bgpost ... &`: exec, so $! is curl itself and killing it hangs up
bgpost() { exec curl -sN -D "$1" -H 'Content-Type: application/json' "${@:3}" "$FURL/v1/chat/completions" -d "$2"; }

# ---- 1. stream -----------------------------------------------------------------------------
post "$TMP/h1" "{$MSG,\"max_tokens\":40,\"stream\":true}" >"$TMP/s1"
assert_eq "stream: 200" 200 "$(status_of "$TMP/h1")"
if has_data "$TMP/s1" && ends_with_done "$TMP/s1"; then ok "stream: content then [DONE]"; else bad "stream: content then [DONE]" "$(head -c 400 "$TMP/s1")"; fi
assert_contains "stream: our chunk id" "$(cat "$TMP/s1")" '"id":"chatcmpl-'
assert_contains "back server saw a stream" "$(cat "$BLOG")" "stream_start"

# ---- 2. non-stream --------------------------------------------------------------------------
post "$TMP/h2" "{$MSG,\"max_tokens\":30}" >"$TMP/s2"
assert_eq "non-stream: 200" 200 "$(status_of "$TMP/h2")"
content=$(jq -r '.choices[0].message.content' "$TMP/s2" 2>/dev/null)
if [ -n "$content" ] && [ "$content" != null ]; then ok "non-stream: content"; else bad "non-stream: content" "$(head -c 300 "$TMP/s2")"; fi
assert_eq "non-stream: object" chat.completion "$(jq -r .object "$TMP/s2" 2>/dev/null)"

# ---- 2b. a text completion, and the upstream's own 4xx in our envelope ----------------------------
code=$(curl -s -o "$TMP/s2c" -w '%{http_code}' "$FURL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt":"Once upon a time","max_tokens":20}')
assert_eq "text completion: 200" 200 "$code"
assert_eq "text completion: object" text_completion "$(jq -r .object "$TMP/s2c" 2>/dev/null)"
start badkey 0 --upstream "http://127.0.0.1:$BACK_PORT/v1/" --upstream-key wrong-key
code=$(curl -s -o "$TMP/s2d" -w '%{http_code}' "http://127.0.0.1:$START_PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' -d "{$MSG,\"max_tokens\":5,\"stream\":true}")
assert_eq "upstream 401: status passed on" 401 "$code"
assert_contains "upstream 401: its message in our envelope" "$(jq -r .error.message "$TMP/s2d" 2>/dev/null)" "upstream HTTP 401"
kill -TERM "$START_PID"; wait "$START_PID"; assert_eq "401 front exits cleanly" 0 "$?"

# ---- 2c. an upstream that accepts but never answers: 504 after the idle timeout ---------------------
python3 -c 'import socket,time,sys
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(8); print(s.getsockname()[1], flush=True); time.sleep(60)' >"$TMP/mute.port" &
MUTE=$!; PIDS+=("$MUTE")
wait_for [ -s "$TMP/mute.port" ]
start mute 0 --upstream "http://127.0.0.1:$(cat "$TMP/mute.port")" --upstream-idle-timeout 1
code=$(curl -s -o "$TMP/s2e" -w '%{http_code}' "http://127.0.0.1:$START_PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' -d "{$MSG,\"max_tokens\":5}")
assert_eq "idle upstream: 504" 504 "$code"
assert_eq "idle upstream: code" upstream_timeout "$(jq -r .error.code "$TMP/s2e" 2>/dev/null)"
kill -TERM "$START_PID"; wait "$START_PID"; assert_eq "idle front exits cleanly" 0 "$?"
kill "$MUTE" 2>/dev/null

# ---- 3. client disconnect reaches the back server ----------------------------------------------
before=$(count "$BLOG" "reason=client_disconnect")
bgpost "$TMP/h3" "{$MSG,$LONG}" >"$TMP/s3" &
CURL=$!
wait_for has_data "$TMP/s3" || bad "disconnect: stream started"
kill "$CURL" 2>/dev/null; wait "$CURL" 2>/dev/null
if wait_for count_gt "$FLOG" "reason=client_disconnect" 0; then ok "disconnect: front logs client_disconnect"; else bad "disconnect: front logs client_disconnect"; fi
if wait_for count_gt "$BLOG" "reason=client_disconnect" "$before"; then ok "disconnect: back logs client_disconnect"
else bad "disconnect: back logs client_disconnect" "$(tail -5 "$BLOG")"; fi
assert_contains "disconnect: front aborted the transfer" "$(cat "$FLOG")" "upstream_abort"
# the back saw the hang-up within 100 ms of the front (both logs stamp ms; 500 ms under sanitizers)
ms_of() { local t=${1#*T}; t=${t%Z}; IFS=: read -r h m s <<<"$t"; echo "$h $m $s" | awk '{printf "%d", ($1*3600+$2*60+$3)*1000}'; }
fms=$(ms_of "$(grep -m1 'reason=client_disconnect' "$FLOG" | cut -d' ' -f1)")
bms=$(ms_of "$(grep 'reason=client_disconnect' "$BLOG" | tail -1 | cut -d' ' -f1)")
bound=$([ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && echo 500 || echo 100)
if [ $((bms - fms)) -le "$bound" ]; then ok "disconnect: back cancelled $((bms - fms)) ms after the front (<= $bound)"
else bad "disconnect: back cancelled within $bound ms" "$((bms - fms)) ms"; fi

# ---- 4. same-session supersede ------------------------------------------------------------------
# The back stream must be cancelled. Two correct paths race: the back sees the
# front's transfer close (reason=client_disconnect), or B reaches the back first
# with the same forwarded session id and supersedes A there (registry_new_stream).
before=$(count "$BLOG" "stream_cancelled")
bgpost "$TMP/h4a" "{$MSG,$LONG}" -H 'X-Session-Id: s-up' >"$TMP/s4a" &
A=$!
wait_for has_data "$TMP/s4a" || bad "supersede: first stream started"
post "$TMP/h4b" "{$MSG,\"max_tokens\":20,\"stream\":true}" -H 'X-Session-Id: s-up' >"$TMP/s4b"
wait "$A"
assert_contains "supersede: first gets the superseded event" "$(cat "$TMP/s4a")" '"code":"superseded"'
if ends_with_done "$TMP/s4a"; then ok "supersede: first ends with [DONE]"; else bad "supersede: first ends with [DONE]"; fi
assert_eq "supersede: second 200" 200 "$(status_of "$TMP/h4b")"
if has_data "$TMP/s4b" && ends_with_done "$TMP/s4b"; then ok "supersede: second completes"; else bad "supersede: second completes" "$(head -c 300 "$TMP/s4b")"; fi
if wait_for count_gt "$BLOG" "stream_cancelled" "$before"; then ok "supersede: back stream cancelled"; else bad "supersede: back stream cancelled"; fi

# ---- the streaming plan's scenario 4 through the front: five requests 50 ms apart all complete ----
pids=()
for i in 1 2 3 4 5; do
  bgpost "$TMP/hp4$i" "{$MSG,\"max_tokens\":30,\"stream\":true}" >"$TMP/sp4$i" &
  pids+=($!); sleep 0.05
done
wait "${pids[@]}"
n=0; for i in 1 2 3 4 5; do has_data "$TMP/sp4$i" && ends_with_done "$TMP/sp4$i" && ! grep -q '"error"' "$TMP/sp4$i" && n=$((n + 1)); done
assert_eq "plan 4: five requests 50 ms apart all complete" 5 "$n"

# ---- scenario 5: a cancel inside session 1 does not disturb session 2 --------------------------------
bgpost "$TMP/hp5x" "{$MSG,\"max_tokens\":1500,\"ignore_eos\":true,\"stream\":true}" -H 'X-Session-Id: p5-two' >"$TMP/sp5x" &
X=$!
bgpost "$TMP/hp5a" "{$MSG,$LONG}" -H 'X-Session-Id: p5-one' >"$TMP/sp5a" &
Y=$!
wait_for has_data "$TMP/sp5a" || bad "plan 5: session 1 stream started"
post "$TMP/hp5b" "{$MSG,\"max_tokens\":20,\"stream\":true}" -H 'X-Session-Id: p5-one' >"$TMP/sp5b"
wait "$Y" "$X"
assert_contains "plan 5: session 1's first stream is superseded" "$(cat "$TMP/sp5a")" '"code":"superseded"'
if has_data "$TMP/sp5b" && ends_with_done "$TMP/sp5b"; then ok "plan 5: session 1's new stream completes"; else bad "plan 5: session 1's new stream completes"; fi
if grep -q '"finish_reason":"length"' "$TMP/sp5x" && ends_with_done "$TMP/sp5x" && ! grep -q '"error"' "$TMP/sp5x"; then
  ok "plan 5: session 2 runs to its end undisturbed"
else bad "plan 5: session 2 runs to its end undisturbed" "$(tail -c 300 "$TMP/sp5x")"; fi

# ---- 5. the back server dies mid-stream ------------------------------------------------------------
bgpost "$TMP/h5" "{$MSG,$LONG}" >"$TMP/s5" &
C=$!
wait_for has_data "$TMP/s5" || bad "kill: stream started"
kill -KILL "$BACK_PID"; wait "$BACK_PID" 2>/dev/null
wait "$C"
assert_contains "kill: error event" "$(cat "$TMP/s5")" 'data: {"error"'
if ends_with_done "$TMP/s5"; then ok "kill: [DONE]"; else bad "kill: [DONE]" "$(tail -c 300 "$TMP/s5")"; fi
assert_eq "kill: front healthy" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$FURL/health")"

# ---- 6. nothing listens: 502 -----------------------------------------------------------------------
post "$TMP/h6" "{$MSG,\"max_tokens\":20,\"stream\":true}" >"$TMP/s6"
assert_eq "down: stream 502" 502 "$(status_of "$TMP/h6")"
assert_eq "down: envelope" upstream_unreachable "$(jq -r .error.code "$TMP/s6" 2>/dev/null)"
post "$TMP/h6b" "{$MSG,\"max_tokens\":20}" >"$TMP/s6b"
assert_eq "down: non-stream 502" 502 "$(status_of "$TMP/h6b")"
assert_contains "down: retried before failing" "$(cat "$FLOG")" "upstream_retry"

# ---- restart the back server on the same port: service comes back ------------------------------------
start back2 "$BACK_PORT" --api-key "$KEY" --parallel 4
post "$TMP/h7" "{$MSG,\"max_tokens\":20,\"stream\":true}" >"$TMP/s7"
assert_eq "restart: stream 200 again" 200 "$(status_of "$TMP/h7")"
if has_data "$TMP/s7" && ends_with_done "$TMP/s7"; then ok "restart: completes"; else bad "restart: completes"; fi

# ---- features that need the local engine, keys, shutdown ----
tok=$(curl -s -w ' %{http_code}' "$FURL/tokenize" -H 'Content-Type: application/json' -d '{"content":"hi"}')
assert_contains "tokenize: 501" "$tok" " 501"
assert_contains "tokenize: says why" "$tok" "needs_local_engine"
steered=$(curl -s "$FURL/v1/chat/completions" -H 'Content-Type: application/json' -d "{$MSG,\"max_tokens\":5}" | jq -r .elpis.steered)
assert_eq "no steering claimed through the upstream" false "$steered"
# -------------------------------------------------
# ---- 7. two upstreams ---------------------------------------------------------------------------------
start b1 0 --api-key "$KEY" --parallel 4; B1_PID=$START_PID; B1_PORT=$START_PORT
start b2 0 --api-key "$KEY" --parallel 4; B2_PID=$START_PID; B2_PORT=$START_PORT
start multi 0 --upstream "http://127.0.0.1:$B1_PORT, http://127.0.0.1:$B2_PORT" --upstream-key "$KEY"
MULTI_PID=$START_PID; MURL="http://127.0.0.1:$START_PORT"
mpost() { curl -s -o "$1" -w '%{http_code}' "${@:3}" -H 'Content-Type: application/json' "$MURL/v1/chat/completions" -d "$2"; }
for i in 1 2 3 4; do mpost "$TMP/m$i" "{$MSG,\"max_tokens\":5}" -H 'X-Session-Id: aff' >/dev/null; done
n1=$(count "$TMP/b1.log" "session=aff"); n2=$(count "$TMP/b2.log" "session=aff")
if { [ "$n1" = 4 ] && [ "$n2" = 0 ]; } || { [ "$n1" = 0 ] && [ "$n2" = 4 ]; }; then ok "affinity: one session, one upstream"
else bad "affinity: one session, one upstream" "b1=$n1 b2=$n2"; fi
# least busy: while a long stream runs on one upstream, the next request goes to the other
exec_long() { exec curl -sN -H 'Content-Type: application/json' "$MURL/v1/chat/completions" -d "{$MSG,$LONG}"; }
exec_long >"$TMP/mlong" &
L=$!
wait_for has_data "$TMP/mlong"
long_on=$(grep -l 'session=-' "$TMP/b1.log" "$TMP/b2.log" | head -1)
mpost "$TMP/mshort" "{$MSG,\"max_tokens\":5}" >/dev/null
other=$([ "$long_on" = "$TMP/b1.log" ] && echo "$TMP/b2.log" || echo "$TMP/b1.log")
assert_eq "least busy: the short request went to the idle upstream" 1 "$(count "$other" 'session=-')"
kill "$L" 2>/dev/null; wait "$L" 2>/dev/null
# kill the session's upstream: everything goes to the other one
if [ "$n1" = 4 ]; then aff_pid=$B1_PID; aff_other="$TMP/b2.log"; else aff_pid=$B2_PID; aff_other="$TMP/b1.log"; fi
kill -KILL "$aff_pid"; wait "$aff_pid" 2>/dev/null
codes=""
for i in 1 2 3 4; do codes+="$(mpost "$TMP/k$i" "{$MSG,\"max_tokens\":5}") "; done
assert_eq "one upstream killed: new requests succeed" "200 200 200 200 " "$codes"
assert_eq "one upstream killed: the session moves on" 200 "$(mpost "$TMP/k5" "{$MSG,\"max_tokens\":5}" -H 'X-Session-Id: aff')"
mpost "$TMP/k6" "{$MSG,\"max_tokens\":5}" -H 'X-Session-Id: aff' >/dev/null
assert_eq "one upstream killed: the session stays on the healthy one" 2 "$(count "$aff_other" 'session=aff')"
assert_contains "one upstream killed: logged down" "$(cat "$TMP/multi.log")" "upstream_down"
kill -TERM "$MULTI_PID"; wait "$MULTI_PID"; assert_eq "multi front exits cleanly" 0 "$?"

if grep -q -- "$KEY" "$FLOG" "$TMP/front.err"; then bad "upstream key never logged"; else ok "upstream key never logged"; fi
kill -TERM "$FRONT_PID"
for _ in $(seq 100); do kill -0 "$FRONT_PID" 2>/dev/null || break; sleep 0.1; done
wait "$FRONT_PID"; assert_eq "front exits cleanly" 0 "$?"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done   # the back servers still up
wait 2>/dev/null
if grep -q -e 'Sanitizer' -e 'runtime error' "$TMP"/*.err; then bad "no sanitizer reports" "$(grep -h -m3 -e Sanitizer -e 'runtime error' "$TMP"/*.err)"
else ok "no sanitizer reports"; fi
finish
