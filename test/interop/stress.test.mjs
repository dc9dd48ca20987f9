// Sustained load from live-mutex@0.2.25 clients against a real lmx broker, over TCP and a Unix
// socket: 10,000 acquire/release cycles with 20 in flight, checking mutual exclusion on every
// grant, no client errors, no stray grants, and a clean broker at the end.
//
// LMX_INTEROP_CYCLES overrides the cycle count (for local experiments).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startBroker, ClientSet, transports, lockInfo, withTimeout, systemStats, assertCleanStop } from './lib/harness.mjs';

const CYCLES = Number(process.env.LMX_INTEROP_CYCLES || 10_000);
const IN_FLIGHT = 20;
const CLIENTS = 4;
const RUN_LIMIT_MS = 40_000;

let broker;
before(async () => { broker = await startBroker(['--log-level', 'warn']); });
after(async () => { if (broker) await broker.stop(); });

async function run(t, transport, keys) {
  const cs = new ClientSet(broker, transport);
  t.after(() => cs.closeAll());
  const hs = [];
  for (let i = 0; i < CLIENTS; i++) hs.push(await cs.make(`C${i}`));
  const holders = new Map(keys.map((k) => [k, 0]));
  const violations = [];
  const failures = [];
  const statsBefore = await systemStats(broker, transport);
  let started = 0;
  let done = 0;

  const worker = async (w) => {
    const h = hs[w % CLIENTS];
    while (started < CYCLES && failures.length === 0) {
      started++;
      const key = keys[Math.floor(Math.random() * keys.length)];
      try {
        const lock = await h.c.acquire(key);
        const n = holders.get(key) + 1;
        holders.set(key, n);
        if (n > 1) violations.push(`${key}: ${n} holders at once (worker ${w})`);
        // Hold across an event-loop turn, so a second grant of the key would be seen above.
        await new Promise((resolve) => setImmediate(resolve));
        holders.set(key, holders.get(key) - 1);
        const r = await h.c.release(key, lock.id);
        if (r.unlocked !== true) failures.push(`release of ${key} answered ${JSON.stringify(r)}`);
        done++;
      } catch (e) {
        failures.push(`${h.name} ${key}: ${e && (e.code || '')} ${e && e.message ? e.message : JSON.stringify(e)}`);
      }
    }
  };

  const t0 = performance.now();
  await withTimeout(Promise.all(Array.from({ length: IN_FLIGHT }, (_, w) => worker(w))), RUN_LIMIT_MS,
    `${CYCLES} cycles (${done} done)`);
  const secs = (performance.now() - t0) / 1000;
  const rate = Math.round(done / secs);
  t.diagnostic(`${transport}: ${done} cycles on ${keys.length} key(s), ${IN_FLIGHT} in flight, ${CLIENTS} connections: ` +
    `${secs.toFixed(2)} s, ${rate} cycles/s`);

  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} failed cycles`);
  assert.deepEqual(violations.slice(0, 10), [], 'mutual exclusion violated');
  assert.equal(done, CYCLES);
  assert.deepEqual(cs.errors().slice(0, 10), []);
  const strays = hs.flatMap((h) => h.warnings.filter((w) => /Rejecting lock acquisition|no fn with that uuid|retrying lock request/.test(w)));
  assert.deepEqual(strays.slice(0, 10), [], 'retries or grants nobody waited for');

  for (const key of keys) {
    const info = await lockInfo(hs[0], key);
    assert.equal(info.isLocked, false, `${key} still held by ${JSON.stringify(info.lockholderUUIDs)}`);
    assert.equal(info.lockRequestCount, 0, `${key} still has waiters`);
  }
  const statsAfter = await systemStats(broker, transport);
  assert.equal(statsAfter.holders, 0);
  assert.equal(statsAfter.waiters, 0);
  if (typeof statsAfter.grants === 'number') {
    assert.ok(statsAfter.grants - statsBefore.grants >= CYCLES,
      `broker counted ${statsAfter.grants - statsBefore.grants} grants for ${CYCLES} cycles`);
  }
}

for (const transport of transports) {
  describe(`live-mutex over ${transport}`, () => {
    it(`${CYCLES} cycles, ${IN_FLIGHT} in flight, 8 keys`, { timeout: RUN_LIMIT_MS + 20_000 }, async (t) => {
      await run(t, transport, Array.from({ length: 8 }, (_, i) => `${transport}-stress-${i}`));
    });
    it(`${CYCLES} cycles, ${IN_FLIGHT} in flight, one key`, { timeout: RUN_LIMIT_MS + 20_000 }, async (t) => {
      await run(t, transport, [`${transport}-stress-one`]);
    });
  });
}

it('broker exits 0 on SIGTERM', async () => {
  const b = broker;
  broker = null;
  await assertCleanStop(b);
});
