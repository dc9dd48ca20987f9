// Safety check of a live-mutex-protocol broker as seen through the unmodified npm live-mutex
// client (0.2.25): N client processes do random lock / hold / unlock cycles on a few keys (max 1,
// 2 or 3 by key), some are killed with SIGKILL and replaced, every process writes a history of
// its API calls (JSON lines, CLOCK_MONOTONIC ns), and the merged history is checked by
// `lmx check --analyze HISTORY --peer live-mutex --json`. Exits with lmx check's status.
//
//   node driver.mjs [--lmx PATH] [--clients 4] [--ops 20000 | --duration 60s] [--no-kills] ...
//
// Without --lmx the broker is live-mutex 0.2.25's own (this folder's node_modules), run in a
// child process; with --lmx PATH it is `PATH broker --listen tcp://127.0.0.1:PORT`.
// `node driver.mjs --help` lists every option.

import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fork, spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const require = createRequire(import.meta.url);
const ME = fileURLToPath(import.meta.url);
const nowNs = () => process.hrtime.bigint(); // CLOCK_MONOTONIC on Linux: one clock for all processes

const HELP = `usage: node driver.mjs [options]
  --lmx PATH            test an lmx broker (PATH broker --listen tcp://127.0.0.1:PORT) instead of
                        live-mutex 0.2.25's own broker
  --lmx-check PATH      the lmx binary that analyzes the history
                        (default: the test build's, ../../build/test/apps/lmx/lmx)
  --clients N           client processes, one npm live-mutex Client each (default 4)
  --ops N               stop after about N lock+unlock requests in all (default 20000)
  --duration T          stop after T instead (e.g. 90s, 5m, 1500ms)
  --keys K              keys contended for; key i has max (i % 3) + 1 (default 6)
  --depth D             lock/hold/unlock loops in flight per client (default 4)
  --hold-max MS         each hold lasts a random 0..MS ms (default 10)
  --ttl MS              lock ttl sent with every lock (default 30000; no lease runs out in a run)
  --lock-timeout MS     the client's lockRequestTimeout (default 3000, the npm client's default)
  --max-retries N       the client's maxRetries for a lock (default 3, the npm client's default)
  --no-kills            do not kill clients
  --kill-every MS       mean ms between client kills (SIGKILL), exponential (default 1500)
  --seed N              random seed (default: from the clock; printed)
  --dir DIR             work directory, kept (default: a new one under the system temp dir)
  --port N              broker port (default: a random free one in 20000..49151)
  --external-port N     use a broker already listening on 127.0.0.1:N (neither started nor stopped)
  -q, --quiet           no progress on stderr`;

function parseDuration(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(s));
  if (!m) throw new Error(`bad duration ${s}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] || 's'];
}

function parseArgs(argv) {
  const a = {
    lmx: null, lmxCheck: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../build/test/apps/lmx/lmx'), clients: 4, ops: 20000, durationMs: 0, keys: 6,
    depth: 4, holdMax: 10, ttl: 30000, lockTimeout: 3000, maxRetries: 3, kills: true, killEvery: 1500,
    seed: Date.now() % 1e9, dir: null, port: 0, externalPort: 0, quiet: false, worker: null, lmBroker: null,
  };
  const num = (v, name) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name} needs a number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const o = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${o} needs a value`);
      return argv[++i];
    };
    switch (o) {
      case '--lmx': a.lmx = v(); break;
      case '--lmx-check': a.lmxCheck = v(); break;
      case '--clients': a.clients = num(v(), o); break;
      case '--ops': a.ops = num(v(), o); a.durationMs = 0; break;
      case '--duration': a.durationMs = parseDuration(v()); break;
      case '--keys': a.keys = num(v(), o); break;
      case '--depth': a.depth = num(v(), o); break;
      case '--hold-max': a.holdMax = num(v(), o); break;
      case '--ttl': a.ttl = num(v(), o); break;
      case '--lock-timeout': a.lockTimeout = num(v(), o); break;
      case '--max-retries': a.maxRetries = num(v(), o); break;
      case '--no-kills': a.kills = false; break;
      case '--kill-every': a.killEvery = num(v(), o); break;
      case '--seed': a.seed = num(v(), o); break;
      case '--dir': a.dir = v(); break;
      case '--port': a.port = num(v(), o); break;
      case '--external-port': a.externalPort = num(v(), o); break;
      case '-q': case '--quiet': a.quiet = true; break;
      case '--worker': a.worker = JSON.parse(v()); break; // internal: a client process
      case '--lm-broker': a.lmBroker = num(v(), o); break; // internal: live-mutex's broker process
      case '-h': case '--help': process.stdout.write(HELP + '\n'); process.exit(0); break;
      default: throw new Error(`unknown argument ${o} (see --help)`);
    }
  }
  if (a.clients < 1 || a.keys < 1 || a.depth < 1) throw new Error('--clients, --keys and --depth must be >= 1');
  return a;
}

