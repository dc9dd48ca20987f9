// The lock workloads of lmx-bench, driven by the npm live-mutex client, against any broker that
// speaks its protocol (lmx's or live-mutex's own). Prints one JSON object in lmx-bench's shape.
//
//   node driver.mjs --connect '{"udsPath":"/tmp/x.sock"}' --workload w1 [--cycles N] [--in-flight N] [--procs N]
//
// A cycle is acquire then an immediate, confirmed release. w1: one key, 20 in flight on one
// connection; w2: a key per worker; w3: 4 processes x 5 in flight (cycles split evenly); w4:
// semaphore max 4 on one key; lat: one in flight.

import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
// The client module alone: the package root also loads the broker, which installs process-wide
// handlers.
const { Client } = require('live-mutex/dist/client');

process.setMaxListeners(0);

export const WORKLOADS = {
  w1: { inFlight: 20, procs: 1, keyPerWorker: false },
  w2: { inFlight: 20, procs: 1, keyPerWorker: true },
  w3: { inFlight: 5, procs: 4, keyPerWorker: false },
  w4: { inFlight: 20, procs: 1, keyPerWorker: false, max: 4 },
  lat: { inFlight: 1, procs: 1, keyPerWorker: false },
};

function parseArgs(argv) {
  const a = { cycles: 10000, workload: 'w1', inFlight: 0, procs: 0, connect: null, child: null };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--connect': a.connect = JSON.parse(v); i++; break;
      case '--workload': case '-w': a.workload = v; i++; break;
      case '--cycles': case '-n': a.cycles = Number(v); i++; break;
      case '--in-flight': a.inFlight = Number(v); i++; break;
      case '--procs': a.procs = Number(v); i++; break;
      case '--child': a.child = JSON.parse(v); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!a.connect) throw new Error('--connect is required');
  if (!WORKLOADS[a.workload]) throw new Error(`unknown workload ${a.workload}`);
  return a;
}

const nowNs = () => process.hrtime.bigint(); // CLOCK_MONOTONIC: comparable across processes

// One process's share: `w.inFlight` workers on one connection doing `cycles` between them.
async function runShare(a, w, cycles, workerBase, ready) {
  const c = new Client({ ...a.connect, lockRequestTimeout: 60000, ttl: 10000 });
  c.emitter.on('warning', () => {});
  c.emitter.on('error', () => {});
  await c.ensure();
  await ready();
  const cpu0 = process.cpuUsage();
  const r = { acquireNs: [], cycleNs: [], perWorker: new Array(w.inFlight).fill(0), errors: 0, error: '' };
  const prefix = `bench-${a.workload}-${process.pid}-`;
  let started = 0;
  const worker = async (i) => {
    const key = prefix + (w.keyPerWorker ? String(workerBase + i) : 'k');
    while (started < cycles && r.errors === 0) {
      started++;
      const t0 = nowNs();
      try {
        // A fresh options object each time: the client writes the request's uuid into it.
        const lock = await c.acquire(key, w.max ? { max: w.max } : {});
        const t1 = nowNs();
        await c.release(key, lock.id);
        const t2 = nowNs();
        r.acquireNs.push(Number(t1 - t0));
        r.cycleNs.push(Number(t2 - t0));
        r.perWorker[i]++;
      } catch (e) {
        if (r.errors++ === 0) r.error = String(e && e.message ? e.message : JSON.stringify(e));
      }
    }
  };
  await Promise.all(Array.from({ length: w.inFlight }, (_, i) => worker(i)));
  r.endNs = String(nowNs());
  const cpu = process.cpuUsage(cpu0);
  r.cpuMs = (cpu.user + cpu.system) / 1000; // CPU this process used for its share
  try { c.close(); } catch { /* closed */ }
  for (const k of Object.keys(c.timers || {})) clearTimeout(c.timers[k]);
  return r;
}

function summarize(ns) {
  if (ns.length === 0) return { p50: 0, p99: 0, max: 0 };
  const s = Float64Array.from(ns).sort();
  const rank = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] / 1000;
  const r1 = (x) => Math.round(x * 10) / 10;
  return { p50: r1(rank(0.5)), p99: r1(rank(0.99)), max: r1(s[s.length - 1] / 1000) };
}

async function runForked(a, w) {
  const me = fileURLToPath(import.meta.url);
  const kids = [];
  for (let p = 0; p < w.procs; p++) {
    const share = Math.floor(a.cycles / w.procs) + (p < a.cycles % w.procs ? 1 : 0);
    const args = ['--connect', JSON.stringify(a.connect), '--workload', a.workload, '--cycles', String(share),
      '--in-flight', String(w.inFlight), '--child', JSON.stringify({ base: p * w.inFlight })];
    const child = fork(me, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const k = { child };
    k.ready = new Promise((res, rej) => {
      child.on('message', (m) => {
        if (m.ready) res();
        if (m.result) k.resolve(m.result);
      });
      child.once('exit', (code) => { rej(new Error(`driver child exited ${code}`)); if (k.reject) k.reject(new Error(`driver child exited ${code}`)); });
    });
    k.result = new Promise((res, rej) => { k.resolve = res; k.reject = rej; });
    k.result.catch(() => {});
    kids.push(k);
  }
  await Promise.all(kids.map((k) => k.ready));
  const t0 = nowNs();
  for (const k of kids) k.child.send({ go: true });
  const parts = await Promise.all(kids.map((k) => k.result));
  return { t0, parts };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const w = { ...WORKLOADS[a.workload] };
  if (a.inFlight) w.inFlight = a.inFlight;
  if (a.procs) w.procs = a.procs;

  if (a.child) {
    // A W3 client process: connect, report ready, wait for the common start, run, report.
    const go = new Promise((res) => process.on('message', (m) => { if (m.go) res(); }));
    const r = await runShare(a, w, a.cycles, a.child.base, async () => { process.send({ ready: true }); await go; });
    process.send({ result: r }, () => process.exit(0));
    return;
  }

  let t0;
  let parts;
  if (w.procs === 1) {
    parts = [await runShare(a, w, a.cycles, 0, async () => { t0 = nowNs(); })];
  } else {
    ({ t0, parts } = await runForked(a, w));
  }
  const acquire = parts.flatMap((p) => p.acquireNs);
  const cycleNs = parts.flatMap((p) => p.cycleNs);
  const perWorker = parts.flatMap((p) => p.perWorker);
  const end = parts.reduce((m, p) => (BigInt(p.endNs) > m ? BigInt(p.endNs) : m), 0n);
  const wallMs = Number(end - t0) / 1e6;
  const errors = parts.reduce((n, p) => n + p.errors, 0);
  const out = {
    client: 'npm-live-mutex',
    workload: a.workload,
    connect: a.connect,
    cycles: cycleNs.length,
    in_flight: w.inFlight,
    procs: w.procs,
    wall_ms: Math.round(wallMs * 1000) / 1000,
    cycles_per_ms: wallMs > 0 ? Math.round((cycleNs.length / wallMs) * 1000) / 1000 : 0,
    acquire_us: summarize(acquire),
    cycle_us: summarize(cycleNs),
    fairness: { workers: perWorker.length, min: Math.min(...perWorker), max: Math.max(...perWorker) },
    cpu_ms: Math.round(parts.reduce((n, p) => n + p.cpuMs, 0) * 1000) / 1000,
    errors,
    error: parts.map((p) => p.error).find(Boolean) || '',
  };
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(errors ? 1 : 0));
}

main().catch((e) => {
  process.stderr.write(`driver: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
