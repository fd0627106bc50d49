#!/usr/bin/env bash
# Memory end to end through `elpis serve` (issue 7 acceptance), with curl:
#   - store / search / get / delete / stats over HTTP, with the status codes
#     (201 after commit, 404 when absent, 413 for oversize content, 400 for
#     bad input) and the error envelope;
#   - POST /v1/embeddings in OpenAI's format (string or array input, model
#     echoed, float and base64 encodings agree);
#   - background consolidation on a timer promotes and archives, and the
#     server still stops cleanly;
#   - durability: a client stores memories in a loop, the server is kill -9'd
#     at a random moment and restarted, and every memory whose store was
#     acknowledged (201 received) is found. 20 rounds (5 under sanitizers).
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

CLIENT_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# the server and HTTP helpers are lib.sh's (srv_start, srv_stop, http, status_of, body_of, jget)
start_server() { srv_start "$@"; }
stop_server() { srv_stop; }
req() { http "$@"; }

# ---- 1. the routes ---------------------------------------------------------------------------------
ELPIS_MEMORY__MAX_CONTENT_BYTES=2000 start_server crud --data-dir "$TMP/d1"
r=$(req POST /v1/memories '{"content":"Lily found a red ball in the park","memory_type":"episodic","tags":["user"],"emotional_context":{"valence":0.8,"arousal":0.6}}')
assert_eq "store: 201 Created" 201 "$(status_of "$r")"
BALL=$(jget "$(body_of "$r")" .id)
assert_eq "store: a uuid" 36 "${#BALL}"
assert_eq "store: status stored" stored "$(jget "$(body_of "$r")" .status)"
req POST /v1/memories '{"content":"The cat slept on the warm mat all day"}' >/dev/null
r=$(req POST /v1/memories '{"content":"Tom likes to eat green apples","memory_type":"semantic"}')
APPLE=$(jget "$(body_of "$r")" .id)

r=$(req GET '/v1/memories?q=red%20ball&n=2')
assert_eq "search: 200" 200 "$(status_of "$r")"
assert_eq "search: the ball memory first" "$BALL" "$(jget "$(body_of "$r")" '.results[0].id')"
assert_eq "search: n caps the results" 2 "$(jget "$(body_of "$r")" '.results.length')"
assert_eq "search: hybrid" true "$(jget "$(body_of "$r")" .hybrid_search)"
r=$(req GET /v1/memories)
assert_eq "search without q: 400" 400 "$(status_of "$r")"
assert_contains "search without q names q" "$(body_of "$r")" '"param":"q"'
assert_eq "search with a bad n: 400" 400 "$(status_of "$(req GET '/v1/memories?q=x&n=0')")"

r=$(req GET "/v1/memories/$APPLE")
assert_eq "get: 200" 200 "$(status_of "$r")"
assert_eq "get: the content" "Tom likes to eat green apples" "$(jget "$(body_of "$r")" .content)"
assert_eq "get: the type" semantic "$(jget "$(body_of "$r")" .memory_type)"
assert_eq "get: status short_term" short_term "$(jget "$(body_of "$r")" .status)"

r=$(req GET /v1/memories/stats)
assert_eq "stats: 200" 200 "$(status_of "$r")"
assert_eq "stats: total_memories" 3 "$(jget "$(body_of "$r")" .total_memories)"
assert_eq "stats: short_term" 3 "$(jget "$(body_of "$r")" .short_term)"
assert_eq "stats: long_term" 0 "$(jget "$(body_of "$r")" .long_term)"
DIM=$(jget "$(body_of "$r")" .embedding_dim)
assert_eq "stats: every memory has a vector" 3 "$(jget "$(body_of "$r")" .with_embedding)"

r=$(req DELETE "/v1/memories/$APPLE")
assert_eq "delete: 200" 200 "$(status_of "$r")"
assert_eq "delete: deleted" true "$(jget "$(body_of "$r")" .deleted)"
r=$(req GET "/v1/memories/$APPLE")
assert_eq "get after delete: 404" 404 "$(status_of "$r")"
assert_contains "404 names the id" "$(body_of "$r")" "no memory with id '$APPLE'"
assert_eq "delete again: 404" 404 "$(status_of "$(req DELETE "/v1/memories/$APPLE")")"
assert_eq "stats after delete" 2 "$(jget "$(body_of "$(req GET /v1/memories/stats)")" .total_memories)"

