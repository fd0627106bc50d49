#!/usr/bin/env bash
# `elpis serve` under sustained load (bounded; loopback only).
#   Part 1, the original's "long and rapid generation" plan: a 1,500-token
#     stream N times in a row and 50 streams 20 ms apart, each checked for a
#     complete end, then the slots and KV cells must be free; RSS must stay
#     flat after the first round (2 % for the long series, 5 % for the rapid
#     rounds after a warm-up round: see below).
#   Part 2, soak: 16 concurrent clients for ELPIS_SOAK_SECONDS (default 8)
#     mixing complete streams, random disconnects, same-session supersedes and
#     non-stream requests. Every response must end in one of the legal ways;
#     afterwards nothing may be running or queued, RSS within 5 %, and the
#     server must exit 0 (under ASan: with no leak report).
# RSS is not compared in sanitizer builds (ASan's quarantine keeps freed memory).
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }
SANITIZED=0; [ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && SANITIZED=1
SOAK_SECONDS=${ELPIS_SOAK_SECONDS:-8}
LONG_ROUNDS=${ELPIS_SOAK_LONG_ROUNDS:-$([ $SANITIZED = 1 ] && echo 5 || echo 20)}

SRV_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
srv_start server --ctx 4096 --parallel 4 --queue 64

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SRV_PID/status"; }
metric() { curl -s "$URL/metrics" | sed -n "s/^$1 //p"; }
idle() { [ "$(metric elpis_requests_running)" = 0 ] && [ "$(metric elpis_requests_queued)" = 0 ] &&
         [ "$(metric elpis_kv_cells_used)" = 0 ] && [ "$(metric elpis_http_completions_in_flight)" = 0 ]; }
wait_idle() { for _ in $(seq 100); do idle && return 0; sleep 0.1; done; return 1; }
ends_with_done() { tail -c 14 "$1" | cmp -s - <(printf 'data: [DONE]\n\n'); }
within() { awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN { d = (b - a) / a * 100; if (d < 0) d = -d; exit !(d <= p) }'; }
stream() {   # stream OUT JSON [curl args]
  local out=$1 body=$2; shift 2
  curl -sN -H 'Content-Type: application/json' "$@" "$URL/v1/chat/completions" -d "$body" >"$out"
}

# ---- part 1: long and rapid ---------------------------------------------------------------------------
complete=0; freed=0; rss_first=""
for i in $(seq "$LONG_ROUNDS"); do
  # Count tokens from the usage chunk: one SSE event may carry several tokens when the reader lags.
  stream "$TMP/long" '{"prompt":"Once upon a time","max_tokens":1500,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
  grep -q '"completion_tokens":1500' "$TMP/long" && grep -q '"finish_reason":"length"' "$TMP/long" &&
    ends_with_done "$TMP/long" && complete=$((complete + 1))
  wait_idle && freed=$((freed + 1))
  [ "$i" = 1 ] && rss_first=$(rss_kb)
done
rss_long=$(rss_kb)
assert_eq "long: $LONG_ROUNDS x 1500-token streams complete" "$LONG_ROUNDS" "$complete"
assert_eq "long: slot and KV freed after each" "$LONG_ROUNDS" "$freed"

# two rounds of 50 streams 20 ms apart; RSS after round 2 must match round 1
rapid_round() {
  local pids=() i
  for i in $(seq 50); do
    stream "$TMP/rapid$i" '{"prompt":"Once upon a time","max_tokens":100,"stream":true}' &
    pids+=($!)
    sleep 0.02
  done
  wait "${pids[@]}"
  RAPID_OK=0
  for i in $(seq 50); do
    grep -q '"finish_reason":"\(stop\|length\)"' "$TMP/rapid$i" && ends_with_done "$TMP/rapid$i" && RAPID_OK=$((RAPID_OK + 1))
  done
}
rapid_round
assert_eq "rapid: 50 streams 20 ms apart complete" 50 "$RAPID_OK"
if wait_idle; then ok "rapid: everything released"; else bad "rapid: everything released" "$(curl -s "$URL/metrics" | grep -e running -e queued -e kv_cells_used)"; fi
# The context prefaults its KV cache and scratch, so after one warm-up round
# (allocator high-water mark) RSS must stay within 2 %, as the original's
# test plan asks; exact leaks are LSan's job.
if [ $SANITIZED = 1 ]; then ok "rss check skipped (sanitizer build)"   # and its extra rounds: slow under ASan
else
  rapid_round
  wait_idle
  rss_rapid1=$(rss_kb)
  rapid_round
  assert_eq "rapid round 3: all complete" 50 "$RAPID_OK"
  wait_idle
  rss_rapid2=$(rss_kb)
fi
if [ $SANITIZED = 1 ]; then :
elif within "$rss_first" "$rss_long" 2 && within "$rss_rapid1" "$rss_rapid2" 2; then
  ok "RSS flat after the first round (long ${rss_first} -> ${rss_long} kB, rapid ${rss_rapid1} -> ${rss_rapid2} kB)"
else bad "RSS flat after the first round" "long ${rss_first} -> ${rss_long} kB, rapid ${rss_rapid1} -> ${rss_rapid2} kB"; fi

# ---- part 2: 16 clients, random disconnects and supersedes ------------------------------------------------
# client ID END: loops until END (epoch s); appends one verdict per request to $TMP/verdicts.ID
client() {
  local id=$1 end=$2 n=0 out="$TMP/c$1" v
  RANDOM=$((id * 7919))
  while [ "$(date +%s)" -lt "$end" ]; do
    n=$((n + 1))
    local kind=$((RANDOM % 4)) max=$((20 + RANDOM % 300)) sess="soak-$((RANDOM % 4))"
    local body="{\"prompt\":\"Once upon a time\",\"max_tokens\":$max,\"ignore_eos\":true,\"stream\":true}"
    case $kind in
      0) stream "$out" "$body"; rc=$?   # complete
         if [ $rc = 0 ] && ends_with_done "$out" && grep -q '"finish_reason"' "$out"; then v=ok
         elif [ $rc = 0 ] && grep -q '"type":"unavailable_error"' "$out"; then v=ok503
         else v="bad complete rc=$rc"; fi ;;
      1) stream "$out" "$body" --max-time "0.$((1 + RANDOM % 9))"; rc=$?   # client leaves early
         if [ $rc = 28 ] || { [ $rc = 0 ] && ends_with_done "$out"; } || grep -q unavailable_error "$out"; then v=ok
         else v="bad disconnect rc=$rc"; fi ;;
      2) stream "$out" "$body" -H "X-Session-Id: $sess"; rc=$?   # sessions shared by clients: supersedes
         if [ $rc = 0 ] && ends_with_done "$out" && grep -q -e '"finish_reason"' -e '"code":"superseded"' "$out"; then v=ok
         elif [ $rc = 0 ] && grep -q unavailable_error "$out"; then v=ok503
         else v="bad session rc=$rc $(tail -c 120 "$out")"; fi ;;
      3) code=$(curl -s -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' -H "X-Session-Id: $sess" \
                  "$URL/v1/chat/completions" -d "{\"prompt\":\"Hi\",\"max_tokens\":$max}"); rc=$?
         case "$rc:$code" in 0:200|0:409|0:503) v=ok ;; *) v="bad nonstream rc=$rc code=$code" ;; esac ;;
    esac
    echo "$v" >>"$TMP/verdicts.$id"
  done
}
# The first half warms the allocator up to the load's high-water mark; RSS
# is compared across the second half (growth there would be a real leak).
soak_half() {
  local end=$(( $(date +%s) + (SOAK_SECONDS + 1) / 2 )) cpids=() id
  for id in $(seq 16); do client "$id" "$end" & cpids+=($!); done
  wait "${cpids[@]}"
}
soak_half
wait_idle
rss_before=$(rss_kb)
soak_half
cat "$TMP"/verdicts.* >"$TMP/verdicts"
total=$(wc -l <"$TMP/verdicts"); bad_n=$(grep -c '^bad' "$TMP/verdicts")
if [ "$total" -ge 32 ]; then ok "soak: $total requests from 16 clients"; else bad "soak: enough requests" "$total"; fi
assert_eq "soak: every response ended legally" 0 "$bad_n"
[ "$bad_n" = 0 ] || grep '^bad' "$TMP/verdicts" | sort | uniq -c | head -5
if wait_idle; then ok "soak: nothing running, queued or in flight afterwards"
else bad "soak: idle afterwards" "$(curl -s "$URL/metrics" | grep -e running -e queued -e in_flight)"; fi
assert_contains "soak: health still answers" "$(curl -s -m 2 "$URL/health")" '"status":"ok"'
assert_contains "soak: disconnects were seen" "$(cat "$LOG")" "reason=client_disconnect"
assert_contains "soak: supersedes were seen" "$(cat "$LOG")" "reason=registry_new_stream"
starts=$(grep -c ' stream_start ' "$LOG"); ends=$(grep -c ' stream_end ' "$LOG")
assert_eq "soak: every stream_start has its stream_end" "$starts" "$ends"
rss_after=$(rss_kb)
if [ $SANITIZED = 1 ]; then ok "rss check skipped (sanitizer build)"
elif within "$rss_before" "$rss_after" 5; then ok "soak: RSS within 5 % (${rss_before} -> ${rss_after} kB)"
else bad "soak: RSS within 5 %" "${rss_before} -> ${rss_after} kB"; fi

kill -TERM "$SRV_PID"
for _ in $(seq 300); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$SRV_PID" 2>/dev/null
wait "$SRV_PID"; rc=$?
SRV_PID=""
assert_eq "server exits 0 (no sanitizer report)" 0 "$rc"
[ "$rc" = 0 ] || tail -30 "$TMP/server.err"
finish
