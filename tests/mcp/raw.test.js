// raw.test.js -- the wire protocol with a bare process: lifecycle edge cases,
// version negotiation, malformed input, overlong lines, cancellation on the
// wire, and shutdown on EOF and SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRaw, sleep, user, SLOW } from './lib.js';

const longGenerate = (id) => ({
  jsonrpc: '2.0', id, method: 'tools/call',
  params: { name: 'generate', arguments: { messages: user('Once upon a time'), max_tokens: 1900, ignore_eos: true, temperature: 0 } },
});

test('server/discover before initialize gets -32601 (not a hang); initialize still works', async () => {
  const r = startRaw();
  // The original hung here. No wall-clock bound on the answer (start-up under
  // ASan on a loaded machine took > 3 s once); a hang fails by the bounded race.
  const d = await Promise.race([r.request(1, 'server/discover', {}), new Promise((res) => setTimeout(() => res({ hung: true }), 60000).unref())]);
  assert.ok(!d.hung, 'server/discover before initialize was never answered');
  assert.equal(d.error.code, -32601);
  const ping = await r.request(2, 'ping');
  assert.deepEqual(ping.result, {}, 'ping works before initialize');
  const early = await r.request(3, 'tools/list');
  assert.equal(early.error.code, -32600, 'tools/list before initialize is refused');
  const init = await r.initialize();
  assert.equal(init.result.protocolVersion, '2025-11-25');
  const again = await r.request(4, 'initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } });
  assert.equal(again.error.code, -32600, 'a second initialize is refused');
  const after = await r.request(5, 'server/discover', {});
  assert.equal(after.error.code, -32601, 'unknown methods stay -32601 after initialize');
  assert.equal((await r.request(6, 'prompts/list')).error.code, -32601);
  assert.equal((await r.request(7, 'tools/list')).result.tools.length, 17);
  await r.close();
});

test('version negotiation: supported versions are echoed, others get the latest', async () => {
  for (const [asked, want] of [['2025-06-18', '2025-06-18'], ['2025-11-25', '2025-11-25'], ['2024-11-05', '2025-11-25'], ['1999-01-01', '2025-11-25']]) {
    const r = startRaw();
    const init = await r.initialize(asked);
    assert.equal(init.result.protocolVersion, want, `asked ${asked}`);
    assert.equal(init.result.serverInfo.name, 'elpis');
    await r.close();
  }
  const r = startRaw();
  const bad = await r.request(1, 'initialize', { protocolVersion: 7, capabilities: {} });
  assert.equal(bad.error.code, -32602);
  assert.match(bad.error.message, /protocolVersion/);
  await r.close();
});

// ---- 1,000 malformed lines -------------------------------------------------------------

// xorshift32: the same lines on every run (a failure can be replayed)
function rng(seed) {
  let x = seed >>> 0;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 4294967296; };
}

