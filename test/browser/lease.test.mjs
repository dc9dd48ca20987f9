// Leases in lmx.js, in headless Chromium against a real broker: the default ttl and its
// renewal, the lease counted on the client (also while the broker is frozen), lock.signal,
// client.withLock, `await using` reporting a lost lease, waits without limit, and the checks
// made before a request is sent.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, lmxPage, waitFor, uniqueKey, sleep, brokerAndBrowser, connectedPage as connectTo, attempt } from './lib/browser.mjs';

let broker;
let browser;
let context;
brokerAndBrowser((s) => ({ broker, browser, context } = s));

// A connected page (window.client) with window.sleep(ms).
async function connectedPage(b = broker, options = {}) {
  const page = await connectTo(context, b, options);
  await page.evaluate(() => { window.sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms)); });
  return page;
}

test('a lock that names no ttl gets 5000 ms, renewed while held; a named ttl is not renewed unless asked', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const key = uniqueKey('default');
  const d = await page.evaluate(async (key) => {
    const lock = await client.acquire(key);
    const info = await client.info(key);
    const r = { ttl: lock.ttl, autoRenew: lock.autoRenew, brokerLeft: info.holderDetails[0].expiresInMs, localLeft: lock.expiresAt - performance.now() };
    await lock.release();
    return r;
  }, key);
  assert.equal(d.ttl, 5000);
  assert.equal(d.autoRenew, true);
  assert.ok(d.brokerLeft > 4500 && d.brokerLeft <= 5000, `the broker counts ${d.brokerLeft} ms left`);
  assert.ok(d.localLeft > 4000 && d.localLeft < 4750, `the client counts ${d.localLeft} ms left (ttl less a margin of at least 5%)`);

  // A client whose default ttl is short: its leases outlive it over and over while held (a ttl of
  // 1500 ms leaves a renewal, sent at a third of it, about a second to be answered on a busy machine).
  const short = await connectedPage(broker, { ttl: 1500 });
  const r = await short.evaluate(async (key) => {
    const renewed = await client.acquire(key + '-renewed');
    const named = await client.acquire(key + '-named', { ttl: 1500 });
    const asked = await client.acquire(key + '-asked', { ttl: 1500, autoRenew: true });
    await sleep(4000);
    const listed = async (l) => (await client.info(l.key)).holders.includes(l.id);
    const out = {
      renewed: { held: renewed.held, listed: await listed(renewed) },
      named: { held: named.held, lostReason: named.lostReason, listed: await listed(named) },
      asked: { held: asked.held, listed: await listed(asked) },
    };
    await renewed.release();
    await asked.release();
    return out;
  }, key);
  assert.deepEqual(r, {
    renewed: { held: true, listed: true },
    named: { held: false, lostReason: 'ttl', listed: false },
    asked: { held: true, listed: true },
  });
  await page.close();
  await short.close();
});

test('the lease is counted on the client from when the request was sent: a frozen broker cannot keep a lock held', { timeout: 60_000 }, async () => {
  const own = await startBroker();
  const page = await connectedPage(own);
  const key = uniqueKey('frozen');
  try {
    const lease = await page.evaluate(async (key) => {
      const rttBefore = client._rtt;
      const t0 = performance.now();
      window.named = await client.acquire(key, { ttl: 800 });
      const t1 = performance.now();
      const rtt = Math.max(rttBefore, client._rtt, t1 - t0);
      window.renewing = await client.acquire(key + '-renewing', { ttl: 800, autoRenew: true });
      window.ends = [];
      for (const l of [named, renewing]) l.signal.addEventListener('abort', () => ends.push({ key: l.key, at: performance.now(), code: l.signal.reason.code }));
      return { t0, t1, expiresAt: named.expiresAt, rtt };
    }, key);
    // Counted from the send (t0 at the latest), less max(5% of 800, 2 x the round trip the client
    // measured last: this request's, or the one before when that was slower on a loaded machine).
    const after = `expiresAt ${lease.expiresAt - lease.t0} ms after the call (round trip ${lease.rtt} ms)`;
    assert.ok(lease.expiresAt <= lease.t1 + 800 - 40, after);
    assert.ok(lease.expiresAt >= lease.t0 + 800 - Math.max(40, 2 * lease.rtt) - 1, after);
    own.proc.kill('SIGSTOP');
    await waitFor(() => page.evaluate(() => ends.length === 2), 3000, 'both leases ended although the broker cannot say so');
    const r = await page.evaluate(() => ({
      ends, namedAt: named.expiresAt, held: [named.held, renewing.held], lost: [named.lost, renewing.lost],
      reasons: [named.lostReason, renewing.lostReason], state: client.state,
    }));
    assert.equal(r.state, 'connected', 'the connection is still open: only the lease says the lock is gone');
    assert.deepEqual(r.held, [false, false]);
    assert.deepEqual(r.lost, [true, true]);
    assert.deepEqual(r.reasons, ['ttl', 'ttl']);
    assert.deepEqual(r.ends.map((e) => e.code), ['lease_expired', 'lease_expired']);
    const namedEnd = r.ends.find((e) => e.key === key);
    assert.ok(namedEnd.at >= lease.expiresAt && namedEnd.at < lease.expiresAt + 1000, `lost ${namedEnd.at - lease.expiresAt} ms after expiresAt`);
  } finally {
    own.proc.kill('SIGCONT');
    await page.close();
    await own.stop();
  }
});

