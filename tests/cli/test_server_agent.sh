#!/usr/bin/env bash
# The agent loop inside `elpis serve` (issue 8, src/server/agent.c), with curl
# against the real binary and the tiny test model:
#   - memory injection: a memory stored over HTTP is injected into a chat
#     about it ("elpis":{"memories": N >= 1}, stream and non-stream);
#     "elpis_memory": false and --memory-context 0 turn it off;
#   - auto-storage: "remember ..." in the user text stores the exchange
#     (a search finds it, tagged auto-stored); --auto-store 0 does not;
#   - compaction: a long history on a small --ctx is answered (not a
#     context error), "compacted" says how many messages the summary
#     replaced, and the dropped messages are staged into memory;
#   - the request fields: reasoning_format, tools, tool messages and
#     assistant tool_calls are accepted, bad values are 400 naming the field.
#   - output parsing end to end: the tiny model never writes reasoning tags
#     or tool calls, so a second server runs with --upstream pointing at the
#     scripted fake (tests/cli/chat_fake_server.mjs), whose raw text has them:
#     reasoning_content, tool_calls and finish_reason "tool_calls", stream and
#     non-stream (the split at every byte position: tests/unit/test_server_agent.c).
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }
command -v node >/dev/null || { bad "node present"; finish; exit 1; }

FAKE_PID=""
trap '[ -n "$SRV_PID" ] && kill -KILL "$SRV_PID" 2>/dev/null; [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
# the "elpis" object of the last event of an SSE body that has one
sse_elpis() { grep '"elpis"' <<<"$1" | tail -1 | sed 's/^data: //'; }
chat() {   # chat USER-TEXT [EXTRA-JSON-FIELDS]
  node -e 'console.log(JSON.stringify(Object.assign({messages:[{role:"user",content:process.argv[1]}],max_tokens:12},
    JSON.parse(process.argv[2]||"{}"))))' "$1" "${2-}"
}

