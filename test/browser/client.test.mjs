// lmx.js in headless Chromium against a real broker: pages import the client from the broker's
// /lmx.js, acquire, contend, lose holds and reconnect.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBroker, restartBroker, lmxPage, waitFor, uniqueKey, sleep, brokerAndBrowser, connectedPage as connectTo, attempt } from './lib/browser.mjs';

let broker;
let browser;
let context;
brokerAndBrowser((s) => ({ broker, browser, context } = s));

// A page that has imported lmx.js and connected as window.client.
const connectedPage = (b = broker) => connectTo(context, b);

test('/lmx.js is served as a JavaScript module with nosniff, no-cache and CORS headers', async () => {
  const res = await fetch(`${broker.http}/lmx.js`, { headers: { origin: 'http://example.test' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  const source = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../libs/broker/web/lmx.js');
  assert.equal(await res.text(), fs.readFileSync(source, 'utf8'), 'the broker serves the embedded copy of libs/broker/web/lmx.js');
  const dts = await fetch(`${broker.http}/lmx.d.ts`);
  assert.equal(dts.status, 200);
  assert.match(dts.headers.get('content-type'), /^application\/typescript/);
  assert.match(await dts.text(), /export declare function connect\(/);
});

test('a page acquires and releases a lock through lmx.js', async () => {
  const page = await connectedPage();
  const key = uniqueKey('page');
  const r = await page.evaluate(async (key) => {
    const lock = await client.acquire(key, { ttl: 10000 });
    const during = await client.info(key);
    const listed = (await client.ls()).includes(key);
    await lock.release();
    const afterwards = await client.info(key);
    return { key: lock.key, id: lock.id, token: lock.fencingToken, held: lock.held, released: lock.released, during, listed, afterwards };
  }, key);
  assert.equal(r.key, key);
  assert.ok(r.token > 0, `fencing token ${r.token}`);
  assert.equal(r.during.locked, true);
  assert.deepEqual(r.during.holders, [r.id]);
  assert.equal(r.listed, true);
  assert.equal(r.afterwards.locked, false);
  assert.equal(r.released, true);
  assert.equal(r.held, false);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('two pages contend on one key: the second gets it only after the first releases', async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const key = uniqueKey('contend');
  const first = await a.evaluate(async (key) => { window.held = await client.acquire(key, { ttl: 10000 }); return held.fencingToken; }, key);
  await b.evaluate((key) => {
    window.second = { done: false };
    client.acquire(key, { ttl: 10000, timeout: 10000 }).then(
      (l) => { Object.assign(second, { done: true, token: l.fencingToken, at: performance.now() }); window.secondLock = l; },
      (e) => Object.assign(second, { done: true, error: e.code }));
  }, key);
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 1, key), 5000, 'the second page queued');
  await sleep(300);
  assert.equal(await b.evaluate(() => second.done), false, 'the second page got the lock while the first held it');
  await a.evaluate(() => held.release());
  await waitFor(() => b.evaluate(() => second.done), 5000, 'the second page got the lock');
  const second = await b.evaluate(() => second);
  assert.equal(second.error, undefined);
  assert.ok(second.token > first, `fencing tokens ${first} then ${second.token}`);
  await b.evaluate(() => secondLock.release());
  await a.close();
  await b.close();
});

test('acquireMany takes every key at once, after the holder of one of them releases', async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const [x, y] = [uniqueKey('x'), uniqueKey('y')].sort();
  await a.evaluate(async (x) => { window.held = await client.acquire(x, { ttl: 10000 }); }, x);
  await b.evaluate(([x, y]) => {
    window.many = client.acquireMany([y, x], { ttl: 10000, timeout: 10000 });
    many.catch(() => {});
  }, [x, y]);
  await waitFor(() => a.evaluate(async (x) => (await client.info(x)).waiters === 1, x), 5000, 'acquireMany queued');
  // Nothing is held for b while it waits: y is still free.
  assert.equal(await a.evaluate(async (y) => (await client.info(y)).locked, y), false);
  await a.evaluate(() => held.release());
  const r = await b.evaluate(async () => {
    const m = await many;
    return { keys: m.keys, tokens: m.fencingTokens, token: m.fencingToken, id: m.id };
  });
  assert.deepEqual(r.keys, [x, y]);
  assert.ok(r.tokens[x] > 0 && r.tokens[y] > 0);
  assert.equal(r.token, Math.max(r.tokens[x], r.tokens[y]));
  assert.deepEqual(await a.evaluate(async ([x, y]) => [(await client.info(x)).holders, (await client.info(y)).holders], [x, y]), [[r.id], [r.id]]);
  await b.evaluate(async () => { await (await many).release(); });
  assert.deepEqual(await a.evaluate(async ([x, y]) => [(await client.info(x)).locked, (await client.info(y)).locked], [x, y]), [false, false]);
  await a.close();
  await b.close();
});

test('`await using` releases the lock when the scope ends', async () => {
  const page = await connectedPage();
  const key = uniqueKey('using');
  // Real `await using` syntax, compiled by the page's engine (not by node).
  const r = await page.evaluate(`(async (key) => {
    let lock;
    {
      await using l = await client.acquire(key, { ttl: 10000 });
      lock = l;
      window.inside = (await client.info(key)).locked;
    }
    return { inside, after: (await client.info(key)).locked, released: lock.released, lost: lock.lost };
  })(${JSON.stringify(key)})`);
  assert.deepEqual(r, { inside: true, after: false, released: true, lost: false });
  await page.close();
});

test('a hold whose ttl runs out is lost: event, onlost, lost flag, release rejects with lock_lost', async () => {
  const page = await connectedPage();
  const key = uniqueKey('ttl');
  const r = await attempt(page, `async (key) => {
    const lock = await client.acquire(key, { ttl: 150 });
    const seen = [];
    lock.onlost = (e) => seen.push('onlost:' + e.reason);
    const event = new Promise((resolve) => lock.addEventListener('lost', (e) => resolve(e.reason)));
    const clientEvent = new Promise((resolve) => client.addEventListener('lost', (e) => resolve(e.lock.id)));
    const reason = await event;
    const released = await lock.release().then(() => 'ok', (e) => e.code);
    const extended = await lock.extend(1000).then(() => 'ok', (e) => e.code);
    return { reason, seen, lost: lock.lost, held: lock.held, lostReason: lock.lostReason, released, extended,
             clientEventFor: (await clientEvent) === lock.id };
  }`, key);
  assert.deepEqual(r, { reason: 'ttl', seen: ['onlost:ttl'], lost: true, held: false, lostReason: 'ttl',
    released: 'lock_lost', extended: 'lock_lost', clientEventFor: true });
  await page.close();
});

test('extend renews the lease past its ttl', async () => {
  const page = await connectedPage();
  const key = uniqueKey('extend');
  const r = await page.evaluate(async (key) => {
    const lock = await client.acquire(key, { ttl: 2000 });
    const left = await lock.extend(8000);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const still = lock.held && (await client.info(key)).holders.includes(lock.id);
    await lock.release();
    return { left, still };
  }, key);
  assert.ok(r.left > 7000 && r.left <= 8000, `expiresInMs ${r.left}`);
  assert.equal(r.still, true);
  await page.close();
});

test('error codes: would_block, timeout, cancelled (AbortSignal), not_holder, bad_request', async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const key = uniqueKey('codes');
  await a.evaluate(async (key) => { window.held = await client.acquire(key, { ttl: 10000 }); }, key);

  assert.equal((await attempt(b, `(key) => client.tryAcquire(key)`, key)).error, 'would_block');
  const t0 = Date.now();
  assert.equal((await attempt(b, `(key) => client.acquire(key, { timeout: 200 })`, key)).error, 'timeout');
  assert.ok(Date.now() - t0 < 3000, 'the timeout was the request\'s own');
  const aborted = await attempt(b, `(key) => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 150);
    return client.acquire(key, { signal: ac.signal, timeout: 10000 });
  }`, key);
  assert.equal(aborted.error, 'cancelled');
  assert.equal(aborted.name, 'LmxError');
  // Nothing of the withdrawn requests is left queued at the broker.
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 0, key), 5000, 'no waiters left');
  assert.equal((await attempt(b, `async () => { const l = await client.acquire('${uniqueKey('twice')}'); await l.release(); return l.release(); }`)).error, 'not_holder');
  assert.equal((await attempt(b, `(key) => client.acquire(key, { ttl: -5 })`, key)).error, 'bad_request');
  assert.equal((await attempt(b, `() => client.acquire('k'.repeat(5000))`)).error, 'bad_request');
  // A force release ends the first page's hold; it learns so with reason "forced".
  const lost = a.evaluate(() => new Promise((resolve) => held.addEventListener('lost', (e) => resolve(e.reason))));
  await b.evaluate((key) => client.forceRelease(key), key);
  assert.equal(await lost, 'forced');
  await a.close();
  await b.close();
});

