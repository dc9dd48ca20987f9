// Disconnect semantics with live-mutex@0.2.25 clients against a real lmx broker, over TCP and a
// Unix socket. live-mutex's own broker force-unlocks EVERY key when ANY client disconnects;
// lmx must release only the closing connection's waiters and (non-keep) holds.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import {
  startBroker, ClientSet, transports, lockInfo, track, withTimeout, waitFor, sleep, uniqueKey, brokerWarnings, disconnect, assertCleanStop, clientsFor } from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

let broker;
before(async () => { broker = await startBroker(); });
after(async () => { if (broker) await broker.stop(); });

// A separate node process that takes a lock with the live-mutex client, reports its id on stdout
// and then waits to be killed.
async function holderProcess(connectOptions, key) {
  const code = `
    const { Client } = require('live-mutex/dist/client');
    const c = new Client(${JSON.stringify(connectOptions)});
    c.emitter.on('error', (e) => { console.error('client error', e); process.exit(3); });
    c.emitter.on('warning', () => {});
    // Stays alive until killed, or until the test process goes away (stdin closes).
    process.stdin.on('end', () => process.exit(0)).resume();
    c.ensure()
      .then(() => c.acquire(${JSON.stringify(key)}, { ttl: null }))
      .then((l) => { process.stdout.write(JSON.stringify({ id: l.id }) + '\\n'); })
      .catch((e) => { console.error('acquire failed', e); process.exit(2); });`;
  const child = spawn(process.execPath, ['-e', code], { cwd: here, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => child.once('exit', (c, s) => resolve({ code: c, signal: s })));
  try {
    await waitFor(() => out.includes('\n') || child.exitCode !== null, 10_000, 'holder process to take its lock');
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  if (!out.includes('\n')) throw new Error(`holder process failed (exit ${child.exitCode}): ${err}`);
  return { child, id: JSON.parse(out.split('\n')[0]).id, exited };
}

for (const transport of transports) {
  describe(`live-mutex over ${transport}`, () => {
    const fresh = (t) => clientsFor(t, broker, transport);

    it('a client disconnecting leaves other clients\' holds and waiters alone', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A'); // holds k1
      const b = await cs.make('B'); // holds k2, then disconnects
      const d = await cs.make('D'); // waits for k1
      const e = await cs.make('E'); // waits for k1 too, then disconnects
      const obs = await cs.make('observer');
      const k1 = uniqueKey(`${transport}-keep`);
      const k2 = uniqueKey(`${transport}-gone`);

      const la = await withTimeout(a.c.acquire(k1, { ttl: null }), 3000, 'A acquire k1');
      await withTimeout(b.c.acquire(k2, { ttl: null }), 3000, 'B acquire k2');
      const pd = track(d.c.acquire(k1, { ttl: null, lockRequestTimeout: 8000 }));
      await waitFor(async () => (await lockInfo(obs, k1)).lockRequestCount === 1, 2000, 'D queued');
      track(e.c.acquire(k1, { ttl: null, lockRequestTimeout: 8000 }));
      await waitFor(async () => (await lockInfo(obs, k1)).lockRequestCount === 2, 2000, 'E queued');

      disconnect(b);
      disconnect(e);

      // B's hold and E's queued request go away with their connections ...
      await waitFor(async () => !(await lockInfo(obs, k2)).isLocked, 2000, 'k2 released after B disconnected');
      await waitFor(async () => (await lockInfo(obs, k1)).lockRequestCount === 1, 2000, 'E\'s request removed');
      await sleep(200);
      // ... and nothing else changes: A still holds k1, D still waits.
      const info = await lockInfo(obs, k1);
      assert.equal(info.isLocked, true);
      assert.deepEqual(info.lockholderUUIDs, [la.id], 'A lost k1 when another client disconnected');
      assert.equal(info.lockRequestCount, 1);
      assert.equal(pd.settled, false, 'D was granted k1 while A holds it');

      // A can still release its hold by id, without any warning (not "already released").
      const warningsBefore = brokerWarnings(a).length;
      const rel = await withTimeout(a.c.release(k1, { _uuid: la.id }), 3000, 'A release k1');
      assert.equal(rel.unlocked, true);
      const ld = await withTimeout(pd.promise, 2000, 'D granted k1 after A released');
      assert.deepEqual(brokerWarnings(a).slice(warningsBefore), [], 'A\'s release of a live hold produced a warning');
      assert.deepEqual((await lockInfo(obs, k1)).lockholderUUIDs, [ld.id]);
      await withTimeout(d.c.release(k1, ld.id), 3000, 'D release');

      assert.deepEqual(cs.errors(), []);
    });

    it('a killed client process leaves other clients\' holds alone and its own lock goes to the next waiter', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const w = await cs.make('W');
      const obs = await cs.make('observer');
      const mine = uniqueKey(`${transport}-survivor`);
      const theirs = uniqueKey(`${transport}-victim`);

      const la = await withTimeout(a.c.acquire(mine, { ttl: null }), 3000, 'A acquire');
      const holder = await holderProcess(broker.connectOptions(transport), theirs);
      t.after(() => holder.child.kill('SIGKILL'));
      assert.deepEqual((await lockInfo(obs, theirs)).lockholderUUIDs, [holder.id]);
      const pw = track(w.c.acquire(theirs, { ttl: null, lockRequestTimeout: 8000 }));
      await waitFor(async () => (await lockInfo(obs, theirs)).lockRequestCount === 1, 2000, 'W queued');

      holder.child.kill('SIGKILL');
      await holder.exited;
      const lw = await withTimeout(pw.promise, 3000, 'W granted the dead client\'s key');
      assert.deepEqual((await lockInfo(obs, theirs)).lockholderUUIDs, [lw.id]);

      const info = await lockInfo(obs, mine);
      assert.deepEqual(info.lockholderUUIDs, [la.id], 'A lost its lock when another client died');
      const warningsBefore = brokerWarnings(a).length;
      assert.equal((await withTimeout(a.c.release(mine, la.id), 3000, 'A release')).unlocked, true);
      assert.deepEqual(brokerWarnings(a).slice(warningsBefore), []);
      await withTimeout(w.c.release(theirs, lw.id), 3000, 'W release');
      assert.deepEqual(cs.errors(), []);
    });

    it('keepLocksAfterDeath holds survive the disconnect and can be released by id', async (t) => {
      const cs = fresh(t);
      const a = await cs.make('A');
      const obs = await cs.make('observer');
      const kept = uniqueKey(`${transport}-kept`);
      const dropped = uniqueKey(`${transport}-dropped`);

      const lk = await withTimeout(a.c.acquire(kept, { ttl: null, keepLocksAfterDeath: true }), 3000, 'acquire kept');
      await withTimeout(a.c.acquire(dropped, { ttl: null }), 3000, 'acquire dropped');
      disconnect(a);

      await waitFor(async () => !(await lockInfo(obs, dropped)).isLocked, 2000, 'ordinary hold released on disconnect');
      await sleep(100);
      assert.deepEqual((await lockInfo(obs, kept)).lockholderUUIDs, [lk.id], 'keepLocksAfterDeath hold was released on disconnect');

      const rel = await withTimeout(obs.c.release(kept, { _uuid: lk.id }), 3000, 'release kept by id from another client');
      assert.equal(rel.unlocked, true);
      assert.equal((await lockInfo(obs, kept)).isLocked, false);
      assert.deepEqual(cs.errors(), []);
    });
  });
}

it('broker exits 0 on SIGTERM', async () => {
  const b = broker;
  broker = null;
  await assertCleanStop(b);
});