# ---- 1. memory injection ---------------------------------------------------------------------------------
srv_start main --ctx 512 --data-dir "$TMP/d1"
r=$(http POST /v1/memories '{"content":"Lily has a red ball named Bobo","memory_type":"episodic"}')
assert_eq "memory stored over HTTP" 201 "$(status_of "$r")"
r=$(http POST /v1/chat/completions "$(chat 'Where is the red ball Bobo?')")
assert_eq "chat with memories: 200" 200 "$(status_of "$r")"
n=$(jget "$(body_of "$r")" .elpis.memories)
if [ "${n:-0}" -ge 1 ]; then ok "non-stream: elpis.memories >= 1"; else bad "non-stream: elpis.memories >= 1" "got [$n]: $r"; fi
r=$(curl -s -N "$URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "$(chat 'Where is Bobo the red ball?' '{"stream":true}')")
n=$(jget "$(sse_elpis "$r")" .elpis.memories)
if [ "${n:-0}" -ge 1 ]; then ok "stream: elpis.memories >= 1 on the last chunk"; else bad "stream: elpis.memories >= 1" "got [$n]"; fi
assert_contains "stream: ends with [DONE]" "$r" "data: [DONE]"
r=$(http POST /v1/chat/completions "$(chat 'Where is the red ball Bobo?' '{"elpis_memory":false}')")
assert_eq "elpis_memory false: no memories" 0 "$(jget "$(body_of "$r")" .elpis.memories)"

# ---- 2. auto-storage --------------------------------------------------------------------------------------
r=$(http POST /v1/chat/completions "$(chat 'Please remember that my cat is called Zork.')")
assert_eq "remember: 200" 200 "$(status_of "$r")"
r=$(http GET '/v1/memories?q=Zork%20cat&n=5')
hit=$(jget "$(body_of "$r")" '.results.filter((m) => m.content.includes("called Zork")).map((m) => m.tags.join(",") + "|" + m.memory_type)[0]')
assert_eq "remember: the exchange is stored, episodic, tagged" "auto-stored,important|episodic" "$hit"
assert_contains "remember: logged" "$(cat "$LOG")" "memory_auto_stored"
r=$(http POST /v1/chat/completions "$(chat 'Please remember the dog is called Quux.' '{"elpis_memory":false}')")
r=$(http GET '/v1/memories?q=Quux&n=5')
assert_eq "elpis_memory false: nothing stored" "0" "$(jget "$(body_of "$r")" '.results.filter((m) => m.content.includes("Quux")).length')"

# ---- 3. compaction ------------------------------------------------------------------------------------------
LONG=$(node -e 'const m=[{role:"system",content:"You are a storyteller who remembers dogs."}];
  for (let i=0;i<40;i++) m.push({role:i%2?"assistant":"user",content:"Message "+i+": the dog likes to run in the park because it is fun."});
  m.push({role:"user",content:"Tell me a story."}); console.log(JSON.stringify({messages:m,max_tokens:16}))')
r=$(http POST /v1/chat/completions "$LONG")
assert_eq "long history on --ctx 512: 200, not a context error" 200 "$(status_of "$r")"
c=$(jget "$(body_of "$r")" .elpis.compacted)
if [ "${c:-0}" -ge 1 ] && [ "$c" -le 37 ]; then ok "compacted: some messages, at least the last 4 kept"; else bad "compacted count" "[$c]"; fi
r=$(http POST /v1/chat/completions "$LONG")
assert_eq "the same history again: 200" 200 "$(status_of "$r")"
r=$(http GET '/v1/memories?q=dog%20park&n=50')
staged=$(jget "$(body_of "$r")" '.results.filter((m) => m.tags.includes("compacted")).length')
if [ "${staged:-0}" -ge 1 ]; then ok "dropped messages staged into memory (tag compacted)"; else bad "staged" "[$staged]"; fi
dups=$(node -e 'const d=JSON.parse(process.argv[1]).results.filter((m) => m.tags.includes("compacted"));
  console.log(d.length - new Set(d.map((m) => m.content)).size)' "$(body_of "$r")")
assert_eq "a message dropped twice is staged once" 0 "$dups"

# ---- 4. request fields --------------------------------------------------------------------------------------
r=$(http POST /v1/chat/completions "$(chat 'Hi' '{"reasoning_format":"none"}')")
assert_eq "reasoning_format none: 200" 200 "$(status_of "$r")"
r=$(http POST /v1/chat/completions "$(chat 'Hi' '{"reasoning_format":"fancy"}')")
assert_eq "reasoning_format bad: 400" 400 "$(status_of "$r")"
assert_eq "reasoning_format bad: names the field" reasoning_format "$(jget "$(body_of "$r")" .error.param)"
r=$(http POST /v1/chat/completions "$(chat 'Hi' '{"elpis_memory":"no"}')")
assert_eq "elpis_memory not a bool: 400 naming it" "400 elpis_memory" "$(status_of "$r") $(jget "$(body_of "$r")" .error.param)"
TOOLS='{"tools":[{"type":"function","function":{"name":"read_file","description":"Read a file","parameters":{"type":"object","properties":{"file_path":{"type":"string"}},"required":["file_path"]}}}]}'
r=$(http POST /v1/chat/completions "$(chat 'Read a.txt' "$TOOLS")")
assert_eq "tools: 200" 200 "$(status_of "$r")"
r=$(http POST /v1/chat/completions "$(chat 'Hi' '{"tools":[{"type":"function"}]}')")
assert_eq "tools without a function name: 400 naming tools" "400 tools" "$(status_of "$r") $(jget "$(body_of "$r")" .error.param)"
TOOLMSG=$(node -e 'console.log(JSON.stringify({max_tokens:8, tools: JSON.parse(process.argv[1]).tools, messages:[
  {role:"user",content:"Read a.txt"},
  {role:"assistant",content:null,tool_calls:[{id:"call_0123456789ab",type:"function",function:{name:"read_file",arguments:"{\"file_path\":\"a.txt\"}"}}]},
  {role:"tool",tool_call_id:"call_0123456789ab",content:"{\"success\":true,\"result\":\"line one\"}"}]}))' "$TOOLS")
r=$(http POST /v1/chat/completions "$TOOLMSG")
assert_eq "a tool message and assistant tool_calls: 200" 200 "$(status_of "$r")"
srv_stop
assert_eq "server stops cleanly" 0 "$STOP_RC"