// A small seeded PRNG (mulberry32), so a run's choices can be reproduced (timing cannot).
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One history file per process; one writeSync per record, so that a process killed with SIGKILL
// leaves only whole lines.
function recorder(file) {
  const fd = fs.openSync(file, 'a');
  return (src, s, ev, extra = '') => {
    fs.writeSync(fd, `{"t":${nowNs()},"src":${JSON.stringify(src)},"s":${s},"ev":"${ev}"${extra}}\n`);
  };
}

const maxOfKey = (i) => (i % 3) + 1;

async function runWorker(a) {
  const w = a.worker; // {id, port, dir, seed, keyPrefix}
  const { Client } = require('live-mutex/dist/client'); // not the package root: that loads the broker too
  const rec = recorder(path.join(w.dir, `client-${w.id}.jsonl`));
  const rand = rng(w.seed);
  const S = 1; // the one connection of this client
  let closing = false; // our own close: the socket events after it are expected
  let lost = false;
  let stopping = false;
  let ops = 0;
  let reported = 0;
  const anomalies = [];
  const send = (m) => { ops++; rec(w.id, S, 'send', `,"m":${JSON.stringify(m)}`); };
  const recv = (m) => rec(w.id, S, 'recv', `,"m":${JSON.stringify(m)}`);
  const report = () => {
    if (ops !== reported && process.connected) { process.send({ ops: ops - reported }); reported = ops; }
  };

  // An exception that escapes the npm client (e.g. "Could not reconnect." thrown from a timer)
  // ends this process with its connection: record that before exiting.
  const die = (what, e) => {
    try {
      if (!closing) rec(w.id, S, 'close', ',"how":"abort"');
      process.stderr.write(`client ${w.id}: ${what}: ${e && e.stack ? e.stack : String(e)}\n`);
    } finally {
      process.exit(3);
    }
  };
  process.on('uncaughtException', (e) => die('uncaught exception', e));
  process.on('unhandledRejection', (e) => die('unhandled rejection', e));

  // The driver's stop may come at any time, even before this client is connected.
  const stopped = new Promise((res) => process.on('message', (m) => { if (m && m.stop) { stopping = true; res(); } }));

  const c = new Client({ host: '127.0.0.1', port: w.port, lockRequestTimeout: a.lockTimeout, connectTimeout: 5000 });
  c.emitter.on('error', () => {});
  c.emitter.on('warning', (...args) => {
    const text = args.map(String).join(' ');
    // The socket went away without our close(): the connection is lost. The npm client would
    // reconnect on its own; this process stops instead (the driver starts a replacement).
    if (!closing && !lost && /lmx client stream "(close|end|error)" event occurred/.test(text)) {
      lost = true;
      stopping = true;
      rec(w.id, S, 'close', ',"how":"lost"');
      anomalies.push(`connection lost: ${text}`);
    }
  });
  await c.ensure();
  rec(w.id, S, 'open');
  process.send({ ready: true });

  let seq = 0;
  const errInfo = (err) => ({
    error: String(err && err.message !== undefined ? err.message : typeof err === 'string' ? err : JSON.stringify(err)),
    code: String((err && err.code) || 'unknown'),
  });

  // Unlock a hold. `lockId` is our id of the lock call, `lmId` the npm client's id of the lock.
  const unlock = (key, lockId, lmId) => new Promise((resolve) => {
    const id = `${w.id}.u${++seq}`;
    send({ type: 'unlock', uuid: id, key, _uuid: lockId });
    let answered = false;
    c.unlock(key, { _uuid: lmId }, (err, v) => {
      if (err) recv({ type: 'unlock', uuid: id, key, unlocked: false, ...errInfo(err) });
      else recv({ type: 'unlock', uuid: id, key, unlocked: Boolean(v && v.unlocked) });
      if (answered) anomalies.push(`unlock ${id}: callback called again`);
      answered = true;
      resolve();
    });
  });

  // One lock call: resolves once granted with {id: ours, lmId: the npm client's}, or null once failed.
  const extra = []; // unlocks of grants the npm client reported after the final answer
  const lock = (key, max) => new Promise((resolve) => {
    const id = `${w.id}.l${++seq}`;
    send({ type: 'lock', uuid: id, key, ttl: a.ttl, max });
    let answered = false;
    c.lock(key, { max, ttl: a.ttl, lockRequestTimeout: a.lockTimeout, maxRetries: a.maxRetries }, (err, v) => {
      const granted = !err && v && v.acquired === true;
      // lmId (the npm client's own id of the lock, which the broker sees) is not read by the
      // analysis; it ties the history to a broker's log.
      if (granted) recv({ type: 'lock', uuid: id, key, acquired: true, lmId: v.id });
      else recv({ type: 'lock', uuid: id, key, acquired: false, ...errInfo(err || 'lock callback without a lock') });
      if (answered) {
        // A second answer to one call: recorded as it is; a grant is given back at once.
        anomalies.push(`lock ${id}: callback called again (${granted ? 'grant' : 'failure'})`);
        if (granted) extra.push(unlock(key, id, v.id));
        return;
      }
      answered = true;
      resolve(granted ? { id, lmId: v.id } : null);
    });
  });

  const loop = async () => {
    while (!stopping) {
      const k = Math.floor(rand() * a.keys);
      const key = `${w.keyPrefix}${k}`;
      const held = await lock(key, maxOfKey(k));
      if (held !== null && !lost) {
        const hold = rand() * a.holdMax;
        if (hold >= 1) await sleep(hold);
        else await new Promise((r) => setImmediate(r));
        await unlock(key, held.id, held.lmId);
      }
      if (ops - reported >= 50) report();
    }
  };
  const ticker = setInterval(report, 200);
  const loops = Array.from({ length: a.depth }, () => loop());
  await Promise.race([stopped, Promise.all(loops)]);
  // Drain: no new calls; wait for every outstanding callback (each loop unlocks what it holds).
  // The npm client answers every lock within lockRequestTimeout x maxRetries and every unlock
  // within 8 s, so a loop still open after the deadline means an answer never came.
  const deadline = a.lockTimeout * (a.maxRetries + 1) + 8000 + 10000;
  const drained = await Promise.race([
    Promise.all([...loops, ...extra]).then(() => true),
    sleep(deadline).then(() => false),
  ]);
  await Promise.all(extra);
  if (!drained) anomalies.push(`drain: some callbacks were not called within ${deadline} ms`);
  clearInterval(ticker);
  report();
  if (!lost) {
    closing = true;
    rec(w.id, S, 'close', ',"how":"clean"');
    try { c.close(); } catch { /* closed */ }
    for (const k of Object.keys(c.timers || {})) clearTimeout(c.timers[k]);
  }
  process.send({ done: true, anomalies }, () => process.exit(0));
}