test('lmx.js error codes are the C++ lmx::errc names', async () => {
  const header = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../libs/client/include/lmx/client/errc.hpp'), 'utf8');
  const body = /enum class errc \{([\s\S]*?)\};/.exec(header)[1];
  const cpp = [...body.matchAll(/^\s*([a-z_]+)\s*(?:=\s*\d+)?,/gm)].map((m) => m[1]);
  assert.ok(cpp.length >= 10, `parsed ${cpp.length} names from errc.hpp`);
  const page = await lmxPage(context, broker);
  const js = await page.evaluate(() => Object.entries(window.lmx.errc));
  assert.deepEqual(js.map(([k]) => k).sort(), [...cpp].sort());
  for (const [k, v] of js) assert.equal(k, v);
  await page.close();
});

test('a grant that crosses an abort is given back', async () => {
  const other = await browser.newContext();  // another renderer, so that b can stall alone
  const a = await connectedPage();
  const b = await lmxPage(other, broker);
  await b.evaluate(async (url) => { window.client = await lmx.connect(url); }, broker.ws);
  const key = uniqueKey('cross');
  await a.evaluate(async (key) => {
    window.seen = [];
    await client.watch([key], (e) => seen.push({ event: e.event, uuid: e.uuid }));
    window.held = await client.acquire(key, { ttl: 10000 });
  }, key);
  // b queues, then stalls its event loop for 1 s and aborts at the end of that same task.
  // a releases meanwhile, so the grant is already in b's socket when b withdraws the request.
  await b.evaluate((key) => {
    const ac = new AbortController();
    window.outcome = client.acquire(key, { signal: ac.signal, timeout: 10000, onqueued: (n) => { window.requestId = n.uuid; } })
      .then(() => 'granted', (e) => e.code);
    window.stall = () => setTimeout(() => {
      const end = performance.now() + 1000;
      while (performance.now() < end) { /* stall */ }
      ac.abort();
    }, 0);
  }, key);
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 1, key), 5000, 'b queued');
  await b.evaluate(() => stall());
  await sleep(100);
  await a.evaluate(() => held.release());
  assert.equal(await b.evaluate(() => outcome), 'cancelled');
  await waitFor(() => a.evaluate(async (key) => { const i = await client.info(key); return !i.locked && i.waiters === 0; }, key),
    5000, 'the key is free again');
  // The grant did cross the abort: the broker granted b's request, and b gave it back.
  const requestId = await b.evaluate(() => requestId);
  const seen = await a.evaluate(() => seen);
  const forB = seen.filter((e) => e.uuid === requestId).map((e) => e.event);
  assert.deepEqual(forB, ['queued', 'granted', 'released'], `events of b's request ${requestId}: ${JSON.stringify(seen)}`);
  await a.close();
  await other.close();
});

