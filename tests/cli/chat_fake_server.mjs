// chat_fake_server.mjs -- a scripted OpenAI-compatible server for the
// `elpis chat` tool tests (node, which scripts/install-deps.sh provides).
//
// The tiny test model never writes tool calls, so the agent loop is tested
// against replies scripted here. Usage: node chat_fake_server.mjs PORT_FILE LOG_FILE
//
// Replies (chosen by the last user message; a request that ends with tool
// results gets "Done after N tool results.", except in the "loop" script):
//   "list"     a ```tool_call block: list_directory of "."
//   "escape"   a ```tool_call block: read_file of "../outside/secret.txt"
//   "openai"   OpenAI tool_calls deltas (arguments split): read_file of "a.txt"
//   "bash"     a ```tool_call block: execute_bash "echo from-bash > made.txt"
//   "think"    <reasoning>...</reasoning> then an answer
//   "parsed"   the same, split as `elpis serve` does: delta.reasoning_content, then content
//   "both"     as `elpis serve` with tools: the raw ```tool_call block as content (bash:
//              append a line to count.txt) AND OpenAI tool_calls on the finish chunk
//   "loop"     a tool call every time (the client must stop after 10 requests)
//   "fail"     HTTP 400 with an OpenAI error body (context_length_exceeded)
//   anything   "Hello from the fake server."
// Each chat request body is appended to LOG_FILE as {"request": body, "session"};
// emotion events (POST /v1/psyche/emotion) as {"emotion_event": body, "session"}.
import fs from 'node:fs';
import http from 'node:http';

const [portFile, logFile] = process.argv.slice(2);
const state = { valence: 0.0, arousal: 0.0, quadrant: 'calm' };

const log = (obj) => fs.appendFileSync(logFile, JSON.stringify(obj) + '\n');
const block = (name, args) => 'I will use a tool.\n```tool_call\n' + JSON.stringify({ name, arguments: args }) + '\n```\n';
const chunk = (delta, finish = null) => ({
  id: 'chatcmpl-fake', object: 'chat.completion.chunk', created: 0, model: 'fake',
  choices: [{ index: 0, delta, finish_reason: finish }],
});

function textChunks(text) {
  const out = [chunk({ role: 'assistant', content: '' })];
  for (let i = 0; i < text.length; i += 5) out.push(chunk({ content: text.slice(i, i + 5) }));   // tags and fences get split
  out.push(chunk({}, 'stop'));
  return out;
}

function openaiCalls() {
  const out = [chunk({ role: 'assistant', content: '' }), chunk({ content: 'Reading it.' }),
    chunk({ tool_calls: [{ index: 0, id: 'call_openai1', type: 'function', function: { name: 'read_file', arguments: '' } }] })];
  for (const piece of ['{"file_', 'path": "a.t', 'xt"}']) out.push(chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }));
  out.push(chunk({}, 'tool_calls'));
  return out;
}

function parsedThought() {
  return [chunk({ role: 'assistant', content: '' }), chunk({ reasoning_content: 'The user wants ' }),
    chunk({ reasoning_content: 'a parsed thought.' }), chunk({ content: 'The answer is 43.' }), chunk({}, 'stop')];
}

function blockAndCalls() {
  const args = { command: 'echo once >> count.txt' };
  const out = textChunks(block('execute_bash', args));
  out[out.length - 1] = chunk({ tool_calls: [{ index: 0, id: 'call_both00000001', type: 'function',
    function: { name: 'execute_bash', arguments: JSON.stringify(args) } }] }, 'tool_calls');
  return out;
}

function script(messages) {
  const last = messages[messages.length - 1] || {};
  const users = messages.filter((m) => m.role === 'user');
  const user = users.length ? users[users.length - 1].content : '';
  if (last.role === 'tool' && user !== 'loop')
    return textChunks(`Done after ${messages.filter((m) => m.role === 'tool').length} tool results.`);
  switch (user) {
    case 'list': return textChunks(block('list_directory', { dir_path: '.' }));
    case 'escape': return textChunks(block('read_file', { file_path: '../outside/secret.txt' }));
    case 'bash': return textChunks(block('execute_bash', { command: 'echo from-bash > made.txt' }));
    case 'loop': return textChunks(block('list_directory', {}));
    case 'think': return textChunks('<reasoning>The user wants a thought.</reasoning>The answer is 42.');
    case 'openai': return openaiCalls();
    case 'parsed': return parsedThought();
    case 'both': return blockAndCalls();
    default: return textChunks('Hello from the fake server.');
  }
}

function sendJson(res, code, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  let raw = '';
  req.on('data', (d) => { raw += d; });
  req.on('end', () => {
    const session = req.headers['x-session-id'] || null;
    if (req.method === 'GET') {
      if (req.url === '/health') return sendJson(res, 200, { status: 'ok', running: 0, queued: 0 });
      if (req.url === '/v1/models') return sendJson(res, 200, { object: 'list', data: [{ id: 'fake', object: 'model' }] });
      if (req.url === '/v1/psyche/emotion') return sendJson(res, 200, state);
      return sendJson(res, 404, { error: { message: 'no route' } });
    }
    const body = raw ? JSON.parse(raw) : {};
    if (req.url === '/v1/psyche/emotion') {
      log({ emotion_event: body, session });
      state.valence = Math.round((state.valence + (body.event_type === 'success' ? 0.1 : -0.1)) * 1000) / 1000;
      return sendJson(res, 200, state);
    }
    if (req.url !== '/v1/chat/completions') return sendJson(res, 404, { error: { message: 'no route' } });
    log({ request: body, session });
    const msgs = body.messages || [];
    if (msgs.length && msgs[msgs.length - 1].content === 'fail')
      return sendJson(res, 400, { error: { message: 'the prompt has 9999 tokens; the context holds 2048', type: 'invalid_request_error',
        param: 'messages', code: 'context_length_exceeded' } });
    res.writeHead(200, { 'Content-Type': 'text/event-stream', Connection: 'close' });
    for (const c of script(body.messages || [])) res.write('data: ' + JSON.stringify(c) + '\n\n');
    res.end('data: [DONE]\n\n');
  });
});

server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