# ---- 5. the global switches ------------------------------------------------------------------------------------
srv_start off --ctx 512 --data-dir "$TMP/d1" --memory-context 0 --auto-store 0
r=$(http POST /v1/chat/completions "$(chat 'Where is the red ball Bobo?')")
assert_eq "--memory-context 0: no memories" 0 "$(jget "$(body_of "$r")" .elpis.memories)"
http POST /v1/chat/completions "$(chat 'Please remember the bird is called Plover.')" >/dev/null
r=$(http GET '/v1/memories?q=Plover&n=5')
assert_eq "--auto-store 0: nothing stored" "0" "$(jget "$(body_of "$r")" '.results.filter((m) => m.content.includes("Plover")).length')"
srv_stop

# ---- 6. output parsing end to end (--upstream: the scripted fake server's raw text) ----------------------------------
node "$(dirname "$0")/chat_fake_server.mjs" "$TMP/fake.port" "$TMP/fake.log" 2>"$TMP/fake.err" &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$TMP/fake.port" ] && break; sleep 0.1; done
[ -s "$TMP/fake.port" ] || { bad "fake server starts" "$(cat "$TMP/fake.err")"; finish; exit 1; }
srv_start up --data-dir :memory: --upstream "http://127.0.0.1:$(cat "$TMP/fake.port")"
LIST_TOOLS='{"tools":[{"type":"function","function":{"name":"list_directory"}}]}'
r=$(http POST /v1/chat/completions "$(chat think)")
assert_eq "reasoning: content without the block" "The answer is 42." "$(jget "$(body_of "$r")" '.choices[0].message.content')"
assert_eq "reasoning: reasoning_content" "The user wants a thought." "$(jget "$(body_of "$r")" '.choices[0].message.reasoning_content')"
r=$(http POST /v1/chat/completions "$(chat think '{"reasoning_format":"none"}')")
assert_eq "reasoning_format none: the raw text" "<reasoning>The user wants a thought.</reasoning>The answer is 42." \
  "$(jget "$(body_of "$r")" '.choices[0].message.content')"
s=$(curl -s -N "$URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "$(chat think '{"stream":true}')")
deltas() { grep '^data: {' <<<"$1" | sed 's/^data: //' | node -e 'let t="";process.stdin.on("data",(d)=>t+=d).on("end",()=>{
  console.log(t.trim().split("\n").map((l)=>JSON.parse(l).choices[0]).filter(Boolean).map((c)=>c.delta[process.argv[1]]||"").join(""))})' "$2"; }
assert_eq "stream: delta.reasoning_content" "The user wants a thought." "$(deltas "$s" reasoning_content)"
assert_eq "stream: delta.content" "The answer is 42." "$(deltas "$s" content)"
r=$(http POST /v1/chat/completions "$(chat list "$LIST_TOOLS")")
assert_eq "tool call: finish_reason tool_calls" tool_calls "$(jget "$(body_of "$r")" '.choices[0].finish_reason')"
assert_eq "tool call: name and arguments" 'list_directory {"dir_path":"."}' \
  "$(jget "$(body_of "$r")" '.choices[0].message.tool_calls.map((c) => c.function.name + " " + c.function.arguments).join()')"
assert_eq "tool call: id call_ + 12 hex, type function" "true" \
  "$(jget "$(body_of "$r")" '.choices[0].message.tool_calls.every((c) => /^call_[0-9a-f]{12}$/.test(c.id) && c.type === "function")')"
assert_eq "tool call: the block is stripped from content" "I will use a tool." "$(jget "$(body_of "$r")" '.choices[0].message.content')"
r=$(http POST /v1/chat/completions "$(chat list)")
assert_eq "no tools in the request: no tool_calls" "stop undefined" \
  "$(jget "$(body_of "$r")" '.choices.map((c) => c.finish_reason + " " + c.message.tool_calls)[0]')"
s=$(curl -s -N "$URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "$(chat list "$(node -e \
  'console.log(JSON.stringify(Object.assign({stream:true}, JSON.parse(process.argv[1]))))' "$LIST_TOOLS")")")
last=$(grep '"finish_reason":"' <<<"$s" | tail -1 | sed 's/^data: //')
assert_eq "stream: the finish chunk carries tool_calls" 'tool_calls 0 list_directory' \
  "$(jget "$last" '.choices.map((c) => [c.finish_reason, c.delta.tool_calls[0].index, c.delta.tool_calls[0].function.name].join(" "))[0]')"
assert_contains "stream: the raw block went out as text first" "$(deltas "$s" content)" '```tool_call'
srv_stop

finish