test('reconnect: a broker restart loses holds and fails pending calls, then the client reconnects and watches again', async () => {
  const own = await startBroker();
  const page = await connectedPage(own);
  const key = uniqueKey('reconnect');
  await page.evaluate(async (key) => {
    window.events = [];
    client.addEventListener('disconnect', (e) => events.push('disconnect:' + e.error.code));
    client.addEventListener('connect', () => events.push('connect'));
    window.seen = [];
    await client.watch([key], (e) => seen.push(e.event));
    window.held = await client.acquire(key, { ttl: 60000 });
    window.heldLost = new Promise((resolve) => held.addEventListener('lost', (e) => resolve(e.reason)));
    window.other = await window.lmx.connect(client.url, { reconnect: false });
    window.pending = other.acquire(key, { timeout: 30000 }).then(() => 'granted', (e) => e.code);
  }, key);
  await waitFor(() => page.evaluate(async (key) => (await client.info(key)).waiters === 1, key), 5000, 'the waiter queued');
  const port = own.port;
  await own.stop();
  assert.equal(await page.evaluate(() => heldLost), 'disconnected');
  // A broker that stops says so: the calls it cut off fail with shutting_down.
  assert.equal(await page.evaluate(() => pending), 'shutting_down');
  const again = await restartBroker(port);
  try {
    await waitFor(() => page.evaluate(() => events.includes('connect')), 5000, 'the client reconnected');
    assert.deepEqual(await page.evaluate(() => events), ['disconnect:shutting_down', 'connect']);
    const r = await page.evaluate(async (key) => {
      seen.length = 0;
      const l = await client.acquire(key);
      await l.release();
      await client.ping();
      return { held: held.held, lost: held.lost, token: l.fencingToken, otherState: other.state, seen };
    }, key);
    assert.equal(r.lost, true);
    assert.deepEqual(r.seen, ['granted', 'released'], 'the watch was renewed on the new connection');
    assert.ok(r.token > 0);
    assert.equal(r.otherState, 'disconnected', 'a client with reconnect: false stays disconnected');
  } finally {
    await page.close();
    await again.stop();
  }
});

