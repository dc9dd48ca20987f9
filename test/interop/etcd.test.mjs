// live-mutex@0.2.25 clients of two lmx brokers that keep their lock state in one real etcd
// (`lmx broker --store etcd://...`): the npm client works unchanged, and clients of different
// brokers contend for the same locks.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import {
  startBroker, ClientSet, lockInfo, track, withTimeout, waitFor, sleep, uniqueKey } from './lib/harness.mjs';

const etcdBinary = process.env.LMX_ETCD || '/usr/bin/etcd';

// A loopback port below the kernel's ephemeral range that nothing listens on now.
async function freePort() {
  for (;;) {
    const port = 10000 + Math.floor(Math.random() * 20000);
    const free = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

// One etcd member on loopback ports, its data on tmpfs; stopped by PID.
async function startEtcd() {
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(base, 'lmx-interop-etcd-'));
  const client = await freePort();
  const peer = await freePort();
  const url = (p) => `http://127.0.0.1:${p}`;
  const proc = spawn(etcdBinary, [
    '--name', 'm', '--data-dir', `${dir}/m`, '--listen-client-urls', url(client),
    '--advertise-client-urls', url(client), '--listen-peer-urls', url(peer),
    '--initial-advertise-peer-urls', url(peer), '--initial-cluster', `m=${url(peer)}`,
    '--logger', 'zap', '--log-level', 'warn', '--experimental-enable-lease-checkpoint'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  await waitFor(async () => {
    try {
      const r = await fetch(`${url(client)}/health`);
      return r.ok && (await r.json()).health === 'true';
    } catch { return false; }
  }, 15000, `etcd to answer (log: ${log})`);
  return {
    endpoint: `127.0.0.1:${client}`,
    async stop() {
      proc.kill('SIGKILL');
      await new Promise((resolve) => (proc.exitCode !== null ? resolve() : proc.once('exit', resolve)));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

let etcd;
let brokerA;
let brokerB;
before(async () => {
  etcd = await startEtcd();
  const args = ['--store', `etcd://${etcd.endpoint}`, '--session-ttl', '2'];
  brokerA = await startBroker(args);
  brokerB = await startBroker(args);
});
after(async () => {
  if (brokerA) await brokerA.stop();
  if (brokerB) await brokerB.stop();
  if (etcd) await etcd.stop();
});

// A connected live-mutex client of `broker`, once that broker grants (its store is in sync).
async function clientOf(t, broker, name) {
  const cs = new ClientSet(broker, 'tcp');
  t.after(() => cs.closeAll());
  const h = await cs.make(name);
  await waitFor(async () => {
    try {
      const l = await withTimeout(h.c.acquire(uniqueKey('ready'), { ttl: 1000, maxRetries: 0 }), 1000, 'probe');
      await withTimeout(h.c.release(l.key, l.id), 1000, 'probe release');
      return true;
    } catch { return false; }
  }, 15000, `${name}'s broker to grant`);
  return { h, cs };
}

it('a lock held through one broker is waited for through the other, then handed over', async (t) => {
  const { h: a, cs: csa } = await clientOf(t, brokerA, 'A');
  const { h: b, cs: csb } = await clientOf(t, brokerB, 'B');
  const key = uniqueKey('handover');

  const la = await withTimeout(a.c.acquire(key, { ttl: null }), 3000, 'A acquire');
  const pb = track(b.c.acquire(key, { ttl: 5000 }));
  await waitFor(async () => (await lockInfo(b, key)).lockRequestCount === 1, 3000, 'B queued');
  await sleep(200);
  assert.equal(pb.settled, false, 'B must not get the lock while A holds it');
  assert.deepEqual((await lockInfo(b, key)).lockholderUUIDs, [la.id]);

  const rel = await withTimeout(a.c.release(key, la.id), 3000, 'A release');
  assert.equal(rel.unlocked, true);
  const lb = await withTimeout(pb.promise, 5000, 'B grant after A released');
  assert.equal(lb.acquired, true);
  assert.deepEqual((await lockInfo(a, key)).lockholderUUIDs, [lb.id]);
  await withTimeout(b.c.release(key, lb.id), 3000, 'B release');
  assert.deepEqual([...csa.errors(), ...csb.errors()], []);
});

it('a semaphore of max 2 admits two holders across brokers and queues the third', async (t) => {
  const { h: a } = await clientOf(t, brokerA, 'A');
  const { h: b } = await clientOf(t, brokerB, 'B');
  const key = uniqueKey('sem');
  const one = await withTimeout(a.c.acquire(key, { max: 2, ttl: null }), 3000, 'first');
  const two = await withTimeout(b.c.acquire(key, { max: 2, ttl: null }), 3000, 'second');
  const third = track(a.c.acquire(key, { max: 2, ttl: 5000 }));
  await waitFor(async () => (await lockInfo(b, key)).lockRequestCount === 1, 3000, 'third queued');
  await sleep(150);
  assert.equal(third.settled, false);
  await withTimeout(b.c.release(key, two.id), 3000, 'release second');
  const got = await withTimeout(third.promise, 5000, 'third granted');
  assert.equal(got.acquired, true);
  await withTimeout(a.c.release(key, one.id), 3000, 'release first');
  await withTimeout(a.c.release(key, got.id), 3000, 'release third');
});

it('a ttl ends a hold through its broker and the other broker\'s waiter gets the key', async (t) => {
  const { h: a } = await clientOf(t, brokerA, 'A');
  const { h: b } = await clientOf(t, brokerB, 'B');
  const key = uniqueKey('ttl');
  await withTimeout(a.c.acquire(key, { ttl: 300 }), 3000, 'short hold');
  const started = performance.now();
  const lb = await withTimeout(b.c.acquire(key, { ttl: 5000 }), 5000, 'B after the ttl');
  assert.ok(performance.now() - started >= 200, 'B was granted before A\'s ttl ran out');
  await withTimeout(b.c.release(key, lb.id), 3000, 'B release');
});
