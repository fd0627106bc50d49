// interleave.test.js -- the original's "connection closed" failure: several
// users of ONE session at once. Two clients' worth of traffic share one
// connection: stream read loops at 20 Hz, an emotion poll at 1 Hz, generates
// with progress, and emotion updates. Every response must arrive, and each
// must be the answer to its own request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startClient, call, user, sleep } from './lib.js';

const DURATION_MS = 4000;

// Read a stream at 20 Hz until it completes; returns what the reads added up to and the final reply.
async function streamLoop(client, prompt, maxTokens) {
  const { stream_id } = await call(client, 'generate_stream_start',
    { messages: user(prompt), max_tokens: maxTokens, temperature: 0, ignore_eos: true });
  let text = '', last, reads = 0;
  for (;;) {
    last = await call(client, 'generate_stream_read', { stream_id });
    reads++;
    text += last.new_content;
    if (last.is_complete) break;
    await sleep(50);
  }
  assert.equal(text, last.full_content, `stream ${stream_id}: reads add up to full_content`);
  assert.equal(last.total_tokens, maxTokens);
  return { text, reads };
}

test('interleaved calls on one connection: nothing lost, nothing mismatched', async () => {
  const s = await startClient(['--parallel', '2']);
  try {
    // references, computed alone first
    const refA = (await call(s.client, 'generate', { messages: user('Once upon a time'), max_tokens: 120, temperature: 0, ignore_eos: true })).content;
    const refB = (await call(s.client, 'generate', { messages: user('Lily and Ben'), max_tokens: 120, temperature: 0, ignore_eos: true })).content;
    const refG = (await call(s.client, 'generate', { messages: user('The cat'), max_tokens: 60, temperature: 0 })).content;
    assert.notEqual(refA, refB);

    const deadline = Date.now() + DURATION_MS;
    const counts = { streams: 0, reads: 0, polls: 0, generates: 0, progress: 0, updates: 0 };

    const streamer = async (prompt, ref) => {   // one "client": a 20 Hz read loop, stream after stream
      while (Date.now() < deadline) {
        const { text, reads } = await streamLoop(s.client, prompt, 120);
        assert.equal(text, ref, `stream for "${prompt}" got another stream's text`);
        counts.streams++;
        counts.reads += reads;
      }
    };
    const poller = async () => {                // the other "client": emotion poll at 1 Hz
      while (Date.now() < deadline) {
        const st = await call(s.client, 'get_emotion');
        assert.ok(['excited', 'frustrated', 'calm', 'depleted'].includes(st.quadrant));
        const res = await s.client.readResource({ uri: 'emotion://state' });
        assert.ok('arousal' in JSON.parse(res.contents[0].text));
        counts.polls++;
        await sleep(1000);
      }
    };
    const generator = async () => {             // generates with progress, back to back
      while (Date.now() < deadline) {
        let streamed = '';
        const r = await call(s.client, 'generate', { messages: user('The cat'), max_tokens: 60, temperature: 0 },
          { onprogress: (p) => { streamed += p.message; counts.progress++; } });
        assert.equal(r.content, refG, 'generate got another call\'s text');
        assert.ok(r.content.startsWith(streamed), 'progress messages belong to this call');
        counts.generates++;
      }
    };
    const updater = async () => {               // emotion updates racing the polls
      while (Date.now() < deadline) {
        const st = await call(s.client, 'update_emotion', { event_type: 'routine', intensity: 0.1 });
        assert.equal(typeof st.valence, 'number');
        counts.updates++;
        await sleep(250);
      }
    };
    await Promise.all([streamer('Once upon a time', refA), streamer('Lily and Ben', refB), poller(), generator(), updater()]);
    assert.ok(counts.reads >= 20, JSON.stringify(counts));
    assert.ok(counts.polls >= 3, JSON.stringify(counts));
    assert.ok(counts.generates >= 2, JSON.stringify(counts));
    assert.ok(counts.streams >= 2, JSON.stringify(counts));
    // An SDK client may drop a progress notification that arrives together with its response
    // (typescript-sdk #2580) and report it; a response for an unknown id would be a real failure.
    assert.deepEqual(s.errors.map(String).filter((e) => !/progress notification for an unknown token/.test(e)), [],
      'no response for an unknown id');
    const caps = await call(s.client, 'get_capabilities');
    assert.equal(caps.scheduler.running, 0);
  } finally {
    await s.close();
  }
});