// A page whose client counts its connection attempts (window.attempts), through the WebSocket option.
async function countingPage(b, options = {}) {
  const page = await lmxPage(context, b);
  await page.evaluate(async ([url, options]) => {
    window.attempts = 0;
    class Counting extends WebSocket {
      constructor(...args) { super(...args); window.attempts++; }
    }
    window.client = await window.lmx.connect(url, { ...options, WebSocket: Counting });
    window.events = [];
    client.addEventListener('disconnect', (e) => events.push('disconnect:' + e.error.code));
    client.addEventListener('connect', () => events.push('connect'));
  }, [b.ws, options]);
  return page;
}

test('calls made while the broker is down wait for a reconnect until their deadline, sharing the background attempts', async () => {
  const own = await startBroker();
  const page = await countingPage(own, { minBackoff: 100, maxBackoff: 400, requestTimeout: 1500 });
  const key = uniqueKey('down');
  await page.evaluate(async (key) => {
    window.seen = [];
    await client.watch([key], (e) => seen.push(e.event));
  }, key);
  const port = own.port;
  await own.stop();
  await waitFor(() => page.evaluate(() => events.includes('disconnect:shutting_down')), 5000, 'the drop noticed');
  // Twenty calls at once make no attempts of their own: they wait for the background ones, and
  // at their deadline (requestTimeout) fail with why the last attempt failed.
  const r = await page.evaluate(async () => {
    const before = attempts;
    const t0 = performance.now();
    const codes = await Promise.all(Array.from({ length: 20 }, () => client.ls().then(() => 'ok', (e) => e.code)));
    return { codes: [...new Set(codes)], made: attempts - before, ms: performance.now() - t0, state: client.state };
  });
  assert.deepEqual(r.codes, ['unreachable']);
  assert.ok(r.ms >= 1400, `the calls gave up after ${r.ms.toFixed(0)} ms, before their 1500 ms deadline`);
  assert.ok(r.made <= 10, `${r.made} connection attempts in 1.5 s for 20 calls: the backoff was not followed`);
  // The failed calls did not stop the background attempts: once the broker is back the client
  // reconnects without any call, and the watch is renewed.
  const again = await restartBroker(port);
  try {
    await waitFor(() => page.evaluate(() => events.includes('connect')), 5000, 'the client reconnected by itself');
    const other = await connectedPage(again);
    await other.evaluate(async (key) => { const l = await client.acquire(key); await l.release(); }, key);
    await waitFor(() => page.evaluate(() => seen.join() === 'granted,released'), 5000, 'the renewed watch delivered events');
    await other.close();
  } finally {
    await page.close();
    await again.stop();
  }
});

