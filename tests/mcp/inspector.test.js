// inspector.test.js -- the MCP inspector's CLI mode (@modelcontextprotocol/inspector@0.15.0)
// lists and calls tools against `elpis mcp`, as a user would from a shell.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { serverArgs, BIN, TOOL_NAMES, assertCleanStderr } from './lib.js';

const HERE = dirname(fileURLToPath(import.meta.url));

// npx resolves the pinned local install (node_modules/.bin); --no: never download; `--`: the
// rest (--cli first) belongs to the inspector, not to npm.
function inspector(args) {
  return new Promise((resolve, reject) => {
    execFile('npx', ['--no', '--', '@modelcontextprotocol/inspector', '--cli', BIN, ...serverArgs(), ...args],
      { cwd: HERE, env: { ...process.env }, timeout: 30000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`inspector ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve({ out: JSON.parse(stdout), stderr });
      });
  });
}

test('inspector --cli: tools/list', async () => {
  const { out, stderr } = await inspector(['--method', 'tools/list']);
  assert.deepEqual(out.tools.map((t) => t.name).sort(), TOOL_NAMES);
  for (const t of out.tools) assert.ok(t.description, `${t.name} has a description`);
  assertCleanStderr(stderr);
});

test('inspector --cli: tools/call get_emotion, update_emotion and generate', async () => {
  let { out } = await inspector(['--method', 'tools/call', '--tool-name', 'get_emotion']);
  assert.equal(out.structuredContent.quadrant, 'excited');
  ({ out } = await inspector(['--method', 'tools/call', '--tool-name', 'update_emotion',
    '--tool-arg', 'event_type=success', '--tool-arg', 'intensity=2']));
  assert.ok(out.structuredContent.valence > 0);
  ({ out } = await inspector(['--method', 'tools/call', '--tool-name', 'generate',
    '--tool-arg', 'messages=[{"role":"user","content":"Once upon a time"}]',
    '--tool-arg', 'max_tokens=12', '--tool-arg', 'temperature=0']));
  assert.equal(out.isError, undefined, JSON.stringify(out));
  assert.ok(out.structuredContent.content.length > 0);
  assert.equal(out.structuredContent.modulated_params.temperature, 0);
});

test('inspector --cli: resources/read', async () => {
  const { out } = await inspector(['--method', 'resources/read', '--uri', 'emotion://events']);
  assert.ok(JSON.parse(out.contents[0].text).insight);
});