// Each case: the bytes of one line and what the server must do with it:
// 'error' (a JSON-RPC error with `id`, null when the id is unusable), 'tool-error'
// (a result with isError: SEP-1303 argument errors) or 'none' (a notification or a response).
function malformedCases(n) {
  const rand = rng(0xE1915);
  const pick = (a) => a[Math.floor(rand() * a.length)];
  const cases = [];
  const valid = [
    '{"jsonrpc":"2.0","id":1,"method":"ping"}',
    '{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"get_emotion","arguments":{}}}',
    '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"generate","arguments":{"messages":[{"role":"user","content":"hi"}]}}}',
  ];
  const shapes = (id) => [
    [`{"jsonrpc":"2.0","id":${id},"method":5}`, 'error', id],
    [`{"jsonrpc":"1.0","id":${id},"method":"ping"}`, 'error', id],
    [`{"id":${id},"method":"ping"}`, 'error', id],
    ['{"jsonrpc":"2.0","id":true,"method":"ping"}', 'error', null],
    ['{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', 'error', null],
    ['{"jsonrpc":"2.0","id":null,"method":"ping"}', 'error', null],
    [`{"jsonrpc":"2.0","id":${id},"method":"ping","params":"x"}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":[1,2]}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":7}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"generate","arguments":"x"}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"nope","arguments":{}}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"get_emotion","_meta":{"progressToken":[1]}}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"generate","arguments":{"messages":"x"}}}`, 'tool-error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"generate","arguments":{"messages":[{"role":1,"content":"x"}]}}}`, 'tool-error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"update_emotion","arguments":{"event_type":"x","intensity":"9"}}}`, 'tool-error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"resources/read","params":{"uri":5}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`, 'error', id],
    [`{"jsonrpc":"2.0","id":${id},"method":"initialize","params":{"protocolVersion":5}}`, 'error', id],
    ['[]', 'error', null],
    [`[{"jsonrpc":"2.0","id":${id},"method":"ping"}]`, 'error', null],
    ['"just a string"', 'error', null],
    ['42', 'error', null],
    ['null', 'error', null],
    ['{"foo":"boo"}', 'error', null],
    ['{"jsonrpc":"2.0","method":5}', 'error', null],
    ['{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{}}}', 'none'],
    ['{"jsonrpc":"2.0","method":"no/such/notification","params":[1]}', 'none'],
    [`{"jsonrpc":"2.0","id":${id},"result":{}}`, 'none'],
    [`{"jsonrpc":"2.0","id":${id},"error":{"code":1,"message":"x"}}`, 'none'],
    ['{"jsonrpc":"2.0","id":"\xff\xfe","method":"ping"}', 'error', null],   // invalid UTF-8 (bytes, see below)
  ];
  const huge = (k) => [
    [`{"jsonrpc":"2.0","id":1e999,"method":"ping"}`, 'error', null],                         // real overflow: parse error
    [`{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}`, 'error', null], // integer overflow
    [`{"jsonrpc":"2.0","id":"${'x'.repeat(10000)}${k}","method":"no/such"}`, 'error', `${'x'.repeat(10000)}${k}`],
    [`{"jsonrpc":"2.0","id":-9223372036854775808,"method":"no/such"}`, 'error', -9223372036854775808],
    [`{"jsonrpc":"2.0","id":1.5e300,"method":"no/such"}`, 'error', 1.5e300],
  ];
  for (let i = 0; i < n; i++) {
    const kind = i % 4;
    if (kind === 0) {                       // random bytes, no newline
      const len = 1 + Math.floor(rand() * 200);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) { let v = Math.floor(rand() * 256); if (v === 10) v = 11; b[j] = v; }
      const blank = /^[ \t\r]*$/.test(b.toString('latin1').replace(/\r$/, ''));
      cases.push({ bytes: b, expect: blank ? 'none' : 'error', id: null });
    } else if (kind === 1) {                // truncated JSON
      const v = pick(valid);
      cases.push({ bytes: Buffer.from(v.slice(0, 1 + Math.floor(rand() * (v.length - 1)))), expect: 'error', id: null });
    } else if (kind === 2) {                // wrong types and shapes
      const id = 100000 + i;
      const [text, expect, eid] = pick(shapes(id));
      cases.push({ bytes: Buffer.from(text, 'latin1'), expect, id: eid ?? null });
    } else {                                // huge ids
      const [text, expect, eid] = pick(huge(i));
      cases.push({ bytes: Buffer.from(text), expect, id: eid ?? null });
    }
  }
  return cases;
}

test('1,000 malformed lines: each gets its error (or is ignored per spec), then a ping is answered', async () => {
  const r = startRaw();
  await r.initialize();
  const cases = malformedCases(1000);
  for (const c of cases) r.proc.stdin.write(Buffer.concat([c.bytes, Buffer.from('\n')]));
  r.send({ jsonrpc: '2.0', id: 'final-ping', method: 'ping' });
  const pong = await r.reply('final-ping', 30000);
  assert.deepEqual(pong.result, {});
  // All of these are answered synchronously by the reader, so replies come in input order.
  const replies = r.lines.filter((m) => !('method' in m) && m.id !== 'init');
  const expected = cases.filter((c) => c.expect !== 'none');
  assert.equal(replies.length, expected.length + 1, 'one reply per line that needs one, plus the ping');
  expected.forEach((c, k) => {
    const m = replies[k];
    const where = `line ${cases.indexOf(c)} (${c.bytes.toString('latin1').slice(0, 80)}): got ${JSON.stringify(m).slice(0, 300)}`;
    assert.equal(m.jsonrpc, '2.0', where);
    assert.deepEqual(m.id, c.id, where);
    if (c.expect === 'error') {
      assert.ok(Number.isInteger(m.error?.code) && typeof m.error.message === 'string', where);
      assert.ok([-32700, -32600, -32601, -32602, -32002].includes(m.error.code), where);
      if (m.error.code === -32700) assert.ok(Number.isInteger(m.error.data.position), where);
    } else {
      assert.equal(m.result?.isError, true, where);
    }
  });
  assert.equal(replies.at(-1).id, 'final-ping');
  await r.close();
});

test('an overlong line is discarded with -32600, even across reads, and the next line works', async () => {
  const r = startRaw(['--max-line', '4096']);
  await r.initialize();
  const big = JSON.stringify({ jsonrpc: '2.0', id: 'big', method: 'ping', params: { pad: 'x'.repeat(10000) } });
  r.proc.stdin.write(big.slice(0, 3000));
  await sleep(50);
  r.proc.stdin.write(big.slice(3000, 7000));
  await sleep(50);
  r.proc.stdin.write(big.slice(7000) + '\n');
  const after = await r.request('after', 'ping');
  assert.deepEqual(after.result, {});
  const errs = r.lines.filter((m) => m.error);
  assert.equal(errs.length, 1, JSON.stringify(errs));
  assert.equal(errs[0].error.code, -32600);
  assert.equal(errs[0].id, null);
  assert.match(errs[0].error.message, /4096/);
  assert.equal(r.lines.find((m) => m.id === 'big'), undefined, 'the overlong request itself is not run');
  // a line just under the limit is fine; CRLF endings are accepted
  const fits = JSON.stringify({ jsonrpc: '2.0', id: 'fits', method: 'ping', params: { pad: 'y'.repeat(3900) } });
  assert.ok(fits.length < 4096);
  r.proc.stdin.write(fits + '\r\n');
  assert.deepEqual((await r.reply('fits')).result, {});
  await r.close();
});