test('a hold kept on exit across a broker restart: an unanswered release leaves it held, the reconnect finds it lost, `await using` says so', async () => {
  const own = await startBroker();
  const page = await countingPage(own, { minBackoff: 100, maxBackoff: 400, requestTimeout: 1000 });
  const key = uniqueKey('kept');
  await page.evaluate(async (key) => {
    window.kept = await client.acquire(key, { ttl: 60000, keepLocksOnExit: true });
    window.keptLost = new Promise((resolve) => kept.addEventListener('lost', (e) => resolve(e.reason)));
  }, key);
  const port = own.port;
  await own.stop();
  await waitFor(() => page.evaluate(() => events.includes('disconnect:shutting_down')), 5000, 'the drop noticed');
  const r = await page.evaluate(async () => {
    const release = await kept.release().then(() => 'ok', (e) => e.code);
    const dispose = await kept[Symbol.asyncDispose]().then(() => 'ok', (e) => e.code);
    return { release, dispose, held: kept.held, released: kept.released, lost: kept.lost };
  });
  assert.deepEqual(r, { release: 'unreachable', dispose: 'unreachable', held: true, released: false, lost: false });
  const again = await restartBroker(port);
  try {
    assert.equal(await page.evaluate(() => keptLost), 'disconnected', 'the new broker does not hold it');
    // The end of an `await using` scope reports the loss once, then the lock is done with.
    assert.equal(await page.evaluate(() => kept[Symbol.asyncDispose]().then(() => 'ok', (e) => `${e.code}:${e.cause?.code}`)), 'lock_lost:connection_lost');
    assert.equal(await page.evaluate(() => kept[Symbol.asyncDispose]().then(() => 'ok', (e) => e.code)), 'ok');
  } finally {
    await page.close();
    await again.stop();
  }
});

test('a kept-on-exit request whose grant a drop cut off is given back after the reconnect, and asked again', async () => {
  const watcher = await connectedPage();
  const key = uniqueKey('orphan');
  await watcher.evaluate(async (key) => {
    window.seen = [];
    await client.watch([key], (e) => seen.push({ event: e.event, uuid: e.uuid }));
  }, key);
  const page = await lmxPage(context, broker);
  // The socket closes right after it sent the first lock request: the broker grants it, the page
  // never sees the grant, and the hold is kept on exit. The request is asked again on the next
  // connection (a new request id) within its wait.
  const outcome = await page.evaluate(async ([url, key]) => {
    window.cut = 0;
    class CutOff extends WebSocket {
      send(data) {
        super.send(data);
        if (data.includes('"keepLocksOnExit":true') && window.cut++ === 0) this.close();
      }
    }
    window.client = await window.lmx.connect(url, { WebSocket: CutOff, minBackoff: 50, maxBackoff: 200 });
    window.lock = await client.acquire(key, { ttl: 60000, keepLocksOnExit: true, timeout: 10000 });
    return { id: lock.id, held: lock.held };
  }, [broker.ws, key]);
  assert.equal(outcome.held, true);
  await waitFor(() => watcher.evaluate(() => seen.length >= 3), 5000, 'the unseen grant given back and the new request granted');
  const seen = await watcher.evaluate(() => seen);
  const first = seen[0].uuid;
  assert.notEqual(first, outcome.id);
  assert.deepEqual(seen.filter((e) => e.uuid === first).map((e) => e.event), ['granted', 'released'], JSON.stringify(seen));
  assert.deepEqual(seen.filter((e) => e.uuid === outcome.id).map((e) => e.event), ['granted'], JSON.stringify(seen));
  assert.deepEqual((await watcher.evaluate(async (key) => client.info(key), key)).holders, [outcome.id]);
  await page.evaluate(() => lock.release());
  await page.close();
  await watcher.close();
});

