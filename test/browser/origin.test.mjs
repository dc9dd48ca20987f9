// The Origin check of the WebSocket endpoint, seen from real pages: a page of a foreign origin may
// load /lmx.js but not connect, until the broker names its origin with --allow-origin.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, launchBrowser, lmxPage, staticServer } from './lib/browser.mjs';

let browser;
let site;

before(async () => {
  browser = await launchBrowser();
  site = await staticServer();
});

after(async () => {
  await browser?.close();
  await site?.close();
});

// From a page of `site`: imports the broker's lmx.js (a cross-origin module import, so CORS), then
// tries to connect and take a lock. Resolves to 'ok' or {code, message} of the error.
async function tryFromForeignPage(context, broker) {
  const page = await lmxPage(context, broker, site.origin);
  assert.equal(await page.evaluate(() => location.origin), site.origin);
  return page.evaluate(async (url) => {
    try {
      const client = await lmx.connect(url, { connectTimeout: 3000, reconnect: false });
      const lock = await client.acquire('origin-test');
      await lock.release();
      client.close();
      return 'ok';
    } catch (e) {
      return { code: e.code ?? String(e), message: e.message };
    }
  }, broker.ws);
}

test('a page of a foreign origin cannot open a WebSocket to the broker', async () => {
  const broker = await startBroker();
  const context = await browser.newContext();
  try {
    // The browser hides the 403; the broker's /v1/origin tells the page why, naming the option.
    const refused = await tryFromForeignPage(context, broker);
    assert.equal(refused.code, 'origin_refused');
    assert.match(refused.message, new RegExp(`--allow-origin ${site.origin}`));
    assert.match(broker.output(), new RegExp(`refused WebSocket from origin ${site.origin}`));
    // The broker's own origin is accepted.
    const own = await lmxPage(context, broker);
    assert.equal(await own.evaluate(async (url) => { const c = await lmx.connect(url); await c.ping(); c.close(); return 'ok'; }, broker.ws), 'ok');
  } finally {
    await context.close();
    await broker.stop();
  }
});

test('--allow-origin lets that origin connect, and only that one', async () => {
  const broker = await startBroker({ args: ['--allow-origin', site.origin] });
  const other = await staticServer();
  const context = await browser.newContext();
  try {
    assert.equal(await tryFromForeignPage(context, broker), 'ok');
    const page = await lmxPage(context, broker, other.origin);
    const code = await page.evaluate(async (url) => lmx.connect(url, { reconnect: false }).then(() => 'ok', (e) => e.code), broker.ws);
    assert.equal(code, 'origin_refused', 'an origin not named stays refused');
  } finally {
    await context.close();
    await other.close();
    await broker.stop();
  }
});

test('connect errors say why: a refused origin fails waiting calls at once, a wrong path and a dead port are told apart', async () => {
  const broker = await startBroker();
  const context = await browser.newContext();
  try {
    const foreign = await lmxPage(context, broker, site.origin);
    // A client that reconnects in the background: its calls wait for a connection within their
    // deadline, but a refused origin is no reason to wait.
    const r = await foreign.evaluate(async (url) => {
      const client = new lmx.Client(url, { requestTimeout: 8000 });
      const t0 = performance.now();
      const code = await client.ls().then(() => 'ok', (e) => e.code);
      client.close();
      return { code, ms: performance.now() - t0 };
    }, broker.ws);
    assert.equal(r.code, 'origin_refused');
    assert.ok(r.ms < 4000, `the call waited ${r.ms.toFixed(0)} ms for a connection that cannot come`);
    const own = await lmxPage(context, broker);
    const codes = await own.evaluate(async ([wrongPath, deadPort]) => {
      const code = (url) => lmx.connect(url, { reconnect: false, connectTimeout: 3000 }).then(() => 'ok', (e) => e.code);
      return { wrongPath: await code(wrongPath), deadPort: await code(deadPort) };
    }, [`${broker.ws}not-lmx`, 'ws://127.0.0.1:9/']);
    assert.deepEqual(codes, { wrongPath: 'wrong_endpoint', deadPort: 'unreachable' });
  } finally {
    await context.close();
    await broker.stop();
  }
});

test('an upgrade tried before the broker listened is not a wrong endpoint: the next attempt connects', async () => {
  // The race of a restart: the WebSocket meets no listener, and by the time the page asks
  // /v1/origin why, the broker answers. The first socket of each client here goes to a dead port
  // while the broker is up, which is that race made certain.
  const broker = await startBroker();
  const context = await browser.newContext();
  try {
    const page = await lmxPage(context, broker);
    const r = await page.evaluate(async (url) => {
      const firstFails = () => {
        let tried = false;
        return class extends WebSocket {
          constructor(u, ...rest) { super(tried ? u : 'ws://127.0.0.1:9/', ...rest); tried = true; }
        };
      };
      const once = await lmx.connect(url, { WebSocket: firstFails(), reconnect: false, connectTimeout: 3000 })
        .then(() => ({ code: 'ok' }), (e) => ({ code: e.code, message: e.message }));
      const client = new lmx.Client(url, { WebSocket: firstFails(), minBackoff: 50, maxBackoff: 200, requestTimeout: 8000 });
      const again = await client.ls().then(() => 'ok', (e) => e.code);
      client.close();
      return { once, again };
    }, broker.ws);
    assert.equal(r.once.code, 'unreachable', r.once.message);
    assert.equal(r.again, 'ok', 'a client that reconnects connects on its next attempt');
  } finally {
    await context.close();
    await broker.stop();
  }
});
