// soak.mjs -- many concurrent streaming clients against `elpis serve`, with
// random disconnects and same-session supersedes, for a bounded time.
//
//   node soak.mjs --base http://127.0.0.1:PORT [--clients 16] [--seconds 60] [--seed 1] [--key K]
//
// Each client loops until the deadline, picking per request one of:
//   read   : stream to the end; it must finish with a finish_reason and [DONE]
//   abort  : disconnect after a random delay (the server must cancel it)
//   supersede: start a second request in the same session while the first
//            streams; the first must end with the "superseded" error event
//            and [DONE], the second normally.
// Afterwards /metrics must return to zero running and queued requests and zero
// KV cells in use within a bounded wait. Only Node's built-in fetch is used.
// The last line is "soak: N passed, M failed" (non-zero exit on failure).

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (v.startsWith("--") ? a.concat([[v.slice(2), all[i + 1]]]) : a), []));
const BASE = args.base ?? "http://127.0.0.1:8741";
const CLIENTS = Number(args.clients ?? 16);
const SECONDS = Number(args.seconds ?? 60);
const KEY = args.key;
let seed = Number(args.seed ?? 1) >>> 0;
const rnd = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 4294967296);
const PROMPTS = ["Once upon a time", "The little dog", "Lily and Tom went to the park", "One day a bird", "The sun"];

const stats = { read: 0, abort: 0, supersede: 0, failures: [] };
const fail = (what) => { if (stats.failures.length < 20) stats.failures.push(what); else stats.failures.length++; };

function body(maxTokens) {
  return JSON.stringify({
    messages: [{ role: "user", content: PROMPTS[Math.floor(rnd() * PROMPTS.length)] }],
    stream: true, max_tokens: maxTokens, temperature: 0.8, ignore_eos: true,
  });
}

function headers(session) {
  const h = { "content-type": "application/json", "x-session-id": session };
  if (KEY) h.authorization = `Bearer ${KEY}`;
  return h;
}

// Read an SSE stream; returns {events, done, error, finish} or throws on abort.
async function readStream(res, signal) {
  const dec = new TextDecoder();
  let buf = "", done = false, error = null, finish = null, events = 0;
  for await (const chunk of res.body) {
    if (signal?.aborted) break;
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith("data: ")) continue;        // ": ping" comments
      const data = ev.slice(6);
      if (data === "[DONE]") { done = true; continue; }
      const obj = JSON.parse(data);
      events++;
      if (obj.error) error = obj.error;
      const fr = obj.choices?.[0]?.finish_reason;
      if (fr) finish = fr;
    }
  }
  return { events, done, error, finish };
}

async function start(session, maxTokens, ctrl) {
  return fetch(`${BASE}/v1/chat/completions`, { method: "POST", headers: headers(session), body: body(maxTokens), signal: ctrl.signal });
}

async function doRead(session) {
  const ctrl = new AbortController();
  const res = await start(session, 20 + Math.floor(rnd() * 200), ctrl);
  if (res.status !== 200) return fail(`read: HTTP ${res.status}`);
  const r = await readStream(res);
  if (!r.done || !r.finish || r.error) fail(`read: done=${r.done} finish=${r.finish} error=${JSON.stringify(r.error)}`);
  stats.read++;
}

async function doAbort(session) {
  const ctrl = new AbortController();
  const res = await start(session, 2000, ctrl);
  if (res.status !== 200) return fail(`abort: HTTP ${res.status}`);
  setTimeout(() => ctrl.abort(), 10 + Math.floor(rnd() * 300));
  try { await readStream(res, ctrl.signal); } catch (e) { if (e.name !== "AbortError") fail(`abort: ${e}`); }
  stats.abort++;
}

async function doSupersede(session) {
  const c1 = new AbortController(), c2 = new AbortController();
  const r1 = await start(session, 2000, c1);
  if (r1.status !== 200) return fail(`supersede first: HTTP ${r1.status}`);
  const first = readStream(r1);
  await new Promise((ok) => setTimeout(ok, 20 + Math.floor(rnd() * 100)));
  const r2 = await start(session, 30, c2);
  if (r2.status !== 200) return fail(`supersede second: HTTP ${r2.status}`);
  const [a, b] = await Promise.all([first, readStream(r2)]);
  if (!a.done || a.error?.code !== "superseded") fail(`superseded stream: done=${a.done} error=${JSON.stringify(a.error)}`);
  if (!b.done || !b.finish || b.error) fail(`superseding stream: done=${b.done} finish=${b.finish} error=${JSON.stringify(b.error)}`);
  stats.supersede++;
}

async function client(id, deadline) {
  let n = 0;
  while (Date.now() < deadline) {
    const session = `soak-${id}-${n++ % 3}`;
    const p = rnd();
    try {
      if (p < 0.45) await doRead(session);
      else if (p < 0.8) await doAbort(session);
      else await doSupersede(session);
    } catch (e) { fail(`client ${id}: ${e}`); }
  }
}

async function metric(name) {
  const h = KEY ? { authorization: `Bearer ${KEY}` } : {};
  const text = await (await fetch(`${BASE}/metrics`, { headers: h })).text();
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

const deadline = Date.now() + SECONDS * 1000;
await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i, deadline)));
let idle = false;
for (let i = 0; i < 100 && !idle; i++) {
  const [run, q, kv] = await Promise.all([metric("elpis_requests_running"), metric("elpis_requests_queued"), metric("elpis_kv_cells_used")]);
  idle = run === 0 && q === 0 && kv === 0;
  if (!idle) await new Promise((ok) => setTimeout(ok, 100));
}
if (!idle) fail("metrics did not return to zero running/queued/kv cells");
const total = stats.read + stats.abort + stats.supersede;
console.error(`soak: ${CLIENTS} clients, ${SECONDS}s: ${stats.read} read, ${stats.abort} aborted, ${stats.supersede} superseded`);
for (const f of stats.failures) console.error(`  FAIL ${f}`);
const failed = stats.failures.length;
console.log(`soak: ${total - Math.min(failed, total)} passed, ${failed} failed`);
process.exit(failed || total === 0 ? 1 : 0);
