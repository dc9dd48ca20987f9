// Calls of lmx.js that wait across reconnects, in headless Chromium against a real broker: an
// acquire made while the broker is down is sent once the client is connected again, and a
// waiting acquire whose connection drops is asked again on the next connection, each within its
// own timeout. What the old connection held is gone, and is never reported as held.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, restartBroker, lmxPage, waitFor, uniqueKey, sleep, brokerAndBrowser, staticServer, attempt } from './lib/browser.mjs';

let broker;
let browser;
let context;
brokerAndBrowser((s) => ({ broker, browser, context } = s));

// A page whose client keeps its WebSockets in window.sockets, so that a test can drop one.
async function connectedPage(b, options = {}) {
  const page = await lmxPage(context, b);
  await page.evaluate(async ([url, options]) => {
    window.sockets = [];
    class Kept extends WebSocket {
      constructor(...args) { super(...args); sockets.push(this); }
    }
    window.client = await window.lmx.connect(url, { WebSocket: Kept, minBackoff: 50, maxBackoff: 300, ...options });
    window.events = [];
    client.addEventListener('disconnect', () => events.push('disconnect'));
    client.addEventListener('connect', () => events.push('connect'));
    client.addEventListener('state', (e) => events.push(`state:${e.state}`));
  }, [b.ws, options]);
  return page;
}

test('an acquire made while the broker is down is sent once the client reconnects, within its timeout', { timeout: 60_000 }, async () => {
  const own = await startBroker();
  const page = await connectedPage(own);
  const key = uniqueKey('down');
  const port = own.port;
  await own.stop();
  await waitFor(() => page.evaluate(() => events.includes('disconnect')), 5000, 'the drop noticed');
  await page.evaluate((key) => {
    window.t0 = performance.now();
    window.outcome = null;
    client.acquire(key, { timeout: 20000, ttl: 60000 }).then(
      (l) => { window.lock = l; outcome = 'granted'; },
      (e) => { outcome = e.code; });
    // One with a short timeout gives up at its timeout, saying why.
    window.short = client.acquire(key + '-short', { timeout: 1200 }).then(() => ({ code: 'granted' }),
      (e) => ({ code: e.code, ms: performance.now() - t0 }));
  }, key);
  const short = await page.evaluate(() => short);
  assert.equal(short.code, 'unreachable');
  assert.ok(short.ms >= 1150, `the short acquire gave up after ${short.ms.toFixed(0)} ms, before its timeout`);
  await sleep(500);
  assert.equal(await page.evaluate(() => outcome), null, 'the acquire did not wait for the broker');
  const again = await restartBroker(port);
  try {
    await waitFor(() => page.evaluate(() => outcome !== null), 10000, 'the acquire answered');
    assert.equal(await page.evaluate(() => outcome), 'granted');
    const other = await connectedPage(again);
    const info = await other.evaluate(async (key) => client.info(key), key);
    assert.deepEqual(info.holders, [await page.evaluate(() => lock.id)]);
    await page.evaluate(() => lock.release());
    await other.close();
  } finally {
    await page.close();
    await again.stop();
  }
});

test('a waiting acquire whose connection drops is asked again on the next connection and keeps waiting', { timeout: 60_000 }, async () => {
  const [a, b] = [await connectedPage(broker), await connectedPage(broker)];
  const key = uniqueKey('requeue');
  await a.evaluate(async (key) => {
    window.held = await client.acquire(key, { ttl: 60000 });
    window.seen = [];
    await client.watch([key], (e) => seen.push(`${e.event}:${e.uuid === held.id ? 'a' : 'b'}`));
  }, key);
  await b.evaluate(async (key) => {
    window.outcome = null;
    window.queuedIds = [];
    client.acquire(key, { timeout: 20000, ttl: 60000, onqueued: (n) => queuedIds.push(n.uuid) }).then(
      (l) => { window.lock = l; outcome = 'granted'; },
      (e) => { outcome = e.code; });
    // Also a lock b holds on the connection about to drop: it is lost, not carried over.
    window.other = await client.acquire(key + '-other', { ttl: 60000 });
  }, key);
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 1, key), 5000, 'b queued');
  // Drop b's connection from its side.
  await b.evaluate(() => sockets.at(-1).close());
  await waitFor(() => b.evaluate(() => events.filter((e) => e === 'connect').length === 1), 5000, 'b reconnected');
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 1, key), 5000, 'b queued again');
  const mid = await b.evaluate(() => ({ outcome, otherHeld: other.held, otherReason: other.lostReason, queued: queuedIds.length }));
  assert.deepEqual(mid, { outcome: null, otherHeld: false, otherReason: 'disconnected', queued: 2 });
  assert.equal((await a.evaluate(async (key) => client.info(key + '-other'), key)).locked, false, 'the broker released the old connection\'s hold');
  await a.evaluate(() => held.release());
  await waitFor(() => b.evaluate(() => outcome !== null), 5000, 'b granted');
  assert.equal(await b.evaluate(() => outcome), 'granted');
  const ids = await b.evaluate(() => ({ lock: lock.id, queued: queuedIds }));
  assert.equal(ids.lock, ids.queued[1], 'granted to the request made on the new connection');
  await b.evaluate(() => lock.release());
  const states = await b.evaluate(() => events.filter((e) => e.startsWith('state:')));
  assert.deepEqual(states, ['state:disconnected', 'state:connecting', 'state:connected']);
  await a.close();
  await b.close();
});

