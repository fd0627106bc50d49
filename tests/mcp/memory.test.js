// memory.test.js -- the eight memory tools of `elpis mcp` (the original's memory
// server, elpis-spec §2.2) through the official SDK client, which also checks
// every structuredContent against the tool's outputSchema; persistence of
// memories across a restart with --data-dir; and emotion steering of generate
// when [emotion] vectors are configured with --config.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startClient, call, callError, user, BIN, MODEL, MEMORY_TOOL_NAMES } from './lib.js';

let s;
before(async () => { s = await startClient(); });
after(async () => { await s.close(); });

test('tools/list: the memory tools with titles and output schemas', async () => {
  const { tools } = await s.client.listTools();
  for (const name of MEMORY_TOOL_NAMES) {
    const t = tools.find((x) => x.name === name);
    assert.ok(t, `${name} listed`);
    assert.ok(t.title && t.outputSchema && t.outputSchema.type === 'object', `${name}: title and outputSchema`);
  }
  const store = tools.find((t) => t.name === 'store_memory');
  assert.deepEqual(store.inputSchema.required, ['content']);
});

test('store, search, context, recent, stats, delete', async () => {
  const a = await call(s.client, 'store_memory', {
    content: 'Lily found a red ball in the park', memory_type: 'episodic', tags: ['user'],
    emotional_context: { valence: 0.8, arousal: 0.6, quadrant: 'excited' },
  });
  assert.equal(a.status, 'stored');
  assert.match(a.id, /^[0-9a-f-]{36}$/);
  assert.ok(a.importance_score > 0.3 && a.importance_score <= 1);
  const b = await call(s.client, 'store_memory', { content: 'Tom likes to eat green apples', memory_type: 'semantic' });

  const found = await call(s.client, 'search_memories', { query: 'red ball', n_results: 5 });
  assert.equal(found.query, 'red ball');
  assert.equal(found.hybrid_search, true);
  assert.equal(found.results[0].id, a.id);
  assert.equal(found.results[0].emotional_context.quadrant, 'excited');
  assert.equal(typeof found.results[0].relevance_score, 'number');
  const vec = await call(s.client, 'search_memories', { query: 'apples', use_hybrid: false });
  assert.equal(vec.hybrid_search, false);
  assert.ok(vec.results.every((r) => r.relevance_score === null), 'no relevance without hybrid search');

  const ctx = await call(s.client, 'get_memory_context', { query: 'ball', max_tokens: 2000 });
  assert.ok(ctx.memories.some((m) => m.id === a.id));
  assert.ok(ctx.token_count > 0 && ctx.truncated === false);
  const tiny = await call(s.client, 'get_memory_context', { query: 'ball', max_tokens: 1 });
  assert.equal(tiny.truncated, true);
  assert.equal(tiny.memories.length, 0);

  const recent = await call(s.client, 'get_recent_memories', { hours: 1, limit: 10 });
  assert.equal(recent.count, 2);
  assert.equal(recent.memories[0].id, b.id, 'newest first');
  assert.ok(recent.memories.every((m) => m.status === 'short_term'));

  let stats = await call(s.client, 'get_memory_stats');
  assert.equal(stats.total_memories, 2);
  assert.equal(stats.short_term, 2);
  assert.equal(stats.long_term, 0);
  const sc = await call(s.client, 'should_consolidate');
  assert.equal(sc.should_consolidate, false);
  assert.match(sc.reason, /Buffer size \(2\) below threshold \(100\)/);

  assert.deepEqual(await call(s.client, 'delete_memory', { memory_id: b.id }), { deleted: true, memory_id: b.id });
  assert.deepEqual(await call(s.client, 'delete_memory', { memory_id: b.id }), { deleted: false, memory_id: b.id });
  stats = await call(s.client, 'get_memory_stats');
  assert.equal(stats.total_memories, 1);
});