async function runLmBroker(port) {
  const { Broker } = require('live-mutex/dist/broker');
  const b = new Broker({ host: '127.0.0.1', port });
  b.emitter.on('warning', () => {});
  b.emitter.on('error', (e) => process.stderr.write(`live-mutex broker error: ${e}\n`));
  try {
    await b.ensure();
  } catch (e) {
    process.stderr.write(`live-mutex broker did not start: ${e}\n`);
    process.exit(1);
  }
  process.stdout.write('ready\n');
  // SIGTERM: live-mutex's own handler closes the connections and exits.
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.createConnection(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function startBroker(a, dir, log) {
  if (a.externalPort) {
    if (!await canConnect(a.externalPort)) throw new Error(`nothing listens on 127.0.0.1:${a.externalPort}`);
    log(`broker: already running on tcp://127.0.0.1:${a.externalPort}`);
    return { proc: null, port: a.externalPort };
  }
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = a.port || 20000 + Math.floor(Math.random() * 29000);
    if (!a.port && await canConnect(port)) continue; // taken
    const out = fs.openSync(path.join(dir, 'broker.log'), 'a');
    const proc = a.lmx
      ? spawn(a.lmx, ['broker', '--listen', `tcp://127.0.0.1:${port}`], { stdio: ['ignore', out, out] })
      : spawn(process.execPath, [ME, '--lm-broker', String(port)], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    let exited = false;
    proc.once('exit', () => { exited = true; });
    proc.once('error', (e) => { exited = true; fs.appendFileSync(path.join(dir, 'broker.log'), `cannot start the broker: ${e.message}\n`); });
    const deadline = Date.now() + 10000;
    while (!exited && Date.now() < deadline) {
      if (await canConnect(port)) {
        log(`broker: ${a.lmx ? `${a.lmx} broker` : 'live-mutex 0.2.25'} on tcp://127.0.0.1:${port} (pid ${proc.pid})`);
        return { proc, port };
      }
      await sleep(50);
    }
    if (!exited) proc.kill('SIGKILL');
    if (a.port) break;
  }
  throw new Error(`the broker did not start; see ${path.join(dir, 'broker.log')}`);
}

async function stopBroker(b) {
  if (!b.proc || b.proc.exitCode !== null || b.proc.signalCode !== null) return;
  const gone = new Promise((res) => b.proc.once('exit', res));
  b.proc.kill('SIGTERM');
  const t = setTimeout(() => b.proc.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
}

function mergeHistories(dir, out) {
  const recs = [];
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const m = /^\{"t":(\d+),/.exec(line);
      if (m) recs.push([BigInt(m[1]), recs.length, line]);
    }
  }
  recs.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] - y[1]));
  fs.writeFileSync(out, recs.map((r) => r[2]).join('\n') + '\n');
  return recs.length;
}