test('lock.signal aborts on loss with an LmxError saying why; a release does not abort it', { timeout: 60_000 }, async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const key = uniqueKey('signal');
  await a.evaluate(async (key) => {
    window.ended = (l) => new Promise((resolve) => l.signal.addEventListener('abort', () =>
      resolve(`${l.signal.reason.name}:${l.signal.reason.code}`)));
    window.forced = await client.acquire(key, { ttl: 60000 });
    window.forcedEnd = ended(forced);
    // Long enough that its grant always arrives inside it, on a loaded machine too (the client
    // counts the lease from when it sent the request, and a grant after its end is lost at once).
    window.expired = await client.acquire(key + '-ttl', { ttl: 1000 });
    window.expiredEnd = ended(expired);
    window.released = await client.acquire(key + '-released', { ttl: 60000 });
    window.lostEvents = [];
    client.addEventListener('lost', (e) => lostEvents.push(`${e.reason}:${e.error.code}`));
  }, key);
  await b.evaluate((key) => client.forceRelease(key), key);
  const r = await a.evaluate(async (key) => {
    await released.release();
    const forcedCode = await forcedEnd;
    const expiredCode = await expiredEnd;
    // close() ends every hold of the client, kept on exit or not.
    const other = await window.lmx.connect(client.url);
    const plain = await other.acquire(key + '-plain', { ttl: 60000 });
    const kept = await other.acquire(key + '-kept', { ttl: 60000, keepLocksOnExit: true });
    const closedEnds = Promise.all([ended(plain), ended(kept)]);
    other.close();
    return { forcedCode, expiredCode, releasedAborted: released.signal.aborted, lostEvents, closed: await closedEnds };
  }, key);
  assert.equal(r.forcedCode, 'LmxError:forced');
  assert.equal(r.expiredCode, 'LmxError:lease_expired');
  assert.equal(r.releasedAborted, false);
  assert.deepEqual(r.lostEvents.sort(), ['forced:forced', 'ttl:lease_expired']);
  assert.deepEqual(r.closed, ['LmxError:closed', 'LmxError:closed']);
  await a.close();
  await b.close();
});

test('a dropped connection aborts lock.signal with connection_lost', { timeout: 60_000 }, async () => {
  const own = await startBroker();
  const page = await connectedPage(own);
  const key = uniqueKey('drop');
  await page.evaluate(async (key) => {
    window.lock = await client.acquire(key, { ttl: 60000 });
    window.end = new Promise((resolve) => lock.signal.addEventListener('abort', () => resolve(lock.signal.reason.code)));
  }, key);
  await own.stop();
  assert.equal(await page.evaluate(() => end), 'connection_lost');
  await page.close();
});

test('withLock acquires, runs the callback with the lock and its signal, and releases', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const key = uniqueKey('with');
  const ok = await page.evaluate(async (key) => {
    let during;
    const result = await client.withLock(key, { ttl: 10000 }, async (lock, signal) => {
      during = { locked: (await client.info(key)).holders.includes(lock.id), same: signal === lock.signal, aborted: signal.aborted };
      return 42;
    });
    const shortForm = await client.withLock(key, async (lock) => lock.autoRenew);
    return { result, during, after: (await client.info(key)).locked, shortForm };
  }, key);
  assert.deepEqual(ok, { result: 42, during: { locked: true, same: true, aborted: false }, after: false, shortForm: true });

  const thrown = await attempt(page, `async (key) => {
    await client.withLock(key, { ttl: 10000 }, async () => { throw new Error('boom'); });
  }`, key);
  assert.equal(thrown.error, 'Error: boom');
  assert.equal(await page.evaluate(async (key) => (await client.info(key)).locked, key), false, 'released after the callback threw');

  // The lease runs out during the callback: the signal aborts inside, and withLock rejects.
  const lost = await attempt(page, `async (key) => {
    window.insideAbort = null;
    await client.withLock(key, { ttl: 300 }, async (lock, signal) => {
      signal.addEventListener('abort', () => { insideAbort = signal.reason.code; });
      await sleep(700);
      return 'done';
    });
    return 'resolved';
  }`, key);
  assert.equal(lost.error, 'lock_lost');
  assert.equal(lost.cause, 'lease_expired');
  assert.equal(await page.evaluate(() => insideAbort), 'lease_expired');
  await page.close();
});

