// live-mutex@0.2.25 lock-request retries against a real lmx broker, over TCP and a Unix socket.
// A live-mutex waiter re-sends its `lock` message every lockRequestTimeout ms with the SAME uuid
// (retryCount 1, 2, ...), and after maxRetries sends `lock-client-timeout` and gives up.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startBroker, ClientSet, transports, lockInfo, track, withTimeout, waitFor, sleep, uniqueKey, systemStats,
  crossTimerWithGrant, brokerWarnings, assertCleanStop, clientsFor } from './lib/harness.mjs';

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { if (broker) await broker.stop(); });

const retries = (h, key) => h.warnings.filter((w) => w.includes(`retrying lock request for key '${key}'`)).length;
// The client's reaction to a grant it did not ask for (it then sends lock-received-rejected).
const rejectedGrants = (h) => h.warnings.filter((w) => /Rejecting lock acquisition/.test(w));

for (const transport of transports) {
  describe(`live-mutex over ${transport}`, () => {
    const fresh = (t) => clientsFor(t, broker, transport);

    it('a retrying waiter keeps one queue entry and gets exactly one grant', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const obs = await cs.make('observer');
      const key = uniqueKey(`${transport}-retry`);

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      const before = await systemStats(broker, transport);
      const pb = track(b.c.acquire(key, { ttl: null, lockRequestTimeout: 150, maxRetries: 20 }));
      await waitFor(() => retries(b, key) >= 3, 3000, 'B to re-send its lock request 3 times');

      const info = await lockInfo(obs, key);
      assert.deepEqual(info.lockholderUUIDs, [la.id]);
      assert.equal(info.lockRequestCount, 1, 'a re-sent lock request (same uuid) made a second queue entry');
      const during = await systemStats(broker, transport);
      assert.equal(during.waiters - before.waiters, 1, `waiters went ${before.waiters} -> ${during.waiters}`);
      assert.equal(pb.settled, false);

      await withTimeout(a.c.release(key, la.id), 3000, 'A release');
      const lb = await withTimeout(pb.promise, 2000, 'B granted');
      assert.deepEqual((await lockInfo(obs, key)).lockholderUUIDs, [lb.id]);
      assert.equal((await lockInfo(obs, key)).lockRequestCount, 0);

      await withTimeout(b.c.release(key, lb.id), 3000, 'B release');
      // No leftover copy of B's request may be granted now.
      await sleep(200);
      const end = await lockInfo(obs, key);
      assert.equal(end.isLocked, false, `key still held by ${JSON.stringify(end.lockholderUUIDs)} after B released`);
      assert.equal(end.lockRequestCount, 0);
      assert.deepEqual(rejectedGrants(b), [], 'B was sent a grant it did not ask for');
      assert.deepEqual(cs.errors(), []);
    });

    it('a waiter that gives up (lock-client-timeout) leaves the queue', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const obs = await cs.make('observer');
      const key = uniqueKey(`${transport}-giveup`);

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      const err = await withTimeout(b.c.acquire(key, { lockRequestTimeout: 100, maxRetries: 2 }).then(
        () => null, (e) => e), 3000, 'B gives up');
      assert.ok(err, 'B acquired a lock that A holds');
      assert.equal(err.code, 'request_timeout');

      await waitFor(async () => (await lockInfo(obs, key)).lockRequestCount === 0, 2000, 'B\'s request to leave the queue');
      await withTimeout(a.c.release(key, la.id), 3000, 'A release');
      await sleep(200);
      const info = await lockInfo(obs, key);
      assert.equal(info.isLocked, false, `abandoned request was granted: holders ${JSON.stringify(info.lockholderUUIDs)}`);
      assert.deepEqual(rejectedGrants(b), []);
      assert.deepEqual(cs.errors(), []);
    });

    // The retry timer and the grant cross: B's client re-sends `lock` (retryCount 1) just before
    // it reads the grant that is already on its way. The broker then sees a retry for a uuid that
    // already holds the key. If it answers with another `acquired:true`, the live-mutex client
    // (which has finished that request) answers `lock-received-rejected`, and the broker frees a
    // lock B believes it holds.
    it('a retry that crosses the grant does not cost the waiter its lock', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const obs = await cs.make('observer');
      const key = uniqueKey(`${transport}-cross`);

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      const lrt = 1000;
      const due = performance.now() + lrt;
      const pb = track(b.c.acquire(key, { ttl: null, lockRequestTimeout: lrt, maxRetries: 5 }));
      await waitFor(async () => (await lockInfo(obs, key)).lockRequestCount === 1, 2000, 'B queued');
      // Release A, then block this process until B's retry timer is due: B re-sends `lock` and
      // only then reads the grant that is already waiting in its socket.
      const early = await crossTimerWithGrant(() => a.c.unlock(key, la.id), due);
      assert.ok(early, 'test setup too slow: B\'s retry timer fired before A released');
      const lb = await withTimeout(pb.promise, 3000, 'B granted');
      assert.ok(retries(b, key) >= 1, 'the scenario needs B to have re-sent its request');
      await sleep(300);
      const info = await lockInfo(obs, key);
      assert.deepEqual(info.lockholderUUIDs, [lb.id],
        `B holds the lock as far as its client knows, but the broker says holders=${JSON.stringify(info.lockholderUUIDs)}`);
      assert.deepEqual(rejectedGrants(b), [], 'the broker sent B a second grant for a request that already holds the lock');
      await withTimeout(b.c.release(key, lb.id), 3000, 'B release');
      assert.deepEqual(cs.errors(), []);
    });

    // B gives up (lock-client-timeout) in the same instant the grant reaches it; its client then
    // refuses the late grant (lock-received-rejected). The key must pass on to C, and B's
    // messages must not touch C's hold.
    it('a waiter that gives up as it is granted passes the lock on to the next waiter', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const c = await cs.make('C');
      const obs = await cs.make('observer');
      const key = uniqueKey(`${transport}-late`);

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      const lrt = 1000;
      const due = performance.now() + lrt;
      const pb = track(b.c.acquire(key, { ttl: null, lockRequestTimeout: lrt, maxRetries: 1 }));
      await waitFor(async () => (await lockInfo(obs, key)).lockRequestCount === 1, 2000, 'B queued');
      const pc = track(c.c.acquire(key, { ttl: null, lockRequestTimeout: 5000 }));
      await waitFor(async () => (await lockInfo(obs, key)).lockRequestCount === 2, 2000, 'C queued');
      const early = await crossTimerWithGrant(() => a.c.unlock(key, la.id), due);
      assert.ok(early, 'test setup too slow: B gave up before A released');
      await withTimeout(pb.promise.then(() => assert.fail('B got the lock after giving up'), (e) => {
        assert.equal(e.code, 'request_timeout');
      }), 3000, 'B gives up');
      const lc = await withTimeout(pc.promise, 3000, 'C granted after B gave up');
      // B's client refuses the grant that reaches it after it gave up (C's grant, which the
      // broker sends only after B's lock-client-timeout, may be read before it).
      await waitFor(() => b.warnings.some((w) => /Rejecting lock acquisition/.test(w)), 2000,
        `B to see the late grant (warnings: ${JSON.stringify(b.warnings)})`);
      await sleep(300);
      const info = await lockInfo(obs, key);
      assert.deepEqual(info.lockholderUUIDs, [lc.id]);
      assert.equal(info.lockRequestCount, 0);
      assert.equal((await withTimeout(c.c.release(key, lc.id), 3000, 'C release')).unlocked, true);
      assert.deepEqual(brokerWarnings(c), []);
      assert.deepEqual(cs.errors(), []);
    });
  });
}

it('broker exits 0 on SIGTERM', async () => {
  const b = broker;
  broker = null;
  await assertCleanStop(b);
});
