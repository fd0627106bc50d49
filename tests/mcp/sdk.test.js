// sdk.test.js -- `elpis mcp` driven by the official TypeScript SDK client:
// lifecycle, the tool list and its schemas, every tool, resources, progress,
// cancellation through AbortController, and the stream tools.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Ajv from 'ajv';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { startClient, call, callError, user, sleep, TOOL_NAMES, SLOW } from './lib.js';

let s;   // one server for the tests that do not need special flags
before(async () => { s = await startClient(); });
after(async () => { await s.close(); });

test('initialize: server info and capabilities', () => {
  const info = s.client.getServerVersion();
  assert.equal(info.name, 'elpis');
  const caps = s.client.getServerCapabilities();
  assert.ok(caps.tools, 'tools capability');
  assert.ok(caps.resources, 'resources capability');
  assert.equal(caps.prompts, undefined, 'no prompts');
  assert.match(s.client.getInstructions() ?? '', /generate/);
});

test('tools/list: the 17 tools (9 + 8 memory), each described, with valid input and output schemas', async () => {
  const { tools } = await s.client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOL_NAMES);
  const ajv = new Ajv({ strict: true, allErrors: true });
  for (const t of tools) {
    assert.ok(t.description && t.description.length > 20, `${t.name}: description`);
    assert.match(t.name, /^[A-Za-z0-9_.-]{1,128}$/);
    assert.equal(t.inputSchema.type, 'object', `${t.name}: inputSchema is an object schema`);
    assert.equal(t.outputSchema.type, 'object', `${t.name}: outputSchema is an object schema`);
    for (const which of ['inputSchema', 'outputSchema']) {
      assert.ok(ajv.validateSchema(t[which]), `${t.name}.${which}: ${ajv.errorsText(ajv.errors)}`);
      ajv.compile(t[which]);   // strict mode: throws on unknown keywords or bad types
    }
  }
  const gen = tools.find((t) => t.name === 'generate');
  assert.deepEqual(Object.keys(gen.inputSchema.properties).sort(),
    ['emotional_modulation', 'ignore_eos', 'max_tokens', 'messages', 'temperature']);
  assert.deepEqual(gen.inputSchema.required, ['messages']);
});

test('generate: greedy text, deterministic, with the original fields', async () => {
  const args = { messages: user('Once upon a time'), max_tokens: 24, temperature: 0 };
  const a = await call(s.client, 'generate', args);
  const b = await call(s.client, 'generate', args);
  assert.ok(a.content.length > 0, 'some text');
  assert.equal(a.content, b.content, 'temperature 0 is deterministic');
  assert.equal(a.modulated_params.temperature, 0, 'explicit temperature passes through');
  assert.equal(a.modulated_params.top_p, 0.9, 'explicit temperature leaves top_p at the base value');
  assert.ok(a.usage.completion_tokens > 0 && a.usage.completion_tokens <= 24);
  assert.ok(['stop', 'length'].includes(a.finish_reason));
  assert.equal(typeof a.emotional_state.valence, 'number');
});

test('emotion tools and modulated sampling', async () => {
  let st = await call(s.client, 'reset_emotion');
  assert.equal(st.valence, 0);
  assert.equal(st.arousal, 0);
  assert.equal(st.quadrant, 'excited');
  st = await call(s.client, 'update_emotion', { event_type: 'blocked', intensity: 1, context: 'test' });
  assert.ok(st.valence < 0 && st.arousal > 0, JSON.stringify(st));
  assert.equal(st.quadrant, 'frustrated');
  assert.equal(st.update_count, 1);
  const got = await call(s.client, 'get_emotion');
  assert.equal(got.quadrant, 'frustrated');
  // no temperature: arousal > 0 lowers it below the base 0.7, valence < 0 lowers top_p below 0.9
  const g = await call(s.client, 'generate', { messages: user('Tom was'), max_tokens: 4 });
  assert.ok(g.modulated_params.temperature < 0.7, JSON.stringify(g.modulated_params));
  assert.ok(g.modulated_params.top_p < 0.9, JSON.stringify(g.modulated_params));
  // emotional_modulation off: the base values
  const off = await call(s.client, 'generate', { messages: user('Tom was'), max_tokens: 4, emotional_modulation: false });
  assert.deepEqual(off.modulated_params, { temperature: 0.7, top_p: 0.9 });
  st = await call(s.client, 'reset_emotion');
  assert.equal(st.update_count, 0);
  const unknown = await call(s.client, 'update_emotion', { event_type: 'no_such_event' });
  assert.equal(unknown.valence, 0);
  assert.ok(unknown.arousal > 0, 'an unknown event raises arousal slightly');
  await call(s.client, 'reset_emotion');
});