test('`await using` throws lock_lost when the lease was lost while in scope', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const key = uniqueKey('using-lost');
  // Real `await using` syntax, compiled by the page's engine.
  const r = await page.evaluate(`(async (key) => {
    let lock;
    try {
      await using l = await client.acquire(key, { ttl: 300 });
      lock = l;
      await sleep(700);
      return 'scope ended quietly';
    } catch (e) {
      return { code: e.code, cause: e.cause?.code, name: e.name, lost: lock.lost };
    }
  })(${JSON.stringify(key)})`);
  assert.deepEqual(r, { code: 'lock_lost', cause: 'lease_expired', name: 'LmxError', lost: true });
  // A loss already thrown by release() inside the scope is not thrown again.
  const once = await page.evaluate(`(async (key) => {
    let first;
    {
      await using l = await client.acquire(key, { ttl: 300 });
      await sleep(700);
      first = await l.release().then(() => 'ok', (e) => e.code);
    }
    return first;
  })(${JSON.stringify(key)})`);
  assert.equal(once, 'lock_lost');
  await page.close();
});

test('timeout: Infinity waits without limit, so do timeouts past setTimeout\'s range; timeout 0 is a try-lock', { timeout: 60_000 }, async () => {
  const [a, b] = [await connectedPage(), await connectedPage()];
  const key = uniqueKey('forever');
  await a.evaluate(async (key) => { window.held = await client.acquire(key, { ttl: 60000 }); }, key);
  await b.evaluate((key) => {
    window.outcomes = {};
    const note = (name, p) => p.then((l) => { outcomes[name] = 'granted'; window[name] = l; }, (e) => { outcomes[name] = e.code; });
    note('forever', client.acquire(key, { timeout: Infinity, ttl: 60000 }));
    window.ac = new AbortController();
    note('huge', client.acquire(key, { timeout: 2 ** 31 + 5, signal: ac.signal }));
    note('zero', client.acquire(key, { timeout: 0 }));
  }, key);
  await waitFor(() => b.evaluate(() => outcomes.zero !== undefined), 5000, 'the try-lock answered');
  await sleep(1200);
  assert.deepEqual(await b.evaluate(() => outcomes), { zero: 'would_block' }, 'the waits were cut short');
  const info = await a.evaluate(async (key) => client.info(key), key);
  assert.equal(info.waiters, 2);
  await b.evaluate(() => ac.abort());
  await a.evaluate(() => held.release());
  await waitFor(() => b.evaluate(() => outcomes.forever !== undefined), 5000, 'the endless wait was granted');
  assert.deepEqual(await b.evaluate(() => outcomes), { zero: 'would_block', huge: 'cancelled', forever: 'granted' });
  await b.evaluate(() => forever.release());
  await a.close();
  await b.close();
});

