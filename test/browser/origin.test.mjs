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
// tries to connect and take a lock. Resolves to 'ok' or the error code.
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
      return e.code ?? String(e);
    }
  }, broker.ws);
}

test('a page of a foreign origin cannot open a WebSocket to the broker', async () => {
  const broker = await startBroker();
  const context = await browser.newContext();
  try {
    assert.equal(await tryFromForeignPage(context, broker), 'unreachable');
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
    assert.equal(code, 'unreachable', 'an origin not named stays refused');
  } finally {
    await context.close();
    await other.close();
    await broker.stop();
  }
});
