// lmx.d.ts with TypeScript 5: the declarations a broker serves, with the tsconfig.json that
// docs/browser.md gives, compile types/usage.ts under --strict (typed events, removeEventListener,
// `await using`, connect with a URL); and at run time the client does what those types say.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { lmxPage, uniqueKey, brokerAndBrowser } from './lib/browser.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, 'node_modules/typescript/bin/tsc');

let broker;
let browser;
brokerAndBrowser((s) => ({ broker, browser } = s), { context: false });

// The tsconfig.json of docs/browser.md: the ```json block that maps the broker's URL.
function documentedTsconfig() {
  const doc = fs.readFileSync(path.join(here, '../../docs/browser.md'), 'utf8');
  const block = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]).find((b) => b.includes('"paths"'));
  assert.ok(block, 'docs/browser.md shows a tsconfig.json with "paths"');
  return JSON.parse(block);
}

test('lmx.d.ts compiles a program using the API under tsc --strict, with the tsconfig docs/browser.md gives', { timeout: 60_000 }, async () => {
  assert.ok(fs.existsSync(tsc), `${tsc} is missing: run npm ci in test/browser`);
  const version = (await promisify(execFile)(process.execPath, [tsc, '--version'])).stdout;
  assert.match(version, /^Version 5\./);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lmx-types-'));
  try {
    const config = documentedTsconfig();
    const [url, [target]] = Object.entries(config.compilerOptions.paths)[0];
    assert.equal(url, 'http://127.0.0.1:6971/lmx.js');
    // The declarations as the broker serves them, saved where the mapping points.
    const res = await fetch(`${broker.http}/lmx.d.ts`);
    assert.equal(res.status, 200);
    fs.writeFileSync(path.join(dir, target), await res.text());
    fs.copyFileSync(path.join(here, 'types/usage.ts'), path.join(dir, 'usage.ts'));
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ ...config, files: ['usage.ts'] }, null, 2));
    const run = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--strict', '--noEmit'], { cwd: dir })
      .then(() => ({ code: 0, out: '' }), (e) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }));
    assert.equal(run.code, 0, `tsc failed:\n${run.out}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('at run time: connect takes a URL object, and events carry what their types declare', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  const page = await lmxPage(context, broker);
  const key = uniqueKey('typed');
  try {
    const r = await page.evaluate(async ([url, key]) => {
      const client = await lmx.connect(new URL(url));
      const other = new lmx.Client(new URL(url), { reconnect: false });
      await other.connect();
      const states = [];
      const onState = (e) => states.push(`${e.state}:${e.error?.code ?? null}`);
      other.addEventListener('state', onState);
      const watched = new Promise((resolve) => client.addEventListener('event', (e) => resolve({ same: e.detail === e.data, isCustom: e instanceof CustomEvent, key: e.detail.key, event: e.detail.event })));
      await client.watch([key], () => {});
      const lock = await other.acquire(key, { ttl: 60000 });
      const lost = new Promise((resolve) => other.addEventListener('lost', (e) => resolve({ reason: e.reason, code: e.error.code, lock: e.lock === lock })));
      other.close();
      other.removeEventListener('state', onState);
      const out = { url: client.url, otherUrl: other.url, watched: await watched, lost: await lost, states };
      client.close();
      return out;
    }, [broker.ws, key]);
    assert.equal(r.url, broker.ws);
    assert.equal(r.otherUrl, broker.ws);
    assert.deepEqual(r.watched, { same: true, isCustom: true, key, event: 'granted' });
    assert.deepEqual(r.lost, { reason: 'closed', code: 'closed', lock: true });
    assert.deepEqual(r.states, ['closed:null']);
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }
});