test('a watch the broker refused is asked for again, not taken as in place', async () => {
  const page = await connectedPage();
  const r = await page.evaluate(async () => {
    const long = 'w'.repeat(5000);
    const first = await client.watch([long], () => {}).then(() => 'ok', (e) => e.code);
    const second = await client.watch([long], () => {}).then(() => 'ok', (e) => e.code);
    return { first, second };
  });
  assert.deepEqual(r, { first: 'bad_request', second: 'bad_request' });
  await page.close();
});

test('acquireMany takes any iterable of keys', async () => {
  const page = await connectedPage();
  const [x, y] = [uniqueKey('set-x'), uniqueKey('set-y')].sort();
  const r = await page.evaluate(async ([x, y]) => {
    const m = await client.acquireMany(new Set([y, x]), { ttl: 10000 });
    const keys = m.keys;
    await m.release();
    const other = await window.lmx.connect(client.url);
    const held = await other.acquire(x, { ttl: 10000 });
    const busy = await client.acquireMany(new Set([x, y]), { wait: false }).then(() => 'ok', (e) => e.code + ':' + e.message);
    await held.release();
    other.close();
    const string = await client.acquireMany(x).then(() => 'ok', (e) => e.code);
    return { keys, busy, string };
  }, [x, y]);
  assert.deepEqual(r.keys, [x, y]);
  assert.match(r.busy, /^would_block:/);
  assert.equal(r.string, 'bad_request');
  await page.close();
});

test('close() fails pending calls with closed and later calls too', async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const key = uniqueKey('close');
  await a.evaluate(async (key) => { window.held = await client.acquire(key, { ttl: 10000 }); }, key);
  const r = await b.evaluate(async (key) => {
    const pending = client.acquire(key, { timeout: 10000 }).then(() => 'granted', (e) => e.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.close();
    return { pending: await pending, later: await client.ls().then(() => 'ok', (e) => e.code), state: client.state };
  }, key);
  assert.deepEqual(r, { pending: 'closed', later: 'closed', state: 'closed' });
  await waitFor(() => a.evaluate(async (key) => (await client.info(key)).waiters === 0, key), 5000, 'the closed client\'s waiter is gone');
  await a.evaluate(() => held.release());
  await a.close();
  await b.close();
});

test('watch delivers events for the watched keys until unsubscribed', async () => {
  const page = await connectedPage();
  const [key, other] = [uniqueKey('watch'), uniqueKey('unwatched')];
  const r = await page.evaluate(async ([key, other]) => {
    const seen = [];
    const sub = await client.watch([key], (e) => seen.push(`${e.event}:${e.key === key ? 'key' : e.key}`));
    const l = await client.acquire(key);
    const o = await client.acquire(other);
    await l.release();
    await o.release();
    await client.ping();
    await sub.unsubscribe();
    const before = seen.length;
    const l2 = await client.acquire(key);
    await l2.release();
    await client.ping();
    return { seen, before, after: seen.length };
  }, [key, other]);
  assert.deepEqual(r.seen, ['granted:key', 'released:key']);
  assert.equal(r.after, r.before);
  await page.close();
});

test('ping and stats answer', async () => {
  const page = await connectedPage();
  const r = await page.evaluate(async () => ({ rtt: await client.ping(), stats: await client.stats() }));
  assert.ok(r.rtt >= 0 && r.rtt < 2000, `rtt ${r.rtt}`);
  assert.ok(r.stats.connections >= 1, JSON.stringify(r.stats));
  await page.close();
});
