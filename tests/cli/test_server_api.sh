#!/usr/bin/env bash
# `elpis serve` API surface, driven with curl against the real binary:
# startup checks (config errors, memory budget, loopback rule), endpoints,
# error envelopes and status codes, auth, the wire format of both kinds of
# completion, /metrics, and /health latency under load.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

SRV_PID=""; PORT=""; LOG=""; URL=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# req METHOD PATH [BODY] [curl args]: prints "STATUS BODY"
req() {
  local m=$1 p=$2 body=${3-}; shift 2; [ $# -gt 0 ] && shift
  if [ -n "$body" ]; then curl -s -X "$m" -w ' %{http_code}' -H 'Content-Type: application/json' "$@" "$URL$p" --data-binary "$body"
  else curl -s -X "$m" -w ' %{http_code}' "$@" "$URL$p"; fi
}
ends_with_done() { tail -c 14 "$1" | cmp -s - <(printf 'data: [DONE]\n\n'); }

# ---- startup: every bad value is named with its range and source; exit 2 ------------------
"$ELPIS_BIN" serve -m "$MODEL" --port 70000 >/dev/null 2>"$TMP/e1"; rc=$?
assert_eq "bad --port exits 2" 2 "$rc"
assert_contains "bad --port is named with range and source" "$(cat "$TMP/e1")" "server.port: '70000' is not an integer in 0..65535 (--port)"
ELPIS_SERVER__PARALLEL=0 "$ELPIS_BIN" serve -m "$MODEL" >/dev/null 2>"$TMP/e2"; rc=$?
assert_eq "bad env value exits 2" 2 "$rc"
assert_contains "bad env value names the variable" "$(cat "$TMP/e2")" "server.parallel: '0' is not an integer in 1..256 (ELPIS_SERVER__PARALLEL)"
printf '[server]\nport = 8080\n[model]\nctx = lots\n' >"$TMP/bad.ini"
"$ELPIS_BIN" serve -m "$MODEL" --config "$TMP/bad.ini" >/dev/null 2>"$TMP/e3"; rc=$?
assert_eq "bad config value exits 2" 2 "$rc"
assert_contains "bad config value names file and line" "$(cat "$TMP/e3")" "model.ctx: 'lots' is not an integer in 0..1048576 ($TMP/bad.ini:4)"
printf '[server]\nprot = 8080\n' >"$TMP/typo.ini"
"$ELPIS_BIN" serve -m "$MODEL" --config "$TMP/typo.ini" >/dev/null 2>"$TMP/e4"
assert_contains "unknown config key is an error" "$(cat "$TMP/e4")" "unknown key server.prot"
"$ELPIS_BIN" serve -m "$MODEL" --host 0.0.0.0 --port 0 --log-file "$TMP/nl.log" >/dev/null 2>"$TMP/e5"; rc=$?
assert_eq "non-loopback without a key exits 2" 2 "$rc"
assert_contains "non-loopback refusal says why" "$(cat "$TMP/e5")" "without an API key"
"$ELPIS_BIN" serve -m "$MODEL" --port 0 --mem-limit 64K --log-file "$TMP/mem.log" >/dev/null 2>"$TMP/e6"; rc=$?
assert_eq "memory budget over --mem-limit exits 1" 1 "$rc"
assert_contains "memory budget names the limit" "$(cat "$TMP/e6")" "exceeds --mem-limit of 65536 bytes"
assert_contains "memory budget names the KV cache" "$(cat "$TMP/e6")" "KV cache"
assert_contains "memory budget is logged" "$(cat "$TMP/mem.log")" "memory_budget weights="

# ---- a server with a config file (port from flags wins over the file) ----------------------------
printf '[server]\nport = 1\nqueue = 4\n[chat]\nanything = goes\n' >"$TMP/ok.ini"   # [chat]: another module's
srv_start main --config "$TMP/ok.ini" --ctx 2048 --parallel 2 --body-limit 16K
assert_contains "config file applied" "$(cat "$LOG")" "queue=4"

r=$(req GET /health)
assert_eq "health 200" 200 "$(status_of "$r")"
assert_contains "health body" "$(body_of "$r")" '"status":"ok"'
r=$(req GET /v1/models)
assert_contains "models lists the model" "$(body_of "$r")" '"object":"list","data":[{"id":"'
r=$(req GET /nope)
assert_eq "unknown path 404" 404 "$(status_of "$r")"
assert_contains "404 envelope" "$(body_of "$r")" '{"error":{"message":"no route for GET /nope","type":"not_found_error","param":null,"code":"not_found"}}'
r=$(req GET /v1/chat/completions)
assert_eq "wrong method 405" 405 "$(status_of "$r")"
r=$(req POST /v1/chat/completions $'{"prompt": "x",\n  "max_tokens": 5,,}')
assert_eq "bad JSON 400" 400 "$(status_of "$r")"
assert_contains "bad JSON names line and column" "$(body_of "$r")" "invalid JSON at line 2, column"
r=$(req POST /v1/chat/completions '{"prompt":"x","temperature":"hot"}')
assert_eq "bad field type 400" 400 "$(status_of "$r")"
assert_contains "bad field is named in param" "$(body_of "$r")" '"param":"temperature"'
r=$(req POST /v1/chat/completions '{"prompt":"x","top_p":1.5}')
assert_contains "out of range value is named" "$(body_of "$r")" 'top_p: 1.5 is out of range 0..1'
r=$(req POST /v1/chat/completions '{"prompt":"x","n":2}')
assert_contains "n > 1 refused" "$(body_of "$r")" '"param":"n"'
r=$(req POST /v1/chat/completions '{"messages":[{"role":"user"}],"max_tokens":3}')
assert_eq "message without content is allowed (empty)" 200 "$(status_of "$r")"
r=$(req POST /v1/chat/completions '{"messages":[{"content":"hi"}]}')
assert_contains "message without role is named" "$(body_of "$r")" '"param":"messages[0].role"'
r=$(req POST /v1/chat/completions '{"max_tokens":3}')
assert_contains "missing messages is named" "$(body_of "$r")" '"param":"messages"'
big=$(head -c 20000 /dev/zero | tr '\0' 'a')
r=$(req POST /v1/chat/completions "{\"prompt\":\"$big\"}")
assert_eq "body over --body-limit is 413" 413 "$(status_of "$r")"
r=$(req POST /v1/chat/completions "{\"prompt\":\"$big\"}" -H 'Transfer-Encoding: chunked')
assert_eq "chunked body over the limit is 413" 413 "$(status_of "$r")"
r=$(req POST /v1/chat/completions '{"prompt":"x","max_tokens":3,"unknown_field":{"a":[1,2]}}')
assert_eq "unknown fields ignored" 200 "$(status_of "$r")"
r=$(req POST /v1/chat/completions '{"prompt":"x"}' -H 'X-Session-Id: bad id!')
assert_contains "bad session id is named" "$(body_of "$r")" '"param":"X-Session-Id"'

# ---- completions: non-stream bodies, max_tokens capped by the context --------------------------------
r=$(req POST /v1/chat/completions '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello"}]}],"max_tokens":8,"temperature":0}')
assert_eq "chat non-stream 200" 200 "$(status_of "$r")"
assert_contains "chat.completion object" "$(body_of "$r")" '"object":"chat.completion"'
assert_contains "assistant message" "$(body_of "$r")" '"message":{"role":"assistant","content":'
assert_contains "usage counts" "$(body_of "$r")" '"completion_tokens":8,'
r=$(req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":20,"temperature":0}')
assert_contains "text_completion object" "$(body_of "$r")" '"object":"text_completion"'
assert_contains "greedy text continues the story" "$(body_of "$r")" '"text":", there was a little girl named Lily'
r2=$(req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":20,"temperature":0}')
assert_eq "greedy is reproducible (and the prefix cache does not change it)" "$(body_of "$r" | sed 's/"id":"[^"]*"//; s/"created":[0-9]*//; s/"cached_tokens":[0-9]*//')" \
  "$(body_of "$r2" | sed 's/"id":"[^"]*"//; s/"created":[0-9]*//; s/"cached_tokens":[0-9]*//')"
r=$(req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":100000,"ignore_eos":true,"temperature":0}')
assert_contains "max_tokens capped by the context" "$(body_of "$r")" '"completion_tokens":2043,'
assert_contains "capped request ends with length" "$(body_of "$r")" '"finish_reason":"length"'
long=$(for _ in $(seq 700); do printf 'once upon a time '; done)
r=$(req POST /v1/completions "{\"prompt\":\"${long:0:12000}\"}")
assert_eq "prompt over the context: 400" 400 "$(status_of "$r")"
assert_contains "prompt over the context: code" "$(body_of "$r")" '"code":"context_length_exceeded"'
r=$(req POST /v1/completions '{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":[" girl"]}')
assert_contains "stop string ends the text before it" "$(body_of "$r")" '"text":", there was a little","logprobs":null,"finish_reason":"stop"'

# ---- stream wire format: usage chunk only with include_usage ----------------------------------------
curl -sN -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d '{"prompt":"Hi","max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}' >"$TMP/u1"
assert_contains "usage chunk with include_usage" "$(grep '"choices":\[\]' "$TMP/u1")" '"usage":{"prompt_tokens":'
assert_eq "other chunks carry usage:null" "$(grep -c '"choices":\[{' "$TMP/u1")" "$(grep -c '"usage":null' "$TMP/u1")"
assert_eq "usage chunk is the last event before [DONE]" '"choices":[]' "$(tail -n 4 "$TMP/u1" | head -1 | grep -o '"choices":\[\]')"
if ends_with_done "$TMP/u1"; then ok "usage stream ends with [DONE]"; else bad "usage stream ends with [DONE]"; fi
curl -sN -H 'Content-Type: application/json' "$URL/v1/completions" -d '{"prompt":"Hi","max_tokens":6,"stream":true}' >"$TMP/u2"
assert_contains "text stream chunk" "$(head -1 "$TMP/u2")" '"object":"text_completion","created":'
assert_eq "text stream has no usage" 0 "$(grep -c usage "$TMP/u2")"
if ends_with_done "$TMP/u2"; then ok "text stream ends with [DONE]"; else bad "text stream ends with [DONE]"; fi

# ---- tokenize / detokenize ------------------------------------------------------------------------------
r=$(req POST /tokenize '{"content":"Once upon a time"}')
assert_eq "tokenize" '{"tokens":[403,407,261,378]} 200' "$r"
r=$(req POST /tokenize '{"content":"Once upon a time","add_special":true}')
assert_contains "tokenize add_special adds BOS" "$r" '{"tokens":[1,403'
r=$(req POST /detokenize '{"tokens":[403,407,261,378]}')
assert_contains "detokenize" "$(body_of "$r")" 'Once upon a time"}'
r=$(req POST /detokenize '{"tokens":[1,99999]}')
assert_contains "detokenize names a bad id" "$(body_of "$r")" 'tokens[1] is not a token id'

# ---- metrics ---------------------------------------------------------------------------------------------------
m=$(curl -s "$URL/metrics")
for name in elpis_requests_running elpis_requests_queued elpis_kv_cells_used elpis_prompt_tokens_total \
            elpis_generation_tokens_total 'elpis_time_to_first_token_seconds_bucket{le="+Inf"}' \
            'elpis_inter_token_latency_seconds_count' 'elpis_requests_cancelled_total{reason="client_disconnect"}' \
            'elpis_http_responses_total{code="413"}'; do
  if grep -q "^$name " <<<"$m"; then ok "metrics has $name"; else bad "metrics has $name"; fi
done
assert_contains "metrics counted the 413s" "$m" 'elpis_http_responses_total{code="413"} 2'
serve_stop
assert_eq "main server exits 0" 0 "$STOP_RC"

# ---- auth ------------------------------------------------------------------------------------------------------
ELPIS_API_KEYS="k1, k2" srv_start auth
r=$(req POST /v1/chat/completions '{"prompt":"x","max_tokens":2}')
assert_eq "no key: 401" 401 "$(status_of "$r")"
assert_contains "401 envelope" "$(body_of "$r")" '"type":"authentication_error"'
r=$(req POST /v1/chat/completions '{"prompt":"x","max_tokens":2}' -H 'Authorization: Bearer nope')
assert_eq "wrong key: 401" 401 "$(status_of "$r")"
r=$(req POST /v1/chat/completions '{"prompt":"x","max_tokens":2}' -H 'Authorization: Bearer k2')
assert_eq "Bearer key: 200" 200 "$(status_of "$r")"
r=$(req GET /v1/models '' -H 'X-Api-Key: k1')
assert_eq "X-Api-Key: 200" 200 "$(status_of "$r")"
assert_eq "metrics needs the key" 401 "$(status_of "$(req GET /metrics)")"
assert_eq "health is open" 200 "$(status_of "$(req GET /health)")"
serve_stop
assert_eq "auth server exits 0" 0 "$STOP_RC"

# ---- /health answers fast while every slot generates ---------------------------------------------------------
srv_start load --ctx 4096 --parallel 4 --queue 4
pids=()
for i in 1 2 3 4 5 6; do
  curl -sN -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
    -d '{"prompt":"Once upon a time","max_tokens":4000,"ignore_eos":true,"stream":true}' >/dev/null &
  pids+=($!)
done
sleep 0.5
times=$(for _ in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{time_total}\n' "$URL/health"; sleep 0.05; done | sort -n)
median=$(sed -n 4p <<<"$times")
limit=0.050; [ -n "${ASAN_OPTIONS-}" ] && limit=0.250   # sanitizer builds are several times slower
if awk -v t="$median" -v l="$limit" 'BEGIN { exit !(t < l) }'; then ok "health under load: median ${median}s < ${limit}s"
else bad "health under load" "median ${median}s (all: $(echo $times))"; fi
assert_contains "health reports the load" "$(curl -s "$URL/health")" '"running":4,"queued":2'
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
wait "${pids[@]}" 2>/dev/null
serve_stop
assert_eq "load server exits 0" 0 "$STOP_RC"
finish