test('a client given several brokers connects to the first that answers and fails over to the next when it drops', { timeout: 60_000 }, async () => {
  // The page belongs to an origin of its own that every broker allows, so that it outlives them.
  const site = await staticServer();
  const args = ['--allow-origin', site.origin];
  const dead = await startBroker({ args });
  await dead.stop();
  const a = await startBroker({ args });
  const b = await startBroker({ args });
  const page = await lmxPage(context, b, `${site.origin}/`);
  try {
    const key = uniqueKey('failover');
    const first = await page.evaluate(async ([urls, key]) => {
      window.client = await window.lmx.connect(urls, { minBackoff: 50, maxBackoff: 300 });
      window.events = [];
      client.addEventListener('connect', () => events.push(`connect:${client.url}`));
      client.addEventListener('lost', (e) => events.push(`lost:${e.reason}`));
      window.held = await client.acquire(key, { ttl: 60000 });
      return { url: client.url, urls: client.urls, fromString: new window.lmx.Client(urls.join(' , ')).urls };
    }, [[dead.ws, a.ws, b.ws], key]);
    assert.equal(first.url, a.ws, 'the dead broker was passed over');
    assert.deepEqual(first.urls, [dead.ws, a.ws, b.ws]);
    assert.deepEqual(first.fromString, [dead.ws, a.ws, b.ws], 'a comma-separated list names the same brokers');
    await a.stop();
    await waitFor(() => page.evaluate(() => events.some((e) => e.startsWith('connect:'))), 10000, 'the client connected again');
    const after = await page.evaluate(async (key) => {
      const again = await client.acquire(key, { ttl: 60000 });
      const info = await client.info(key);
      return { events, url: client.url, held: held.held, holders: info.holders, id: again.id };
    }, key);
    assert.equal(after.url, b.ws, 'the next broker of the list took over');
    assert.deepEqual(after.events, ['lost:disconnected', `connect:${b.ws}`], 'the hold on the lost broker was reported lost');
    assert.equal(after.held, false);
    assert.deepEqual(after.holders, [after.id], 'the acquire went to the next broker');
    for (const bad of [[], [b.ws, ''], 'ftp://127.0.0.1:1/']) {
      const r = await attempt(page, `async (urls) => window.lmx.connect(urls).then(() => 'connected')`, bad);
      assert.equal(r.error, 'invalid_url', `connect(${JSON.stringify(bad)})`);
    }
    const none = await attempt(page, `async (urls) => window.lmx.connect(urls, { connectTimeout: 2000 }).then(() => 'connected')`, [dead.ws, dead.ws]);
    assert.equal(none.error, 'unreachable', 'no broker of the list answers');
    // The browser itself logs each refused connection to a dead broker; nothing else is amiss.
    assert.deepEqual(page.problems.filter((p) => !p.includes('net::ERR_CONNECTION_REFUSED')), []);
  } finally {
    await page.close();
    await b.stop();
    await site.close();
  }
});

// A broker that stops says so: the client reports `shutting_down`, not `connection_lost`, and a
// plain WebSocket sees a clean close 1001. A broker that dies (SIGKILL) is a lost connection.
test('a stopping broker is told apart from one that dies', { timeout: 60_000 }, async () => {
  for (const how of ['SIGTERM', 'SIGKILL']) {
    const own = await startBroker();
    const page = await connectedPage(own);
    await page.evaluate(async ([url, key]) => {
      window.errors = [];
      client.addEventListener('disconnect', (e) => errors.push(e.error?.code ?? null));
      window.held = await client.acquire(key, { ttl: 60000 });
      window.raw = new WebSocket(url);
      await new Promise((resolve, reject) => { raw.onopen = resolve; raw.onerror = reject; });
      window.rawClose = null;
      raw.onclose = (e) => { rawClose = { code: e.code, reason: e.reason, wasClean: e.wasClean }; };
    }, [own.ws, uniqueKey('stop')]);
    if (how === 'SIGKILL') own.proc.kill('SIGKILL');
    const status = await own.stop();
    await waitFor(() => page.evaluate(() => rawClose !== null && errors.length > 0), 5000, `the ${how} noticed`);
    const seen = await page.evaluate(() => ({ errors, rawClose, lost: held.lostReason }));
    if (how === 'SIGTERM') {
      assert.equal(status.code, 0);
      assert.deepEqual(seen.errors, ['shutting_down']);
      assert.deepEqual(seen.rawClose, { code: 1001, reason: 'broker shutting down', wasClean: true });
    } else {
      assert.deepEqual(seen.errors, ['connection_lost']);
      assert.equal(seen.rawClose.code, 1006);
      assert.equal(seen.rawClose.wasClean, false);
    }
    assert.equal(seen.lost, 'disconnected');
    await page.close();
  }
});
