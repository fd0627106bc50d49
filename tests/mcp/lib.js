// lib.js -- shared helpers for the `elpis mcp` tests.
//
// Two ways to talk to the server:
//   startClient(): the official SDK (Client + StdioClientTransport), as MCP
//     hosts do. Records every client-side protocol error (a response to an
//     unknown id, progress for an unknown token) so tests can assert there
//     were none, and after close() checks the server exited 0 with no
//     sanitizer report.
//   startRaw(): the bare process, for what the SDK would never send
//     (malformed lines, requests before initialize) and for exact wire checks.
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

export const BIN = process.env.ELPIS_BIN;
export const SHARED = process.env.ELPIS_SHARED;
if (!BIN || !SHARED) throw new Error('ELPIS_BIN and ELPIS_SHARED must be set (the ctest wrappers set them)');
export const MODEL = `${SHARED}/models/stories260K.gguf`;

// The 9 tools of the original's Elpis server and the 8 of its memory server (spec §2.1, §2.2).
export const MEMORY_TOOL_NAMES = [
  'consolidate_memories', 'delete_memory', 'get_memory_context', 'get_memory_stats', 'get_recent_memories',
  'search_memories', 'should_consolidate', 'store_memory',
];
export const TOOL_NAMES = [
  'function_call', 'generate', 'generate_stream_cancel', 'generate_stream_read', 'generate_stream_start',
  'get_capabilities', 'get_emotion', 'reset_emotion', 'update_emotion', ...MEMORY_TOOL_NAMES,
].sort();

// Every server starts from a blank psyche (:memory:) unless a test passes its own --data-dir
// (getopt: the last one wins).
export function serverArgs(extra = []) {
  return ['mcp', '-m', MODEL, '--threads', '1', '--data-dir', ':memory:', ...extra];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Bounds on "promptly" are correctness checks (a hang, a missed wake-up), not
// speed goals; sanitizer builds on a loaded 2-core machine run ~10x slower.
export const SLOW = process.env.ASAN_OPTIONS || process.env.TSAN_OPTIONS ? 10 : 1;

// A failed assertion skips a test's close(); the servers it started would keep the test
// process alive forever. The wrappers run node with --test-force-exit, so the process
// ends when the tests do, and whatever is left is killed on the way out.
const live = new Set();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });
function track(proc) {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
}

// Sanitizer builds report on stderr; any report fails the test that owns the process.
export function assertCleanStderr(text) {
  assert.doesNotMatch(text, /Sanitizer|runtime error:|LeakSanitizer/, `sanitizer report:\n${text.slice(0, 4000)}`);
}

export async function startClient(extra = [], { name = 'elpis-mcp-test' } = {}) {
  const transport = new StdioClientTransport({
    command: BIN, args: serverArgs(extra), env: { ...process.env }, stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (d) => { stderr += d; });
  const client = new Client({ name, version: '1.0.0' });
  const errors = [];
  client.onerror = (e) => errors.push(e);
  await client.connect(transport);
  // The transport keeps the child private; its exit status is the one fact we need from it.
  const proc = transport._process;
  track(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    client, transport, errors,
    stderr: () => stderr,
    // Close stdin (as hosts do) and check the server exits 0 on its own, cleanly.
    async close() {
      const t0 = Date.now();
      await client.close();
      const { code, signal } = await exited;
      assert.equal(signal, null, `server killed by ${signal} (it did not exit on EOF); stderr:\n${stderr.slice(-2000)}`);
      assert.equal(code, 0, `server exit code; stderr:\n${stderr.slice(-2000)}`);
      assert.ok(Date.now() - t0 < 2000 * SLOW, `server took more than ${2 * SLOW} s to exit after EOF`);
      assertCleanStderr(stderr);
    },
  };
}

// The structured result of a successful tool call; fails the test on isError.
export async function call(client, name, args = {}, opts = {}) {
  const r = await client.callTool({ name, arguments: args }, undefined, opts);
  assert.ok(!r.isError, `${name} failed: ${JSON.stringify(r.content)}`);
  assert.ok(r.structuredContent, `${name}: no structuredContent`);
  // structuredContent SHOULD be mirrored as a text block
  assert.deepEqual(JSON.parse(r.content[0].text), r.structuredContent, `${name}: text and structuredContent differ`);
  return r.structuredContent;
}

// The error text of a tool call that must fail with isError.
export async function callError(client, name, args = {}) {
  const r = await client.callTool({ name, arguments: args });
  assert.equal(r.isError, true, `${name} should fail: ${JSON.stringify(r)}`);
  assert.equal(r.structuredContent, undefined);
  return JSON.parse(r.content[0].text).error;
}

export const user = (content) => [{ role: 'user', content }];

// A raw line-protocol session: send objects or strings, wait for replies by id.
export function startRaw(extra = []) {
  const proc = spawn(BIN, serverArgs(extra), { env: { ...process.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  track(proc);
  const lines = [];          // every stdout line, parsed
  const badLines = [];       // stdout lines that are not JSON (must stay empty)
  const waiters = [];
  let buf = '', stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  proc.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let msg;
      try { msg = JSON.parse(line); } catch { badLines.push(line); continue; }
      lines.push(msg);
      for (const w of [...waiters]) if (w.pred(msg)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(msg); }
    }
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const raw = {
    proc, lines, badLines, exited,
    stderr: () => stderr,
    send(m) { proc.stdin.write((typeof m === 'string' ? m : JSON.stringify(m)) + '\n'); },
    wait(pred, ms = 10000) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        waiters.push(w);
        setTimeout(() => {
          const k = waiters.indexOf(w);
          if (k >= 0) { waiters.splice(k, 1); reject(new Error(`no matching message in ${ms} ms; stderr:\n${stderr.slice(-2000)}`)); }
        }, ms).unref();
      });
    },
    reply(id, ms) { return raw.wait((m) => m.id === id && !('method' in m), ms); },
    async request(id, method, params) {
      raw.send({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
      return raw.reply(id);
    },
    async initialize(version = '2025-11-25') {
      const r = await raw.request('init', 'initialize', {
        protocolVersion: version, capabilities: {}, clientInfo: { name: 'raw', version: '1' },
      });
      raw.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      return r;
    },
    async close() {
      proc.stdin.end();
      const r = await exited;
      assert.deepEqual(r, { code: 0, signal: null }, `server exit; stderr:\n${stderr.slice(-2000)}`);
      assert.deepEqual(badLines, [], 'stdout carried something that is not a JSON message');
      assertCleanStderr(stderr);
    },
  };
  return raw;
}