test('progress on the wire: increasing, in order, all before the response, the text in order', async () => {
  const r = startRaw();
  await r.initialize();
  const res = await r.request('g', 'tools/call', {
    name: 'generate', _meta: { progressToken: 99 },
    arguments: { messages: user('Once upon a time'), max_tokens: 600, temperature: 0, ignore_eos: true },
  });
  await r.request('p', 'ping');   // anything still queued for the call would come before this
  const at = r.lines.indexOf(res);
  const prog = r.lines.filter((m) => m.method === 'notifications/progress');
  assert.ok(prog.length >= 1, 'some progress');
  assert.ok(prog.every((m) => m.params.progressToken === 99 && m.params.total === 600));
  assert.ok(prog.every((m) => r.lines.indexOf(m) < at), 'no progress after the response');
  for (let i = 1; i < prog.length; i++) assert.ok(prog[i].params.progress > prog[i - 1].params.progress);
  const content = res.result.structuredContent.content;
  const streamed = prog.map((m) => m.params.message).join('');
  assert.ok(streamed.length > 0 && content.startsWith(streamed));
  // no progress without a token
  const before = r.lines.length;
  await r.request('g2', 'tools/call', { name: 'generate', arguments: { messages: user('Tom'), max_tokens: 50, temperature: 0 } });
  assert.equal(r.lines.slice(before).filter((m) => m.method).length, 0);
  await r.close();
});

test('cancellation on the wire: no response for a cancelled call; a busy id is refused', async () => {
  const r = startRaw(['--parallel', '1']);
  await r.initialize();
  r.send({ ...longGenerate(7), params: { ...longGenerate(7).params, _meta: { progressToken: 'tok7' } } });
  await r.wait((m) => m.method === 'notifications/progress' && m.params.progressToken === 'tok7');
  r.send(longGenerate(7));
  const dup = await r.reply(7);
  assert.equal(dup.error.code, -32600, 'the id of a running call cannot be reused');
  r.send({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 7, reason: 'test' } });
  // cancelling an unknown or finished id is ignored
  r.send({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 12345 } });
  await r.request(8, 'ping');
  await sleep(300);
  const progressAfter = r.lines.filter((m) => m.method === 'notifications/progress').length;
  await sleep(300);
  assert.equal(r.lines.filter((m) => m.method === 'notifications/progress').length, progressAfter, 'progress stopped');
  assert.equal(r.lines.filter((m) => m.id === 7).length, 1, 'only the busy-id error: no response for the cancelled call');
  // the single slot is free: a short generate completes
  const g = await r.request(9, 'tools/call', { name: 'generate', arguments: { messages: user('Tom'), max_tokens: 4, temperature: 0 } });
  assert.equal(g.result.isError, undefined);
  assert.equal(g.result.structuredContent.usage.completion_tokens <= 4, true);
  await r.close();
});

test('end of input while generating: exits 0 promptly with no leak', async () => {
  const r = startRaw();
  await r.initialize();
  r.send(longGenerate(1));
  r.send({ ...longGenerate(2), method: 'tools/call', params: { name: 'generate_stream_start', arguments: longGenerate(2).params.arguments } });
  await r.reply(2);
  const t0 = Date.now();
  await r.close();
  assert.ok(Date.now() - t0 < 2000 * SLOW, `exit took ${Date.now() - t0} ms`);
});

test('--data-dir keeps the emotional state across restarts; --log-file takes the logs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'elpis-mcp-'));
  try {
    const emotion = (r, id) => r.request(id, 'tools/call', { name: 'get_emotion', arguments: {} })
      .then((m) => m.result.structuredContent);
    let r = startRaw(['--data-dir', dir, '--log-file', join(dir, 'mcp.log')]);
    await r.initialize();
    await r.request(1, 'tools/call', { name: 'update_emotion', arguments: { event_type: 'insight', intensity: 2 } });
    const before = await emotion(r, 2);
    assert.equal(before.update_count, 1);
    await r.close();
    assert.equal(r.stderr(), '', 'logs went to the file');
    assert.match(readFileSync(join(dir, 'mcp.log'), 'utf8'), /event=initialize/);
    r = startRaw(['--data-dir', dir]);
    await r.initialize();
    const after = await emotion(r, 3);
    assert.equal(after.update_count, 1, 'the event survived the restart');
    assert.ok(after.valence > 0);
    await r.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM stops the server cleanly', async () => {
  const r = startRaw();
  await r.initialize();
  r.proc.kill('SIGTERM');
  assert.deepEqual(await r.exited, { code: 0, signal: null });
});
