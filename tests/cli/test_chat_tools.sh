#!/usr/bin/env bash
# The `elpis chat` agent loop with real local tools, against a scripted
# OpenAI-compatible server (tests/cli/chat_fake_server.mjs): the tiny test
# model never writes tool calls, so the replies that contain them are
# scripted and everything on the client side is real (SSE parsing, the
# tool_call parser, the sandbox, the tool messages sent back, emotion events).
# The request log is inspected with node (which install-deps.sh provides).
source "$(dirname "$0")/lib.sh"
NODE=$(command -v node) || { bad "node present"; finish; exit 1; }
FAKE_PID=""
trap '[ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

"$NODE" "$(dirname "$0")/chat_fake_server.mjs" "$TMP/port" "$TMP/fake.log" 2>"$TMP/fake.err" &
FAKE_PID=$!
for _ in $(seq 100); do [ -f "$TMP/port" ] && break; sleep 0.1; done
[ -f "$TMP/port" ] || { bad "fake server starts" "$(cat "$TMP/fake.err")"; finish; exit 1; }
URL="http://127.0.0.1:$(cat "$TMP/port")"

mkdir -p "$TMP/ws/sub" "$TMP/outside"
printf 'line one\nline two\n' >"$TMP/ws/a.txt"
echo "TOP SECRET" >"$TMP/outside/secret.txt"

# req N JS-EXPR: evaluate over `reqs` (the logged request bodies) and `m` (request N's messages, 1-based)
req() {
  "$NODE" -e "
const reqs = require('fs').readFileSync('$TMP/fake.log', 'utf8').split('\n').filter((l) => l.includes('\"request\"'))
  .map((l) => JSON.parse(l).request);
const m = reqs[$1 - 1].messages;
const v = ($2);
console.log(typeof v === 'string' ? v : JSON.stringify(v));"
}
n_requests() { grep -c '"request"' "$TMP/fake.log"; }

# ---- list_directory runs and its result goes back to the model ---------------------------------------------
printf 'list\n/status\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_eq "list: exit 0" "0" "$?"
assert_eq "list: two requests (call, then result)" "2" "$(n_requests)"
assert_contains "list: activity line" "$(cat "$TMP/err")" "[tool] Listing . OK"
assert_eq "list: tools offered" "list_directory" "$(req 1 "reqs[0].tools[3].function.name")"
assert_eq "list: roles of the second request" "user,assistant,tool" "$(req 2 "m.map((x) => x.role).join(',')")"
assert_eq "list: the call id links the tool message" "true" "$(req 2 "m[2].tool_call_id === m[1].tool_calls[0].id && m[2].name === 'list_directory'")"
assert_eq "list: result has the workspace's files" "a.txt,sub" "$(req 2 "((r) => [...r.files, ...r.directories].map((f) => f.name).sort().join(','))(JSON.parse(m[2].content).result)")"
assert_eq "list: success envelope" "true" "$(req 2 "JSON.parse(m[2].content).success")"
assert_contains "list: final reply printed" "$(cat "$TMP/out")" "Done after 1 tool results."
assert_contains "list: counted" "$(cat "$TMP/out")" "messages: 4 (replies 2, tool calls 1)"
assert_contains "list: success emotion event" "$(cat "$TMP/fake.log")" '"emotion_event":{"event_type":"success","intensity":0.3}'

# ---- an escape is refused and the refusal returns to the model ----------------------------------------------
: >"$TMP/fake.log"
printf 'escape\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_contains "escape: refused in the activity line" "$(cat "$TMP/err")" "!!: ../outside/secret.txt: '..' is not allowed"
assert_eq "escape: refusal sent back" "false" "$(req 2 "JSON.parse(m[2].content).success")"
if grep -q 'TOP SECRET' "$TMP/fake.log" "$TMP/out" "$TMP/err"; then bad "escape: secret never read"; else ok "escape: secret never read"; fi
assert_contains "escape: frustration emotion event" "$(cat "$TMP/fake.log")" '"event_type":"frustration","intensity":0.5'

# ---- OpenAI tool_calls deltas (arguments split across chunks) --------------------------------------------------
: >"$TMP/fake.log"
printf 'openai\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_eq "openai: tool message answers call_openai1" "call_openai1" "$(req 2 "m[2].tool_call_id")"
assert_eq "openai: read_file content returned" "line one" "$(req 2 "JSON.parse(m[2].content).result.content.split('\\n')[0]")"
assert_eq "openai: arguments reassembled" '{"file_path": "a.txt"}' "$(req 2 "m[1].tool_calls[0].function.arguments")"

