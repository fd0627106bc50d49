// The official openai client (pinned in package-lock.json) against `elpis serve`.
// A client nobody here wrote: if our wire format drifts from OpenAI's, this breaks.
// tests/cli/test_server_node.sh starts the server and sets:
//   ELPIS_URL      http://127.0.0.1:PORT
//   ELPIS_LOG      the server's event log (to check what the server saw)
//   ELPIS_API_KEY  the key the server was started with
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const URL = process.env.ELPIS_URL;
const LOG = process.env.ELPIS_LOG;
const KEY = process.env.ELPIS_API_KEY;
assert.ok(URL && LOG && KEY, 'run through tests/cli/test_server_node.sh');

const client = new OpenAI({ baseURL: `${URL}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60_000 });
const model = 'stories260K';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll `check` every 50 ms for up to `ms`; returns its last value.
async function eventually(check, ms = 3000) {
  const end = Date.now() + ms;
  let v = await check();
  while (!v && Date.now() < end) {
    await sleep(50);
    v = await check();
  }
  return v;
}

async function metric(name) {
  const res = await fetch(`${URL}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

const traceOf = (id) => id.replace(/^chatcmpl-/, '');

test('non-streaming chat completion', async () => {
  const r = await client.chat.completions.create({
    model, max_tokens: 16, temperature: 0,
    messages: [{ role: 'user', content: 'Once upon a time' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-[0-9a-f]+$/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('streaming chat completion', async () => {
  const stream = await client.chat.completions.create({
    model, max_tokens: 40, stream: true,
    messages: [{ role: 'user', content: 'Tell me a story' }],
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length >= 3);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.ok(text.length > 0);
  const last = chunks.at(-1);
  assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason));
  assert.ok(chunks.every((c) => c.usage == null), 'no usage without stream_options.include_usage');
});

test('usage chunk with stream_options.include_usage', async () => {
  const stream = await client.chat.completions.create({
    model, max_tokens: 12, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Hello' }],
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens >= 1 && last.usage.completion_tokens <= 12);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
});

test('text completion', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.choices[0].text, /^, there was/);
  assert.equal(r.usage.completion_tokens, 10);
});

test('invalid parameter is a BadRequestError naming the field', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, temperature: -1, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature',
  );
});

test('break out of a stream: the server cancels it and frees the slot', async () => {
  const stream = await client.chat.completions.create({
    model, max_tokens: 4000, stream: true, ignore_eos: true,
    messages: [{ role: 'user', content: 'Once upon a time' }],
  });
  let id = null;
  let n = 0;
  for await (const c of stream) {
    id = c.id;
    if (++n === 5) break;   // openai-node aborts the request
  }
  const trace = traceOf(id);
  const logged = await eventually(() =>
    readFileSync(LOG, 'utf8').includes(`stream_cancelled trace=${trace} reason=client_disconnect`));
  assert.ok(logged, `client_disconnect logged for ${trace}`);
  assert.ok(await eventually(async () => (await metric('elpis_requests_running')) === 0), 'no request running');
  assert.equal(await metric('elpis_kv_cells_used'), 0);
});

test('a newer request in the session ends the old stream with an APIError', async () => {
  const opts = { headers: { 'X-Session-Id': 'node-session' } };
  const a = await client.chat.completions.create({
    model, max_tokens: 4000, stream: true, ignore_eos: true,
    messages: [{ role: 'user', content: 'Once upon a time' }],
  }, opts);
  const it = a[Symbol.asyncIterator]();
  for (let i = 0; i < 3; i++) await it.next();
  const b = await client.chat.completions.create({
    model, max_tokens: 8, messages: [{ role: 'user', content: 'Hi' }],
  }, opts);
  assert.ok(['stop', 'length'].includes(b.choices[0].finish_reason));
  await assert.rejects(async () => { for (;;) { const { done } = await it.next(); if (done) break; } },
    (e) => e instanceof OpenAI.APIError && /replaced/.test(e.message));
});