test('requests are checked before they are sent: bad_request with the reason, and nothing else is disturbed', { timeout: 60_000 }, async () => {
  const limited = await startBroker({ args: ['--max-key-length', '16', '--max-keys', '4'] });
  const page = await connectedPage(limited);
  try {
    const r = await page.evaluate(async () => {
      const held = await client.acquire('held', { ttl: 60000 });
      const code = (p) => p.then(() => 'ok', (e) => `${e.code}: ${e.message}`);
      const out = {
        limits: client.limits,
        ttl0: await code(client.acquire('k', { ttl: 0 })),
        ttlNegative: await code(client.acquire('k', { ttl: -5 })),
        ttlFraction: await code(client.acquire('k', { ttl: 1.5 })),
        ttlOver: await code(client.acquire('k', { ttl: client.limits.maxDurationMs + 1 })),
        timeoutNegative: await code(client.acquire('k', { timeout: -1 })),
        timeoutNaN: await code(client.acquire('k', { timeout: NaN })),
        timeoutOver: await code(client.acquire('k', { timeout: client.limits.maxDurationMs + 1 })),
        max0: await code(client.acquire('k', { max: 0 })),
        emptyKey: await code(client.acquire('')),
        numberKey: await code(client.acquire(42)),
        loneSurrogate: await code(client.acquire('ab\uD800')),
        longUtf8: await code(client.acquire('é'.repeat(9))), // 9 characters, 18 bytes of UTF-8
        tooManyKeys: await code(client.acquireMany(['a', 'b', 'c', 'd', 'e'])),
        noKeys: await code(client.acquireMany([])),
        infoLong: await code(client.info('x'.repeat(17))),
        releaseBadId: await code(client.release('held', '')),
        extend0: await code(held.extend(0)),
      };
      const fine = await client.acquire('é'.repeat(8), { ttl: 60000 }); // 16 bytes: at the limit
      const emoji = await client.acquire('🔒🔑', { ttl: 60000 }); // surrogate pairs are fine
      out.after = { held: held.held, state: client.state, fine: fine.held, emoji: (await client.info('🔒🔑')).holders.includes(emoji.id) };
      await fine.release();
      await emoji.release();
      await held.release();
      return out;
    });
    assert.deepEqual(r.limits, { maxMessageSize: 65536, maxKeyLength: 16, maxKeys: 4, maxIdLength: 1024, maxDurationMs: r.limits.maxDurationMs });
    assert.ok(r.limits.maxDurationMs > 2 ** 31);
    const expect = {
      ttl0: /^bad_request: .*ttl 0: must be a positive whole number/,
      ttlNegative: /^bad_request: .*ttl -5/,
      ttlFraction: /^bad_request: .*ttl 1\.5/,
      ttlOver: /^bad_request: .*over the broker's limit/,
      timeoutNegative: /^bad_request: .*timeout -1: must be a whole number of ms >= 0/,
      timeoutNaN: /^bad_request: .*timeout NaN/,
      timeoutOver: /^bad_request: .*over the broker's limit.*Infinity: wait forever/,
      max0: /^bad_request: .*max 0: must be a whole number >= 1/,
      emptyKey: /^bad_request: .*must not be empty/,
      numberKey: /^bad_request: .*must be a string/,
      loneSurrogate: /^bad_request: .*lone surrogate/,
      longUtf8: /^bad_request: .*18 bytes of UTF-8, over the broker's limit of 16/,
      tooManyKeys: /^bad_request: .*5 keys, over the broker's limit of 4/,
      noKeys: /^bad_request: .*no keys/,
      infoLong: /^bad_request: .*17 bytes/,
      releaseBadId: /^bad_request: .*lock id/,
      extend0: /^bad_request: .*ttl 0/,
    };
    for (const [name, re] of Object.entries(expect)) assert.match(r[name], re, name);
    assert.deepEqual(r.after, { held: true, state: 'connected', fine: true, emoji: true });
    assert.deepEqual(page.problems, []);
  } finally {
    await page.close();
    await limited.stop();
  }
});

test('client.release(key, id) rejects with not_held when that id held nothing', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const key = uniqueKey('not-held');
  const r = await page.evaluate(async (key) => {
    const code = (p) => p.then(() => 'ok', (e) => e.code);
    const other = await window.lmx.connect(client.url);
    const lock = await other.acquire(key, { ttl: 60000 });
    const out = {
      badId: await code(client.release(key, 'no-such-lock-id')),
      stillHeld: (await client.info(key)).holders.includes(lock.id),
      byId: await code(client.release(key, lock.id)),
      again: await code(client.release(key, lock.id)),
      lostReason: lock.lostReason,
    };
    other.close();
    return out;
  }, key);
  assert.deepEqual(r, { badId: 'not_held', stillHeld: true, byId: 'ok', again: 'not_held', lostReason: 'forced' });
  await page.close();
});

test('a lease the client counted out is given back, also when a late renewal extended it at the broker', { timeout: 60_000 }, async () => {
  const page = await lmxPage(context, broker);
  const key = uniqueKey('late-renewal');
  // Replies to renewals reach this page 6 s late: the broker extends the lease, the client never
  // hears so in time and counts it out.
  await page.evaluate(async (url) => {
    class SlowRenewals extends WebSocket {
      set onmessage(fn) {
        super.onmessage = fn && ((m) => {
          if (typeof m.data === 'string' && m.data.includes('"type":"extend"')) setTimeout(() => fn(m), 6000);
          else fn(m);
        });
      }
      get onmessage() { return super.onmessage; }
    }
    window.client = await window.lmx.connect(url, { WebSocket: SlowRenewals });
    window.observer = await window.lmx.connect(url);
  }, broker.ws);
  const r = await page.evaluate(async (key) => {
    const lock = await client.acquire(key, { ttl: 3000, autoRenew: true });
    const lostAt = await new Promise((resolve) => lock.addEventListener('lost', () => resolve(performance.now())));
    // The broker's lease runs (renewed) until about 4000 ms after the grant; the release frees it now.
    let freeAfter = null;
    while (performance.now() - lostAt < 2000) {
      const info = await observer.info(key);
      if (!info.locked) { freeAfter = performance.now() - lostAt; break; }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    return { reason: lock.lostReason, code: lock.signal.reason.code, freeAfter };
  }, key);
  assert.equal(r.reason, 'ttl');
  assert.equal(r.code, 'lease_expired');
  assert.ok(r.freeAfter !== null && r.freeAfter < 600, `the key was free ${r.freeAfter} ms after the client counted the lease out`);
  await page.close();
});