test('consolidate_memories: one cluster of copies is promoted, the rest archived', async () => {
  const c = await startClient(['--data-dir', ':memory:']);
  try {
    // min_age_hours defaults to 1: a fresh memory is not consolidated yet
    for (let i = 0; i < 3; i++) await call(c.client, 'store_memory', { content: 'We won the big race', emotional_context: { valence: 1, arousal: 1 } });
    const early = await call(c.client, 'consolidate_memories', {});
    assert.equal(early.total_processed, 0);
  } finally { await c.close(); }
  const dir = mkdtempSync(join(tmpdir(), 'elpis-mcp-mem-'));
  try {
    writeFileSync(join(dir, 'c.ini'), '[memory]\nmin_age_hours = 0\n');
    const d = await startClient(['--data-dir', join(dir, 'data'), '--config', join(dir, 'c.ini')]);
    for (let i = 0; i < 3; i++) await call(d.client, 'store_memory', { content: 'We won the big race', emotional_context: { valence: 1, arousal: 1 } });
    const r = await call(d.client, 'consolidate_memories', { similarity_threshold: 0.85 });
    assert.equal(r.clusters_formed, 1);
    assert.equal(r.memories_promoted, 1);
    assert.equal(r.memories_archived, 2);
    assert.equal(r.cluster_summaries[0].source_ids.length, 2);
    const st = await call(d.client, 'get_memory_stats');
    assert.deepEqual([st.short_term, st.long_term, st.archived], [0, 1, 2]);
    await d.close();
    // the memories are in DIR: a new process finds them
    const e = await startClient(['--data-dir', join(dir, 'data')]);
    const found = await call(e.client, 'search_memories', { query: 'race' });
    assert.equal(found.results.length, 1, 'archived memories are not searched');
    assert.equal(found.results[0].id, r.cluster_summaries[0].promoted_id);
    await e.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('memory tool errors are isError results naming the problem', async () => {
  assert.match(await callError(s.client, 'store_memory', {}), /arguments\.content.*required/);
  assert.match(await callError(s.client, 'store_memory', { content: 'x', memory_type: 'dream' }),
    /memory_type/);
  assert.match(await callError(s.client, 'search_memories', { query: 'x', n_results: 0 }), /n_results.*minimum/);
  assert.match(await callError(s.client, 'store_memory', { content: 'x'.repeat(70000) }),
    /65536 \(max_content_bytes\)/);
});

test('[emotion] vectors from --config steer generate; emotional_modulation false does not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'elpis-mcp-steer-'));
  try {
    writeFileSync(join(dir, 'pos.txt'), 'I am so happy and excited today!\nWhat a wonderful, joyful day.\n');
    writeFileSync(join(dir, 'neg.txt'), 'I am so sad and tired today.\nWhat a terrible, gloomy day.\n');
    const b = spawnSync(BIN, ['vectors', 'build', '-m', MODEL, '--positive', join(dir, 'pos.txt'),
      '--negative', join(dir, 'neg.txt'), '-o', join(dir, 'v.gguf')], { encoding: 'utf8' });
    assert.equal(b.status, 0, b.stderr);
    writeFileSync(join(dir, 'e.ini'), `[emotion]\nsteering_strength = 2\n${
      ['excited', 'frustrated', 'calm', 'depleted'].map((q) => `vectors_${q} = ${join(dir, 'v.gguf')}`).join('\n')}\n`);
    const args = { messages: user('Once upon a time'), max_tokens: 40, temperature: 0 };
    const plain = await call(s.client, 'generate', args);
    const c = await startClient(['--config', join(dir, 'e.ini')]);
    try {
      const steered = await call(c.client, 'generate', args);
      assert.notEqual(steered.content, plain.content, 'steering changes greedy output');
      const off = await call(c.client, 'generate', { ...args, emotional_modulation: false });
      assert.equal(off.content, plain.content, 'no steering when emotional modulation is off');
    } finally { await c.close(); }
    writeFileSync(join(dir, 'bad.ini'), `[emotion]\nvectors_calm = ${join(dir, 'missing.gguf')}\n`);
    const bad = spawnSync(BIN, ['mcp', '-m', MODEL, '--data-dir', ':memory:', '--config', join(dir, 'bad.ini')],
      { input: '', encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'a missing vector file stops the server');
    assert.match(bad.stderr, /emotion\.vectors_calm: .*missing\.gguf/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