# ---- execute_bash: refused without a terminal to confirm on, runs with --yes ---------------------------------------
: >"$TMP/fake.log"
printf 'bash\n' | setsid -w "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" >"$TMP/out" 2>"$TMP/err"
assert_contains "bash: no terminal, no --yes: refused" "$(cat "$TMP/err")" "no terminal to confirm on"
if [ ! -e "$TMP/ws/made.txt" ]; then ok "bash: refused command did not run"; else bad "bash: refused command did not run"; fi
assert_contains "bash: the model is told" "$(req 2 "m[2].content")" "declined"
printf 'bash\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_eq "bash: --yes runs it in the workspace" "from-bash" "$(cat "$TMP/ws/made.txt" 2>/dev/null)"

# ---- reasoning: hidden by default, shown with /thoughts on, never stored -----------------------------------------
: >"$TMP/fake.log"
printf 'think\n/thoughts on\nthink\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" >"$TMP/out" 2>"$TMP/err"
assert_eq "think: answers printed without the tags" "2" "$(grep -c '^The answer is 42.$' "$TMP/out")"
assert_eq "think: the thought shown once (after /thoughts on)" "1" "$(grep -c '^\[thought\] The user wants a thought.$' "$TMP/err")"
if grep -q 'reasoning' "$TMP/out"; then bad "think: no tags on stdout"; else ok "think: no tags on stdout"; fi
assert_eq "think: history keeps the answer only" "The answer is 42." "$(req 2 "m[1].content")"

# ---- reasoning the server parsed (delta.reasoning_content, as elpis serve sends it) ---------------------------------
: >"$TMP/fake.log"
printf '/thoughts on\nparsed\nhello\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" >"$TMP/out" 2>"$TMP/err"
assert_eq "parsed: the answer printed" "1" "$(grep -c '^The answer is 43.$' "$TMP/out")"
assert_contains "parsed: the thought shown" "$(cat "$TMP/err")" "The user wants a parsed thought."
if grep -q 'parsed thought' "$TMP/out"; then bad "parsed: the thought is not answer text"; else ok "parsed: the thought is not answer text"; fi
assert_eq "parsed: history keeps the answer only" "The answer is 43." "$(req 2 "m[1].content")"

# ---- a raw tool_call block AND server tool_calls: the call runs once ----------------------------------------------------
: >"$TMP/fake.log"
rm -f "$TMP/ws/count.txt"
printf 'both\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_eq "both: the command ran once" "1" "$(grep -c once "$TMP/ws/count.txt" 2>/dev/null)"
assert_eq "both: one tool message, for the server's call id" "call_both00000001" "$(req 2 "m.filter((x) => x.role === 'tool').map((x) => x.tool_call_id).join(',')")"

# ---- a model that never stops calling tools is cut off after 10 requests ---------------------------------------------
: >"$TMP/fake.log"
printf 'loop\n' | "$ELPIS_BIN" chat --plain --server "$URL" --workspace "$TMP/ws" --yes >"$TMP/out" 2>"$TMP/err"
assert_eq "loop: 10 requests" "10" "$(n_requests)"
assert_contains "loop: says why" "$(cat "$TMP/err")" "stopped after 10 requests in one turn"

# ---- --no-tools: no tools offered, tool_call text is just text ------------------------------------------------------
: >"$TMP/fake.log"
printf 'list\n' | "$ELPIS_BIN" chat --plain --server "$URL" --no-tools >"$TMP/out" 2>"$TMP/err"
assert_eq "no-tools: one request" "1" "$(n_requests)"
assert_eq "no-tools: no tools field" "false" "$(req 1 "'tools' in reqs[0]")"

# ---- a request the server refuses: the error is shown, the turn is dropped, the next one works --------------------
: >"$TMP/fake.log"
printf 'hello\nfail\n/status\nhello again\n' | "$ELPIS_BIN" chat --plain --server "$URL" >"$TMP/out" 2>"$TMP/err"
assert_eq "refused request: exit 1" "1" "$?"
assert_contains "refused request: the server's message" "$(cat "$TMP/err")" "server answered 400: the prompt has 9999 tokens"
assert_contains "refused request: the failed turn is not kept" "$(cat "$TMP/out")" "messages: 2 (replies 1"
assert_eq "refused request: the next request is user,assistant,user" "user,assistant,user" "$(req 3 "m.map((x) => x.role).join(',')")"

finish