test('function_call: tool_calls (or null) and the emotional state', async () => {
  const r = await call(s.client, 'function_call', {
    messages: user('What is the weather in Paris?'),
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
    temperature: 0, max_tokens: 16,
  });
  assert.ok(r.tool_calls === null || Array.isArray(r.tool_calls));
  assert.equal(typeof r.emotional_state.arousal, 'number');
  assert.equal(typeof r.content, 'string');
});

test('get_capabilities', async () => {
  const c = await call(s.client, 'get_capabilities');
  assert.equal(c.context_length, 2048);
  assert.equal(c.max_tokens, 2048);
  assert.equal(c.backend, 'elpis');
  assert.match(c.model_path, /stories260K\.gguf$/);
  assert.equal(c.temperature, 0.7);
  assert.equal(c.top_p, 0.9);
  assert.equal(c.max_streams, 100);
  assert.equal(c.stream_ttl_seconds, 600);
});

test('resources: list, read both, unknown URI is -32002', async () => {
  const { resources } = await s.client.listResources();
  assert.deepEqual(resources.map((r) => r.uri).sort(), ['emotion://events', 'emotion://state']);
  const state = await s.client.readResource({ uri: 'emotion://state' });
  assert.equal(state.contents[0].mimeType, 'application/json');
  assert.ok('valence' in JSON.parse(state.contents[0].text));
  const events = JSON.parse((await s.client.readResource({ uri: 'emotion://events' })).contents[0].text);
  assert.deepEqual(events.success, [0.2, 0.1]);
  assert.equal(Object.keys(events).length, 15);
  await assert.rejects(s.client.readResource({ uri: 'emotion://nope' }),
    (e) => e instanceof McpError && e.code === -32002);
});

test('errors: unknown tool is -32602; bad arguments are isError naming the field', async () => {
  await assert.rejects(s.client.callTool({ name: 'no_such_tool', arguments: {} }),
    (e) => e instanceof McpError && e.code === -32602 && /no_such_tool/.test(e.message));
  assert.match(await callError(s.client, 'generate', {}), /arguments\.messages.*required/);
  assert.match(await callError(s.client, 'generate', { messages: [{ role: 'user', content: 5 }] }),
    /arguments\.messages\[0\]\.content: expected string/);
  assert.match(await callError(s.client, 'generate', { messages: user('x'), max_tokens: 0 }),
    /arguments\.max_tokens.*minimum/);
  assert.match(await callError(s.client, 'update_emotion', { event_type: 'success', intensity: 'high' }),
    /arguments\.intensity: expected number/);
  assert.match(await callError(s.client, 'generate_stream_read', {}), /stream_id.*required/);
});

test('progress: a generate with a progressToken streams its text as notifications/progress', async () => {
  const events = [];
  const r = await call(s.client, 'generate',
    { messages: user('Once upon a time'), max_tokens: 600, temperature: 0, ignore_eos: true },
    { onprogress: (p) => events.push(p) });
  assert.ok(events.length >= 2, `progress events: ${events.length}`);
  for (let i = 1; i < events.length; i++) assert.ok(events[i].progress > events[i - 1].progress, 'strictly increasing');
  assert.equal(events.at(-1).total, 600);
  const streamed = events.map((e) => e.message).join('');
  assert.ok(streamed.length > 0 && r.content.startsWith(streamed), 'the messages are the content, in order');
  assert.equal(r.usage.completion_tokens, 600, 'ignore_eos generates max_tokens');
  assert.deepEqual(s.errors.map(String).filter((e) => !/progress notification for an unknown token/.test(e)), []);
});