big=$(head -c 2100 /dev/zero | tr '\0' 'a')
r=$(req POST /v1/memories "{\"content\":\"$big\"}")
assert_eq "oversize content: 413" 413 "$(status_of "$r")"
assert_contains "oversize content: says the limit" "$(body_of "$r")" "content is 2100 bytes; the limit is 2000 bytes (memory.max_content_bytes)"
r=$(req POST /v1/memories '{"content":"x","memory_type":"dream"}')
assert_eq "bad memory_type: 400" 400 "$(status_of "$r")"
assert_contains "bad memory_type: named" "$(body_of "$r")" '"param":"memory_type"'
assert_eq "empty content: 400" 400 "$(status_of "$(req POST /v1/memories '{"content":""}')")"
assert_eq "stats unchanged by refused stores" 2 "$(jget "$(body_of "$(req GET /v1/memories/stats)")" .total_memories)"

# ---- embeddings --------------------------------------------------------------------------------------
r=$(req POST /v1/embeddings '{"input":"Once upon a time","model":"my-embedder"}')
assert_eq "embeddings: 200" 200 "$(status_of "$r")"
E1=$(body_of "$r")
assert_eq "embeddings: object list" list "$(jget "$E1" .object)"
assert_eq "embeddings: model echoed" my-embedder "$(jget "$E1" .model)"
assert_eq "embeddings: one item" 1 "$(jget "$E1" .data.length)"
assert_eq "embeddings: item shape" '["object","index","embedding"]' "$(jget "$E1" '.data[0] && Object.keys(d.data[0])')"
assert_eq "embeddings: the store's dimension" "$DIM" "$(jget "$E1" '.data[0].embedding.length')"
norm=$(jget "$E1" '.data[0].embedding.reduce((s, x) => s + x * x, 0).toFixed(4)')
assert_eq "embeddings: unit length" "1.0000" "$norm"
if [ "$(jget "$E1" .usage.prompt_tokens)" -gt 0 ]; then ok "embeddings: usage counts tokens"; else bad "embeddings: usage counts tokens" "$E1"; fi
r=$(req POST /v1/embeddings '{"input":["a","Once upon a time","b"],"encoding_format":"base64"}')
E3=$(body_of "$r")
assert_eq "embeddings: array input, in order" '[0,1,2]' "$(jget "$E3" '.data.map((x) => x.index)')"
same=$(node -e 'const a=JSON.parse(process.argv[1]).data[0].embedding, b=JSON.parse(process.argv[2]).data[1].embedding;
  const buf=Buffer.from(b, "base64");
  const g=new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  console.log(g.length === a.length && a.every((x, i) => Math.abs(x - g[i]) < 1e-6))' "$E1" "$E3")
assert_eq "embeddings: base64 decodes to the same vector" true "$same"
assert_eq "embeddings: bad input 400" 400 "$(status_of "$(req POST /v1/embeddings '{"input":[1,2]}')")"
assert_eq "embeddings: empty input 400" 400 "$(status_of "$(req POST /v1/embeddings '{"input":""}')")"
assert_eq "embeddings: bad encoding 400" 400 "$(status_of "$(req POST /v1/embeddings '{"input":"x","encoding_format":"int8"}')")"
assert_contains "/metrics counts 201s" "$(curl -s "$URL/metrics")" 'elpis_http_responses_total{code="201"} 3'
stop_server
assert_eq "clean SIGTERM exit" 0 "$STOP_RC"

# ---- 2. timed consolidation ------------------------------------------------------------------------------
ELPIS_MEMORY__BUFFER_THRESHOLD=3 ELPIS_MEMORY__MIN_AGE_HOURS=0 start_server cons --data-dir "$TMP/d2" --consolidate-interval 0.2
for _ in 1 2 3; do   # three copies of one strong memory: one cluster, important enough to promote
  req POST /v1/memories '{"content":"We won the big race together","emotional_context":{"valence":1,"arousal":1}}' >/dev/null
done
for _ in $(seq 100); do grep -q ' memory_consolidated ' "$LOG" && break; sleep 0.05; done
st=$(body_of "$(req GET /v1/memories/stats)")
assert_eq "timer: one promoted to long_term" 1 "$(jget "$st" .long_term)"
assert_eq "timer: the others archived" 2 "$(jget "$st" .archived)"
assert_contains "timer: logged" "$(cat "$LOG")" "memory_consolidated short_term=3 clusters=1 promoted=1 archived=2"
assert_contains "timer: counted in /metrics" "$(curl -s "$URL/metrics")" "elpis_memory_consolidations_total 1"
t0=$(date +%s%N)
stop_server
assert_eq "consolidation timer: clean SIGTERM exit" 0 "$STOP_RC"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# a hang check, not a speed goal: sanitizer builds on a loaded machine are ~10x slower
STOP_MS=$([ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && echo 30000 || echo 3000)
if [ "$ms" -lt "$STOP_MS" ]; then ok "the worker stops promptly (${ms} ms)"; else bad "the worker stops promptly" "${ms} ms (limit $STOP_MS)"; fi

# ---- 3. durability: kill -9 at a random moment, every acknowledged store is there ---------------------------
# store_loop ROUND: stores until the server is gone; an id is recorded only once its 201 arrived.
store_loop() {
  local i=0 out
  while :; do
    i=$((i + 1))
    out=$(curl -s -w '\n%{http_code}' -H 'Content-Type: application/json' "$URL/v1/memories" \
          -d "{\"content\":\"round $1 memory $i: Lily and Tom played with a red ball\"}") || break
    [ "${out##*$'\n'}" = 201 ] || continue
    printf '%s\n' "${out%$'\n'*}" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' >>"$TMP/acked"
  done
}
ROUNDS=20; [ -n "${ASAN_OPTIONS-}${TSAN_OPTIONS-}" ] && ROUNDS=5
: >"$TMP/acked"
lost=0; rounds_done=0
start_server dur0 --data-dir "$TMP/d3"
for round in $(seq "$ROUNDS"); do
  store_loop "$round" & CLIENT_PID=$!
  sleep "0.$(( 20 + RANDOM % 60 ))"   # a random moment, 0.20 .. 0.79 s into the loop
  kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null; SRV_PID=""
  wait "$CLIENT_PID"; CLIENT_PID=""
  start_server "dur$round" --data-dir "$TMP/d3"   # the restart; it also serves the next round
  mapfile -t ids <"$TMP/acked"   # every round so far: nothing acknowledged may ever go
  urls=(); for id in "${ids[@]}"; do urls+=(-o /dev/null "$URL/v1/memories/$id"); done   # one connection, every id
  found=$(curl -s -w '%{http_code}\n' "${urls[@]}" | grep -c '^200$')
  [ "$found" -eq "${#ids[@]}" ] || { lost=$((lost + ${#ids[@]} - found)); echo "round $round: $found of ${#ids[@]} found"; }
  rounds_done=$round
done
n_acked=$(wc -l <"$TMP/acked")
if [ "$n_acked" -gt "$ROUNDS" ]; then ok "durability: $n_acked stores acknowledged over $rounds_done kill -9 rounds"
else bad "durability: the client got stores acknowledged" "only $n_acked"; fi
assert_eq "durability: every acknowledged memory found after restart" 0 "$lost"
total=$(jget "$(body_of "$(req GET /v1/memories/stats)")" .total_memories)
if [ "$total" -ge "$n_acked" ]; then ok "durability: the store holds at least the acknowledged ($total >= $n_acked)"
else bad "durability: the store holds at least the acknowledged" "$total < $n_acked"; fi
stop_server
assert_eq "after the kill -9 rounds: clean SIGTERM exit" 0 "$STOP_RC"

if grep -q -e 'Sanitizer' -e 'runtime error' "$TMP"/*.err; then bad "no sanitizer reports" "$(grep -h -m3 -e Sanitizer -e 'runtime error' "$TMP"/*.err)"
else ok "no sanitizer reports"; fi
finish
