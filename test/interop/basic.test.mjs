// live-mutex@0.2.25 clients against a real lmx broker: grant/release, queueing and handoff,
// semaphores, ttl expiry, force release, lock-info and ls — over TCP and a Unix socket.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startBroker, ClientSet, transports, lockInfo, ls, track, withTimeout, waitFor, sleep, uniqueKey,
  brokerWarnings, livemutexVersion, assertCleanStop, clientsFor } from './lib/harness.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let broker;
// A short broker default ttl: live-mutex always sends its own ttl (7050 ms by default, null for
// "never"), so no test here may end up with the broker's default.
before(async () => { broker = await startBroker(['--ttl', '500']); });
after(async () => { if (broker) await broker.stop(); });

it('uses the pinned live-mutex version', () => {
  assert.equal(livemutexVersion, '0.2.25');
});

for (const transport of transports) {
  describe(`live-mutex over ${transport}`, () => {
    const fresh = (t) => clientsFor(t, broker, transport);

    it('acquires and releases by id', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const key = uniqueKey(`${transport}-by-id`);

      const lock = await withTimeout(a.c.acquire(key), 3000, 'acquire');
      assert.equal(lock.acquired, true);
      assert.equal(lock.key, key);
      assert.match(lock.id, UUID_RE);
      assert.equal(lock.lockUuid, lock.id);

      let info = await lockInfo(a, key);
      assert.equal(info.lockInfo, true);
      assert.equal(info.key, key);
      assert.equal(info.isLocked, true);
      assert.deepEqual(info.lockholderUUIDs, [lock.id]);
      assert.equal(info.lockRequestCount, 0);

      const rel = await withTimeout(a.c.release(key, { _uuid: lock.id }), 3000, 'release');
      assert.equal(rel.unlocked, true);
      assert.equal(rel.key, key);

      info = await lockInfo(a, key);
      assert.equal(info.isLocked, false);
      assert.deepEqual(info.lockholderUUIDs, []);

      // Callback API with the bound unlock function.
      const via = await withTimeout(new Promise((resolve, reject) => {
        a.c.lock(key, { ttl: 5000 }, (err, unlock) => {
          if (err) return reject(err);
          assert.equal(unlock.acquired, true);
          unlock((e, v) => (e ? reject(e) : resolve(v)));
        });
      }), 3000, 'lock + bound unlock');
      assert.equal(via.unlocked, true);

      // Release by id given as a plain string.
      const l2 = await withTimeout(a.c.acquire(key), 3000, 'acquire 2');
      assert.equal((await withTimeout(a.c.release(key, l2.id), 3000, 'release 2')).unlocked, true);
      info = await lockInfo(a, key);
      assert.equal(info.isLocked, false);

      assert.deepEqual(cs.errors(), []);
      assert.deepEqual(brokerWarnings(a), [], 'a plain acquire/release cycle must not produce warnings');
    });

    it('answers a second release of the same lock without an error', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const key = uniqueKey(`${transport}-double`);
      const lock = await withTimeout(a.c.acquire(key), 3000, 'acquire');
      await withTimeout(a.c.release(key, lock.id), 3000, 'release');
      // live-mutex's own broker answers this with an `error` field (which throws in clients with
      // no 'error' listener); PROTOCOL.md: unlocked:true plus a warning.
      const again = await withTimeout(a.c.release(key, lock.id), 3000, 'second release');
      assert.equal(again.unlocked, true);
      assert.deepEqual(cs.errors(), []);
    });

    it('hands a queued lock to the waiter only after the holder releases', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const key = uniqueKey(`${transport}-handoff`);
      const events = [];

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      events.push('A-granted');
      const pb = track(b.c.acquire(key).then((l) => { events.push('B-granted'); return l; }));

      await waitFor(async () => (await lockInfo(a, key)).lockRequestCount === 1, 2000, 'B queued');
      await sleep(150);
      assert.equal(pb.settled, false, 'B must not get the lock while A holds it');
      const info = await lockInfo(a, key);
      assert.deepEqual(info.lockholderUUIDs, [la.id]);
      assert.equal(info.lockRequestCount, 1);

      events.push('A-release-sent');
      const tRelease = performance.now();
      const rel = await withTimeout(a.c.release(key, la.id), 3000, 'A release');
      assert.equal(rel.unlocked, true);
      const lb = await withTimeout(pb.promise, 2000, 'B grant after A released');
      assert.ok(pb.at >= tRelease, 'B granted before A released');
      assert.ok(pb.at - tRelease < 1000, `grant pushed to B promptly (took ${Math.round(pb.at - tRelease)} ms)`);
      assert.deepEqual(events, ['A-granted', 'A-release-sent', 'B-granted']);

      const after = await lockInfo(a, key);
      assert.deepEqual(after.lockholderUUIDs, [lb.id]);
      assert.equal(after.lockRequestCount, 0);
      assert.equal((await withTimeout(b.c.release(key, lb.id), 3000, 'B release')).unlocked, true);
      assert.equal((await lockInfo(a, key)).isLocked, false);

      assert.deepEqual(cs.errors(), []);
      assert.deepEqual(brokerWarnings(a), []);
      assert.deepEqual(brokerWarnings(b), []);
    });

    it('grants waiters in arrival order (FIFO), one at a time', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const key = uniqueKey(`${transport}-fifo`);
      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');

      const order = [];
      let holding = 0;
      const waiters = [];
      for (const name of ['B', 'C', 'D']) {
        const h = await cs.make(name);
        const n = waiters.length + 1;
        waiters.push(h.c.acquire(key, { lockRequestTimeout: 5000 }).then(async (l) => {
          holding++;
          order.push(name);
          assert.equal(holding, 1, `${name} granted while another holds the lock`);
          await sleep(30);
          holding--;
          const r = await h.c.release(key, l.id);
          assert.equal(r.unlocked, true);
        }));
        // Make the arrival order unambiguous before the next one asks.
        await waitFor(async () => (await lockInfo(a, key)).lockRequestCount === n, 2000, `${name} queued`);
      }
      await withTimeout(a.c.release(key, la.id), 3000, 'A release');
      await withTimeout(Promise.all(waiters), 5000, 'B, C, D each got and released the lock');
      assert.deepEqual(order, ['B', 'C', 'D']);
      assert.equal((await lockInfo(a, key)).isLocked, false);
      assert.deepEqual(cs.errors(), []);
    });

    it('lets max:3 holders in at once and queues the 4th', async (t) => {
      const cs = fresh(t);
      const hs = [];
      for (const name of ['S1', 'S2', 'S3', 'S4']) hs.push(await cs.make(name));
      const key = uniqueKey(`${transport}-sem`);

      const locks = await withTimeout(Promise.all(hs.slice(0, 3).map((h) => h.c.acquire(key, { max: 3, ttl: null }))),
        3000, 'three semaphore holders');
      const ids = locks.map((l) => l.id);
      let info = await lockInfo(hs[0], key);
      assert.equal(info.isLocked, true);
      assert.deepEqual([...info.lockholderUUIDs].sort(), [...ids].sort());
      assert.equal(info.lockRequestCount, 0);
      assert.equal(info.max, 3);

      const p4 = track(hs[3].c.acquire(key, { max: 3, ttl: null }));
      await waitFor(async () => (await lockInfo(hs[0], key)).lockRequestCount === 1, 2000, '4th queued');
      await sleep(150);
      assert.equal(p4.settled, false, '4th holder admitted beyond max:3');

      const tRelease = performance.now();
      await withTimeout(hs[1].c.release(key, locks[1].id), 3000, 'S2 release');
      const l4 = await withTimeout(p4.promise, 2000, '4th grant after a slot freed');
      assert.ok(p4.at >= tRelease);
      info = await lockInfo(hs[0], key);
      assert.deepEqual([...info.lockholderUUIDs].sort(), [ids[0], ids[2], l4.id].sort());
      assert.equal(info.lockRequestCount, 0);

      await withTimeout(Promise.all([
        hs[0].c.release(key, locks[0].id), hs[2].c.release(key, locks[2].id), hs[3].c.release(key, l4.id)]),
      3000, 'release all');
      assert.equal((await lockInfo(hs[0], key)).isLocked, false);
      assert.deepEqual(cs.errors(), []);
    });

    it('expires a hold after its ttl and grants the waiter; the late unlock does not hurt the new holder', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const key = uniqueKey(`${transport}-ttl`);

      const t0 = performance.now();
      const la = await withTimeout(a.c.acquire(key, { ttl: 300 }), 3000, 'A acquire');
      const lb = await withTimeout(b.c.acquire(key, { ttl: null, lockRequestTimeout: 5000 }), 4000, 'B gets the lock when A expires');
      const waited = performance.now() - t0;
      assert.ok(waited >= 250, `B got the lock ${Math.round(waited)} ms after A took it with ttl 300`);
      assert.ok(waited < 2500, `expiry took ${Math.round(waited)} ms`);

      let info = await lockInfo(b, key);
      assert.deepEqual(info.lockholderUUIDs, [lb.id]);

      // A still thinks it holds the lock and releases it: that must not free B's hold.
      const late = await withTimeout(a.c.release(key, la.id), 3000, 'late release by A');
      assert.equal(late.unlocked, true);
      info = await lockInfo(b, key);
      assert.deepEqual(info.lockholderUUIDs, [lb.id], 'the expired holder released the new holder\'s lock');

      await withTimeout(b.c.release(key, lb.id), 3000, 'B release');
      // A hold with nobody waiting also ends at its ttl.
      const key2 = uniqueKey(`${transport}-ttl-alone`);
      await withTimeout(a.c.acquire(key2, { ttl: 200 }), 3000, 'A acquire key2');
      assert.equal((await lockInfo(a, key2)).isLocked, true);
      await waitFor(async () => !(await lockInfo(a, key2)).isLocked, 2000, 'key2 expired');

      assert.deepEqual(cs.errors(), []);
    });

    it('keeps a ttl:null hold past the broker default ttl', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const key = uniqueKey(`${transport}-nottl`);
      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'acquire');
      await sleep(900); // the broker runs with --ttl 500
      const info = await lockInfo(a, key);
      assert.deepEqual(info.lockholderUUIDs, [la.id], 'ttl:null (no expiry) was treated as a lease');
      assert.equal((await withTimeout(a.c.release(key, la.id), 3000, 'release')).unlocked, true);
      assert.deepEqual(cs.errors(), []);
      assert.deepEqual(brokerWarnings(a), []);
    });

    it('force release frees a lock held by another client and hands it on', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const c = await cs.make('C');
      const key = uniqueKey(`${transport}-force`);

      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
      const pc = track(c.c.acquire(key, { ttl: null, lockRequestTimeout: 5000 }));
      await waitFor(async () => (await lockInfo(b, key)).lockRequestCount === 1, 2000, 'C queued');

      const forced = await withTimeout(b.c.release(key, { force: true }), 3000, 'B force release');
      assert.equal(forced.unlocked, true);
      const lc = await withTimeout(pc.promise, 2000, 'C granted after the force release');
      let info = await lockInfo(b, key);
      assert.deepEqual(info.lockholderUUIDs, [lc.id]);

      // A's release of its lost hold answers unlocked:true and leaves C alone.
      const late = await withTimeout(a.c.release(key, la.id), 3000, 'late release by A');
      assert.equal(late.unlocked, true);
      info = await lockInfo(b, key);
      assert.deepEqual(info.lockholderUUIDs, [lc.id]);

      // Callback-style force unlock of a key nobody waits for.
      await new Promise((resolve, reject) => c.c.unlock(key, { force: true }, (e, v) => (e ? reject(e) : resolve(v))));
      assert.equal((await lockInfo(b, key)).isLocked, false);

      assert.deepEqual(cs.errors(), []);
    });

    it('echoes unusual keys exactly', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const keys = [
        `ключ-🔒-ü-${transport}`, `quote"back\\slash/${transport}`, `new\nline\ttab-${transport}`,
        `${'x'.repeat(900)}-${transport}`, ` spaced key ${transport} `, `{"json":1}-${transport}`];
      for (const key of keys) {
        const l = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, `acquire ${JSON.stringify(key)}`);
        const info = await lockInfo(b, key);
        assert.equal(info.key, key);
        assert.deepEqual(info.lockholderUUIDs, [l.id]);
        assert.ok((await ls(b)).ls_result.includes(key), `ls lacks ${JSON.stringify(key)}`);
        assert.equal((await withTimeout(a.c.release(key, l.id), 3000, 'release')).unlocked, true);
        assert.equal((await lockInfo(b, key)).isLocked, false);
      }
      assert.deepEqual(cs.errors(), []);
      assert.deepEqual(brokerWarnings(a), []);
    });

    it('ls lists a held key and lock-info describes it', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const b = await cs.make('B');
      const key = uniqueKey(`${transport}-ls`);
      const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'acquire');

      const r = await ls(b);
      assert.ok(Array.isArray(r.ls_result), `ls_result is not an array: ${JSON.stringify(r)}`);
      assert.ok(r.ls_result.includes(key), `ls_result ${JSON.stringify(r.ls_result)} lacks ${key}`);

      const info = await lockInfo(b, key);
      assert.equal(info.lockInfo, true);
      assert.equal(info.type, 'lock-info-response');
      assert.equal(info.isLocked, true);
      assert.deepEqual(info.lockholderUUIDs, [la.id]);

      await withTimeout(a.c.release(key, la.id), 3000, 'release');
      const r2 = await ls(b);
      assert.ok(!r2.ls_result.includes(key), 'released key still listed');
      const unknown = await lockInfo(b, uniqueKey('never-used'));
      assert.equal(unknown.lockInfo, true);
      assert.equal(unknown.isLocked, false);
      assert.deepEqual(cs.errors(), []);
    });
  });
}

it('broker exits 0 on SIGTERM', async () => {
  const b = broker;
  broker = null;
  await assertCleanStop(b);
});