test('streams: start, read to completion, unknown ids, cancel', async () => {
  const start = await call(s.client, 'generate_stream_start',
    { messages: user('Once upon a time'), max_tokens: 40, temperature: 0 });
  assert.equal(start.status, 'started');
  assert.match(start.stream_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  let text = '', last;
  for (let i = 0; i < 400; i++) {
    last = await call(s.client, 'generate_stream_read', { stream_id: start.stream_id });
    text += last.new_content;
    if (last.is_complete) break;
    await sleep(5);
  }
  assert.equal(last.is_complete, true);
  assert.equal(last.full_content, text, 'the reads add up to full_content');
  assert.ok(last.total_tokens > 0 && last.total_tokens <= 40);
  assert.ok(last.emotional_state);
  const ref = await call(s.client, 'generate', { messages: user('Once upon a time'), max_tokens: 40, temperature: 0 });
  assert.equal(text, ref.content, 'a stream produces what generate produces');
  // a finished stream is closed by the read that saw it complete
  assert.match(await callError(s.client, 'generate_stream_read', { stream_id: start.stream_id }), /Unknown stream_id/);
  assert.match(await callError(s.client, 'generate_stream_read', { stream_id: 'nope' }), /Unknown stream_id: nope/);
  assert.match(await callError(s.client, 'generate_stream_cancel', { stream_id: 'nope' }), /Unknown stream_id: nope/);
  const long = await call(s.client, 'generate_stream_start',
    { messages: user('Once upon a time'), max_tokens: 1500, temperature: 0, ignore_eos: true });
  const c = await call(s.client, 'generate_stream_cancel', { stream_id: long.stream_id });
  assert.deepEqual(c, { status: 'cancelled', stream_id: long.stream_id });
  assert.match(await callError(s.client, 'generate_stream_read', { stream_id: long.stream_id }), /Unknown stream_id/);
});

test('abort: notifications/cancelled stops the generation, frees the slot, and no response follows', async () => {
  const t = await startClient(['--parallel', '1']);
  try {
    const ac = new AbortController();
    let progress = 0;
    const p = t.client.callTool(
      { name: 'generate', arguments: { messages: user('Once upon a time'), max_tokens: 1900, ignore_eos: true, temperature: 0 } },
      undefined,
      { signal: ac.signal, onprogress: () => { if (++progress === 1) ac.abort('user'); } });
    await assert.rejects(p);
    assert.ok(progress >= 1);
    // the one slot is free again: a new generate runs and the scheduler has no running request
    await sleep(200);
    const caps = await call(t.client, 'get_capabilities');
    assert.equal(caps.scheduler.running, 0, JSON.stringify(caps.scheduler));
    assert.ok(caps.scheduler.cancelled >= 1, JSON.stringify(caps.scheduler));
    const t0 = Date.now();
    const g = await call(t.client, 'generate', { messages: user('Tom'), max_tokens: 8, temperature: 0 });
    assert.ok(g.content.length > 0);
    assert.ok(Date.now() - t0 < 5000 * SLOW, `the next generate took ${Date.now() - t0} ms`);
    // no response arrived for the cancelled id (a progress notification already in flight when the
    // cancel was sent is a race the spec allows; the SDK reports it as an unknown progress token)
    assert.deepEqual(t.errors.map(String).filter((e) => !/progress notification for an unknown token/.test(e)), []);
  } finally {
    await t.close();
  }
});

test('the reader never waits for a generation: other calls are answered while one runs', async () => {
  const ac = new AbortController();
  let running, done = false;
  const started = new Promise((r) => { running = r; });
  const gen = s.client.callTool(
    { name: 'generate', arguments: { messages: user('Once upon a time'), max_tokens: 1900, ignore_eos: true, temperature: 0 } },
    undefined, { signal: ac.signal, onprogress: () => running() });
  gen.then(() => { done = true; }, () => { done = true; });
  await started;
  await s.client.ping();
  await call(s.client, 'get_emotion');
  await s.client.readResource({ uri: 'emotion://state' });
  assert.equal(done, false, 'answered while the generation was still running');
  ac.abort('done');
  await assert.rejects(gen);
});

test('stream limits: the cap and the idle TTL are enforced (configurable)', async () => {
  const t = await startClient(['--max-streams', '2', '--stream-ttl', '0.5', '--parallel', '1']);
  try {
    const args = { messages: user('Once upon a time'), max_tokens: 1900, ignore_eos: true, temperature: 0 };
    const a = await call(t.client, 'generate_stream_start', args);
    await call(t.client, 'generate_stream_start', args);
    assert.match(await callError(t.client, 'generate_stream_start', args), /Maximum concurrent streams \(2\) reached/);
    await sleep(1600);   // both idle beyond 0.5 s: swept
    assert.match(await callError(t.client, 'generate_stream_read', { stream_id: a.stream_id }), /Unknown stream_id/);
    const b = await call(t.client, 'generate_stream_start', { ...args, max_tokens: 8 });
    assert.equal(b.status, 'started');
    const caps = await call(t.client, 'get_capabilities');
    assert.equal(caps.max_streams, 2);
    assert.equal(caps.stream_ttl_seconds, 0.5);
  } finally {
    await t.close();
  }
});