async function runDriver(a) {
  const log = a.quiet ? () => {} : (s) => process.stderr.write(`[check-live-mutex] ${s}\n`);
  const dir = a.dir ? path.resolve(a.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'check-live-mutex-'));
  fs.mkdirSync(path.join(dir, 'records'), { recursive: true });
  const recDir = path.join(dir, 'records');
  if (fs.readdirSync(recDir).length) throw new Error(`${recDir} is not empty`);
  if (!fs.existsSync(a.lmxCheck)) throw new Error(`no lmx binary at ${a.lmxCheck} (--lmx-check)`);
  log(`seed ${a.seed}, work dir ${dir}`);
  const rand = rng(a.seed);
  const control = recorder(path.join(recDir, 'check.jsonl'));
  const broker = await startBroker(a, dir, log);
  const keyPrefix = `clm-${process.pid}-${a.seed}-k`;

  const slots = [];
  const stats = { started: 0, killed: 0, died: 0, anomalies: [] };
  let total = 0;
  let stopping = false;

  const startClient = (slot, gen) => {
    const id = `n${slot}.${gen}`;
    const w = { id, port: broker.port, dir: recDir, seed: (a.seed * 7919 + slot * 104729 + gen) >>> 0, keyPrefix };
    const args = ['--worker', JSON.stringify(w), '--ops', '0', '--keys', String(a.keys), '--depth', String(a.depth),
      '--hold-max', String(a.holdMax), '--ttl', String(a.ttl), '--lock-timeout', String(a.lockTimeout),
      '--max-retries', String(a.maxRetries)];
    const child = fork(ME, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const k = { id, slot, gen, child, ready: false, killed: false, done: false };
    stats.started++;
    slots[slot] = k;
    child.on('message', (m) => {
      if (m.ops) total += m.ops;
      if (m.ready) k.ready = true;
      if (m.done) {
        k.done = true;
        for (const x of m.anomalies) stats.anomalies.push(`${id}: ${x}`);
      }
    });
    k.exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
    k.exited.then(({ code, signal }) => {
      if (!k.killed && !k.done) {
        stats.died++;
        stats.anomalies.push(`${id}: exited on its own (code ${code}, signal ${signal})`);
      }
      if (!stopping && slots[slot] === k) startClient(slot, gen + 1); // replace it
    });
    return k;
  };
  for (let i = 0; i < a.clients; i++) startClient(i, 1);

  const t0 = Date.now();
  let lastLog = 0;
  const killer = async () => {
    while (!stopping) {
      await sleep(-Math.log(1 - rand()) * a.killEvery);
      if (stopping) break;
      const live = slots.filter((k) => k.ready && !k.killed && !k.done);
      if (!live.length) continue;
      const v = live[Math.floor(rand() * live.length)];
      v.killed = true;
      control('check', 0, 'worker-kill', `,"worker":${JSON.stringify(v.id)}`); // before the kill
      v.child.kill('SIGKILL');
      stats.killed++;
    }
  };
  const killing = a.kills ? killer() : Promise.resolve();
  const done = () => (a.durationMs ? Date.now() - t0 >= a.durationMs : total >= a.ops);
  while (!done()) {
    await sleep(50);
    if (Date.now() - lastLog >= 2000) {
      lastLog = Date.now();
      log(`${total} requests, ${stats.killed} clients killed, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  stopping = true;
  log(`stopping at ${total} requests`);
  void killing; // it kills no more once `stopping` is set
  // Stop every client cleanly: they drain, unlock, record a clean close and exit.
  const waitAll = () => Promise.all(slots.map((k) => k.exited));
  for (const k of slots) if (k.child.connected) k.child.send({ stop: true });
  const drainMs = a.lockTimeout * (a.maxRetries + 1) + 8000 + 30000;
  const finished = await Promise.race([waitAll().then(() => true), sleep(drainMs).then(() => false)]);
  if (!finished) {
    for (const k of slots) {
      if (k.child.exitCode === null && k.child.signalCode === null) {
        stats.anomalies.push(`${k.id}: did not stop within ${drainMs} ms; killed`);
        k.killed = true;
        control('check', 0, 'worker-kill', `,"worker":${JSON.stringify(k.id)}`);
        k.child.kill('SIGKILL');
      }
    }
    await waitAll();
  }
  const wallS = (Date.now() - t0) / 1000;
  await stopBroker(broker);

  const history = path.join(dir, 'history.jsonl');
  const n = mergeHistories(recDir, history);
  log(`${n} records merged into ${history}; ${stats.started} client processes, ${stats.killed} killed, ${wallS.toFixed(1)} s`);
  for (const x of stats.anomalies) log(`driver note: ${x}`);
  const r = spawnSync(a.lmxCheck, ['check', '--analyze', history, '--peer', 'live-mutex', '--json'], { encoding: 'utf8' });
  if (r.error) throw r.error;
  process.stderr.write(r.stderr);
  let summary = null;
  try { summary = JSON.parse(r.stdout); } catch { /* printed raw below */ }
  if (!summary) {
    process.stdout.write(r.stdout);
  } else {
    const line = {
      broker: a.externalPort ? `external (port ${a.externalPort})` : a.lmx ? `lmx (${a.lmx})` : 'live-mutex 0.2.25', seed: a.seed, dir, history, wallSeconds: wallS,
      clientProcesses: stats.started, clientsKilled: stats.killed, clientsDied: stats.died, driverNotes: stats.anomalies,
      check: summary,
    };
    const v = summary.violationsByKind || {};
    process.stdout.write(
      `broker ${line.broker}: operations ${summary.operations}, grants ${summary.grants}, connections ${summary.connections} ` +
      `(cut ${summary.connectionsCut}), client kills ${summary.clientKills}, rejections ${JSON.stringify(summary.rejectionsByCode)}\n` +
      (summary.violationCount ? `${summary.violationCount} VIOLATIONS: ${JSON.stringify(v)}\n` : 'no violations\n') +
      summary.violations.slice(0, 10).map((x) => `  [${x.kind}] t=${x.t} ${x.detail}\n`).join('') +
      JSON.stringify(line) + '\n');
  }
  process.exit(r.status ?? 1);
}

const args = parseArgs(process.argv.slice(2));
if (args.worker) await runWorker(args);
else if (args.lmBroker) await runLmBroker(args.lmBroker);
else await runDriver(args).catch((e) => { process.stderr.write(`check-live-mutex: ${e && e.stack ? e.stack : e}\n`); process.exit(2); });
