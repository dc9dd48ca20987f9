// Side-by-side lock benchmark: lmx and live-mutex 0.2.25, and the transport floor.
//
//   node bench/compare/compare.mjs [--build build/release] [--rounds 3] [--cycles 10000]
//                                  [--out docs] [--no-scale] [--smoke]
//
// Systems, each run against a fresh broker process:
//   lmx-cpp  lmx broker + lmx C++ client (lmx-bench)                    tcp, unix, ws
//   lmx-bp   the same with the broker's --busy-poll 50                   tcp, unix
//   lmx-npm  lmx broker + the npm live-mutex client (driver.mjs)         tcp, unix
//   lm-npm   live-mutex's own broker + its npm client (driver.mjs)       tcp, unix
//   floor    lmx-floor echo: ping-pong (one in flight) and pipelined (20)  tcp, unix, ws
// (live-mutex speaks only TCP and Unix sockets, so neither npm row has a ws column.)
// Runs are interleaved: every round runs every (workload, transport) on every system, the order
// of systems rotating, so machine noise hits all alike; figures are medians over the rounds.
// Then, once per transport, the scale figures of the lmx broker (RSS with 1,000,000 held locks,
// 100,000 waiters, 10,000 idle connections).
//
// Writes <out>/benchmarks.md (the part between the compare markers; the rest of the file is
// kept) and <out>/benchmarks.svg, and prints each target with its measured ratio. --smoke: tiny
// counts, one round, output to a temporary directory unless --out is given, and exit status 1
// unless every expected row came back with cycles done and no errors.

import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const tty = process.stderr.isTTY;

const args = {
  build: path.join(root, 'build/release'), rounds: 3, cycles: 10000, out: null, scale: true, smoke: false,
  lmx: null, bench: null, floor: null, workloads: ['w1', 'w2', 'w3', 'w4', 'lat'],
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const v = () => process.argv[++i];
  if (a === '--build') args.build = path.resolve(v());
  else if (a === '--rounds') args.rounds = Number(v());
  else if (a === '--cycles') args.cycles = Number(v());
  else if (a === '--out') args.out = path.resolve(v());
  else if (a === '--no-scale') args.scale = false;
  else if (a === '--smoke') args.smoke = true;
  else if (a === '--lmx') args.lmx = path.resolve(v());
  else if (a === '--lmx-bench') args.bench = path.resolve(v());
  else if (a === '--lmx-floor') args.floor = path.resolve(v());
  else if (a === '--workloads') args.workloads = v().split(',');
  else { console.error(`compare: unknown argument ${a}`); process.exit(2); }
}
if (args.smoke) {
  args.rounds = 1;
  args.cycles = Math.min(args.cycles, 200);
}
const bins = {
  lmx: args.lmx || path.join(args.build, 'apps/lmx/lmx'),
  bench: args.bench || path.join(args.build, 'bench/lmx-bench'),
  floor: args.floor || path.join(args.build, 'bench/lmx-floor'),
};
for (const [k, f] of Object.entries(bins)) {
  if (!fs.existsSync(f)) { console.error(`compare: ${k} binary ${f} not found (build it, or pass --build)`); process.exit(2); }
}
const outDir = args.out || (args.smoke ? fs.mkdtempSync(path.join(os.tmpdir(), 'lmx-compare-out-')) : path.join(root, 'docs'));
const scaleCounts = args.smoke ? { locks: 2000, waiters: 500, connections: 50 } : { locks: 1_000_000, waiters: 100_000, connections: 10_000 };
const floorCount = args.smoke ? 200 : 20000;
const RUN_TIMEOUT_MS = args.smoke ? 60_000 : 300_000;

// `npm ci` into bench/compare/node_modules unless it was done for this package-lock.json already.
function ensureNodeModules() {
  const lock = fs.readFileSync(path.join(here, 'package-lock.json'));
  const want = createHash('sha256').update(lock).digest('hex');
  const stamp = path.join(here, 'node_modules/.lmx-npm-ci-stamp');
  const have = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : '';
  if (have === want && fs.existsSync(path.join(here, 'node_modules/live-mutex/package.json'))) return;
  console.error('compare: npm ci (live-mutex, pinned by package-lock.json)');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: here, stdio: ['ignore', 'inherit', 'inherit'] });
  fs.writeFileSync(stamp, want + '\n');
}

const live = new Set();
process.on('exit', () => { for (const p of live) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

function start(cmd, argv, opts = {}) {
  const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  live.add(p);
  p.out = '';
  p.err = '';
  p.stdout.setEncoding('utf8').on('data', (d) => { p.out += d; });
  p.stderr.setEncoding('utf8').on('data', (d) => { p.err += d; });
  p.done = new Promise((resolve) => p.once('close', (code, signal) => { live.delete(p); resolve({ code, signal }); }));
  return p;
}

async function stop(p) {
  if (!live.has(p)) return p.done;
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  const st = await p.done;
  clearTimeout(t);
  return st;
}

// Runs a command to its end and parses the last line of its stdout as JSON.
async function runJson(cmd, argv, what) {
  const p = start(cmd, argv);
  const t = setTimeout(() => p.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const st = await p.done;
  clearTimeout(t);
  const line = p.out.trim().split('\n').pop();
  try {
    const r = JSON.parse(line);
    if (st.code !== 0 && !r.errors) r.errors = 1, r.error = `exit ${st.code}: ${p.err.trim().slice(-300)}`;
    return r;
  } catch {
    return { errors: 1, error: `${what}: exit ${st.code} ${st.signal || ''}: ${p.err.trim().slice(-300)}` };
  }
}

async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// A free TCP port the live-mutex client accepts (it refuses ports above 49151).
async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
}

function tmpDir() { return fs.mkdtempSync(path.join(os.tmpdir(), 'lmx-compare-')); }

// CPU time (ns) the threads of process `pid` have run, from the scheduler's own accounting
// (/proc/PID/task/TID/schedstat), which is exact where /proc/PID/stat counts in clock ticks.
function cpuNs(pid) {
  let total = 0;
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try { total += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]); } catch { /* thread gone */ }
    }
  } catch { return NaN; }
  return total;
}

// Runs `run` and adds to its result the CPU the server process `pid` used meanwhile.
async function withServerCpu(pid, run) {
  const before = cpuNs(pid);
  const r = await run();
  r.server_cpu_ms = (cpuNs(pid) - before) / 1e6;
  return r;
}

// lmx broker on all three transports; the soft open-files limit raised to the hard one so that
// 10,000 connections fit. `extra`: more broker flags.
async function startLmx(extra = []) {
  const dir = tmpDir();
  const port = await freePort();
  const urlsFile = path.join(dir, 'urls');
  const p = start('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', bins.lmx, 'broker',
    '--listen', `tcp://127.0.0.1:${port}`, '--listen', `unix://${dir}/lmx.sock`, '--listen', 'ws://127.0.0.1:0/',
    '--urls-file', urlsFile, '--log-level', 'warn', ...extra]);
  await waitFor(() => fs.existsSync(urlsFile) || !live.has(p), 10_000, 'the lmx broker');
  if (!live.has(p)) throw new Error(`lmx broker did not start: ${p.err}`);
  const urls = fs.readFileSync(urlsFile, 'utf8').trim().split('\n');
  const url = (s) => urls.find((u) => u.startsWith(s + '://'));
  return {
    proc: p, dir, port, url: { tcp: url('tcp'), unix: url('unix'), ws: url('ws') },
    npm: { tcp: { host: '127.0.0.1', port }, unix: { udsPath: `${dir}/lmx.sock` } },
    async stop() { await stop(p); fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

async function startLiveMutex(transport) {
  const dir = tmpDir();
  const connect = transport === 'tcp' ? { port: await freePort() } : { udsPath: `${dir}/lm.sock` };
  const p = start(process.execPath, [path.join(here, 'lm-broker.mjs'), JSON.stringify(connect)]);
  await waitFor(() => p.out.includes('ready') || !live.has(p), 10_000, 'the live-mutex broker');
  if (!live.has(p)) throw new Error(`live-mutex broker did not start: ${p.err}`);
  return {
    connect: transport === 'tcp' ? { host: '127.0.0.1', ...connect } : connect,
    pid: p.pid,
    async stop() { await stop(p); fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

async function startFloor() {
  const dir = tmpDir();
  const urlsFile = path.join(dir, 'urls');
  const p = start(bins.floor, ['serve', '--listen', 'tcp://127.0.0.1:0', '--listen', `unix://${dir}/floor.sock`,
    '--listen', 'ws://127.0.0.1:0/', '--urls-file', urlsFile]);
  await waitFor(() => fs.existsSync(urlsFile) || !live.has(p), 10_000, 'the floor server');
  const urls = fs.readFileSync(urlsFile, 'utf8').trim().split('\n');
  const url = (s) => urls.find((u) => u.startsWith(s + '://'));
  return { url: { tcp: url('tcp'), unix: url('unix'), ws: url('ws') }, pid: p.pid, async stop() { await stop(p); fs.rmSync(dir, { recursive: true, force: true }); } };
}

const TRANSPORTS = ['tcp', 'unix', 'ws'];
const SYSTEMS = {
  'lmx-cpp': { label: 'lmx broker + lmx C++ client', transports: TRANSPORTS },
  'lmx-bp': { label: 'lmx broker --busy-poll 50 + lmx C++ client', transports: ['tcp', 'unix'] },
  'lmx-npm': { label: 'lmx broker + npm live-mutex client', transports: ['tcp', 'unix'] },
  'lm-npm': { label: 'live-mutex broker + npm live-mutex client', transports: ['tcp', 'unix'] },
};
const FLOORS = {
  pingpong: { label: 'floor: echo ping-pong, 1 in flight' },
  pipeline: { label: 'floor: pipelined echo, 20 in flight' },
};
const driver = path.join(here, 'driver.mjs');
// W2 runs fastest: at 10,000 cycles a run lasts about 60 ms, too short for a noisy VM's medians,
// so it runs five times the cycles (not in --smoke).
const W2_FACTOR = 5;
const cyclesFor = (workload) => (workload === 'w2' && !args.smoke ? W2_FACTOR * args.cycles : args.cycles);

async function runSystem(system, workload, transport) {
  if (system === 'lm-npm') {
    const b = await startLiveMutex(transport);
    try {
      return await withServerCpu(b.pid, () => runJson(process.execPath, [driver, '--connect', JSON.stringify(b.connect), '-w', workload, '-n', String(cyclesFor(workload))], system));
    } finally { await b.stop(); }
  }
  const b = await startLmx(system === 'lmx-bp' ? ['--busy-poll', '50'] : []);
  try {
    if (system === 'lmx-npm')
      return await withServerCpu(b.proc.pid, () => runJson(process.execPath, [driver, '--connect', JSON.stringify(b.npm[transport]), '-w', workload, '-n', String(cyclesFor(workload))], system));
    return await withServerCpu(b.proc.pid, () => runJson(bins.bench, ['run', '--url', b.url[transport], '-w', workload, '-n', String(cyclesFor(workload)), '--json'], system));
  } finally { await b.stop(); }
}

async function runFloor(mode, transport) {
  const f = await startFloor();
  try {
    return await withServerCpu(f.pid, () => runJson(bins.floor, ['run', '--url', f.url[transport], '--mode', mode, '-n', String(floorCount), '--json'], 'floor'));
  } finally { await f.stop(); }
}

async function runScale(what, transport) {
  // The scale figures hold a million locks, or a hundred thousand waiters, from one connection,
  // or ten thousand connections from one address, opened all at once: more than the broker's
  // default bounds.
  const n = String(2 * scaleCounts[what]);
  const b = await startLmx(what === 'connections' ? ['--max-connections-per-peer', n, '--max-handshakes', n]
    : ['--max-locks-per-connection', n]);
  try {
    return await runJson(bins.bench, ['scale', '--url', b.url[transport], '--what', what, '-n', String(scaleCounts[what]), '--json'], 'scale');
  } finally { await b.stop(); }
}

const results = {}; // "system|workload|transport" -> [run, ...]
const record = (k, r) => { (results[k] ||= []).push(r); };
const scaleResults = {}; // "what|transport" -> run
const failures = [];

function jobs() {
  const list = [];
  for (let round = 0; round < args.rounds; round++) {
    let turn = round;
    for (const workload of args.workloads) {
      for (const transport of TRANSPORTS) {
        const here_ = [];
        for (const s of Object.keys(SYSTEMS)) if (SYSTEMS[s].transports.includes(transport)) here_.push({ kind: 'system', s, workload, transport });
        // The floor runs next to W1, the workload its ping-pong bounds.
        if (workload === args.workloads[0]) for (const m of Object.keys(FLOORS)) here_.push({ kind: 'floor', s: m, workload: 'floor', transport });
        const k = turn++ % here_.length;
        list.push(...here_.slice(k), ...here_.slice(0, k));
      }
    }
  }
  return list;
}

async function main() {
  ensureNodeModules();
  const t0 = Date.now();
  const plan = jobs();
  let n = 0;
  for (const j of plan) {
    n++;
    if (tty) process.stderr.write(`\r[${n}/${plan.length}] ${j.s} ${j.workload} ${j.transport}          `);
    const r = j.kind === 'floor' ? await runFloor(j.s, j.transport) : await runSystem(j.s, j.workload, j.transport);
    const key = `${j.kind === 'floor' ? 'floor-' + j.s : j.s}|${j.workload}|${j.transport}`;
    record(key, r);
    if (r.errors) failures.push(`${key}: ${r.error}`);
  }
  if (args.scale) {
    for (const transport of TRANSPORTS) {
      for (const what of ['locks', 'waiters', 'connections']) {
        if (tty) process.stderr.write(`\rscale ${what} ${transport}                         `);
        const r = await runScale(what, transport);
        scaleResults[`${what}|${transport}`] = r;
        if (r.errors) failures.push(`scale ${what} ${transport}: ${r.error}`);
      }
    }
  }
  if (tty) process.stderr.write('\r\x1b[K');
  const durationS = (Date.now() - t0) / 1000;
  const med = medians();
  const targets = evaluate(med);
  writeOutputs(med, targets, durationS);
  for (const t of targets) console.log(`${t.met === null ? 'n/a ' : t.met ? 'MET ' : 'GAP '} ${t.name}: ${t.measured}`);
  console.log(`wrote ${path.join(outDir, 'benchmarks.md')} and benchmarks.svg in ${durationS.toFixed(0)} s`);
  for (const f of failures) console.log(`ERROR ${f}`);
  if (args.smoke) {
    const ok = smokeCheck(med);
    if (!args.out) fs.rmSync(outDir, { recursive: true, force: true });
    process.exit(ok ? 0 : 1);
  }
  process.exit(failures.length ? 1 : 0);
}

function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function medians() {
  const m = {};
  for (const [k, runs] of Object.entries(results)) {
    const ok = runs.filter((r) => !r.errors);
    const f = (g) => median(ok.map(g));
    m[k] = {
      runs: runs.length, ok: ok.length,
      rate: f((r) => r.cycles_per_ms ?? r.round_trips_per_ms),
      wall: f((r) => r.wall_ms),
      cycles: f((r) => r.cycles ?? r.messages),
      p50: f((r) => (r.acquire_us || r.rtt_us).p50), p99: f((r) => (r.acquire_us || r.rtt_us).p99), max: f((r) => (r.acquire_us || r.rtt_us).max),
      cp50: f((r) => r.cycle_us?.p50), cp99: f((r) => r.cycle_us?.p99),
      fmin: f((r) => r.fairness?.min), fmax: f((r) => r.fairness?.max),
      // CPU of both processes (client and broker, or the two floor ends), user and system, per cycle.
      cpu: f((r) => ((r.cpu_ms + r.server_cpu_ms) * 1000) / (r.cycles ?? r.messages)),
    };
  }
  return m;
}

const rate = (med, s, w, t) => med[`${s}|${w}|${t}`]?.rate ?? NaN;
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : '—');

function evaluate(med) {
  const T = [];
  const ratio = (name, a, b, want, how) => {
    const r = a / b;
    T.push({ name, measured: `${fmt(r, 2)}x (${fmt(a)} vs ${fmt(b)} ${how})`, met: Number.isFinite(r) ? r >= want : null, want: `>= ${want}x` });
  };
  for (const t of ['unix', 'tcp']) {
    ratio(`W1 ${t}: lmx >= 70% of the ping-pong floor`, rate(med, 'lmx-cpp', 'w1', t), rate(med, 'floor-pingpong', 'floor', t), 0.7, 'cycles/ms vs round trips/ms');
    T[T.length - 1].want = '>= 0.70x';
  }
  // W2 keeps 20 cycles in flight on one connection, and each cycle is two round trips (the
  // acquire, then the confirmed release): the pipelined echo at 20 in flight bounds it at half its
  // rate. Shown, no target; so is what the 15x target would take of that floor.
  for (const t of ['unix', 'tcp']) {
    const floor = rate(med, 'floor-pipeline', 'floor', t);
    ratio(`W2 ${t}: lmx round trips (two per cycle) as a fraction of the pipelined floor`, 2 * rate(med, 'lmx-cpp', 'w2', t), floor, 0, 'round trips/ms');
    Object.assign(T[T.length - 1], { want: 'shown', met: null });
    const need = 2 * 15 * rate(med, 'lm-npm', 'w2', t);
    T.push({ name: `W2 ${t}: what 15x live-mutex takes, as a fraction of the pipelined floor`, want: 'shown', met: null,
      measured: `${fmt(need / floor, 2)}x (${fmt(need)} of ${fmt(floor)} round trips/ms)` });
  }
  for (const w of ['w1', 'w2']) {
    ratio(`${w.toUpperCase()} over ws >= 80% of over tcp`, rate(med, 'lmx-cpp', w, 'ws'), rate(med, 'lmx-cpp', w, 'tcp'), 0.8, 'cycles/ms');
    T[T.length - 1].want = '>= 0.80x';
  }
  for (const t of ['unix', 'tcp']) {
    ratio(`W1 ${t}: lmx >= 4x live-mutex`, rate(med, 'lmx-cpp', 'w1', t), rate(med, 'lm-npm', 'w1', t), 4, 'cycles/ms');
    ratio(`W2 ${t}: lmx >= 15x live-mutex`, rate(med, 'lmx-cpp', 'w2', t), rate(med, 'lm-npm', 'w2', t), 15, 'cycles/ms');
    ratio(`W3 ${t}: lmx >= 5x live-mutex`, rate(med, 'lmx-cpp', 'w3', t), rate(med, 'lm-npm', 'w3', t), 5, 'cycles/ms');
  }
  for (const w of args.workloads)
    for (const t of ['tcp', 'unix'])
      ratio(`${w.toUpperCase()} ${t}: lmx broker >= live-mutex broker under the npm client`, rate(med, 'lmx-npm', w, t), rate(med, 'lm-npm', w, t), 1, 'cycles/ms');
  // The same targets with the broker polling before it sleeps (--busy-poll 50), which trades
  // CPU while busy for the wake-ups it saves.
  for (const t of ['unix', 'tcp']) {
    ratio(`W1 ${t} with --busy-poll 50: lmx >= 70% of the ping-pong floor`, rate(med, 'lmx-bp', 'w1', t), rate(med, 'floor-pingpong', 'floor', t), 0.7, 'cycles/ms vs round trips/ms');
    T[T.length - 1].want = '>= 0.70x';
    ratio(`W1 ${t} with --busy-poll 50: lmx >= 4x live-mutex`, rate(med, 'lmx-bp', 'w1', t), rate(med, 'lm-npm', 'w1', t), 4, 'cycles/ms');
    ratio(`W2 ${t} with --busy-poll 50: lmx >= 15x live-mutex`, rate(med, 'lmx-bp', 'w2', t), rate(med, 'lm-npm', 'w2', t), 15, 'cycles/ms');
  }
  const pp = med['floor-pingpong|floor|unix'];
  for (const [s, how] of [['lmx-cpp', ''], ['lmx-bp', ' with --busy-poll 50']]) {
    const lat = med[`${s}|lat|unix`];
    if (lat) T.push({ name: `uncontended acquire+release p99 over unix${how} < 100 us`, want: '< 100 us', measured: `${fmt(lat.cp99)} us (p50 ${fmt(lat.cp50)} us)`, met: lat.cp99 < 100 });
    // An uncontended cycle is two round trips (acquire, release): at best twice the floor's.
    if (lat && pp) {
      const bound = 1.5 * 2 * pp.p50;
      T.push({ name: `uncontended cycle p50 over unix${how} <= 1.5x two ping-pong floor round trips`, want: `<= ${fmt(bound)} us`,
        measured: `${fmt(lat.cp50)} us (floor round trip p50 ${fmt(pp.p50)} us)`, met: lat.cp50 <= bound });
    }
  }
  // CPU per cycle, both processes: the figure the VM's wake-up cost does not move.
  for (const [s, how] of [['lmx-cpp', ''], ['lmx-bp', ' with --busy-poll 50']])
    for (const w of ['w1', 'w2']) {
      const mine = med[`${s}|${w}|unix`]?.cpu, theirs = med[`lm-npm|${w}|unix`]?.cpu;
      T.push({ name: `${w.toUpperCase()} unix${how}: CPU per cycle, client and broker`, want: 'shown', met: null,
        measured: `${fmt(mine)} us (live-mutex ${fmt(theirs)} us, ${fmt(theirs / mine, 1)}x)` });
    }
  const limits = { locks: 300, waiters: 100 };
  for (const t of TRANSPORTS) {
    for (const what of ['locks', 'waiters']) {
      const r = scaleResults[`${what}|${t}`];
      if (!r) continue;
      const mb = r.rss_held_kb / 1024;
      T.push({ name: `${fmt(scaleCounts[what], 0)} ${what === 'locks' ? 'held locks' : 'waiters'} (${t}): broker RSS <= ${limits[what]} MB`, want: `<= ${limits[what]} MB`,
        measured: `${fmt(mb)} MB${r.errors ? ` (ERROR ${r.error})` : ''}`, met: !r.errors && r.reached === scaleCounts[what] && mb <= limits[what] });
    }
    const c = scaleResults[`connections|${t}`];
    if (c) T.push({ name: `${fmt(scaleCounts.connections, 0)} connections (${t}) held without errors`, want: 'no errors',
      measured: `${fmt(c.reached, 0)} open, ${c.errors} errors, RSS ${fmt(c.rss_held_kb / 1024)} MB`, met: !c.errors && c.reached === scaleCounts.connections });
  }
  return T;
}

function smokeCheck(med) {
  const missing = [];
  for (const w of args.workloads)
    for (const [s, d] of Object.entries(SYSTEMS))
      for (const t of d.transports) {
        const m = med[`${s}|${w}|${t}`];
        if (!m || m.ok !== m.runs || !(m.cycles === cyclesFor(w)) || !(m.rate > 0)) missing.push(`${s} ${w} ${t}`);
        else if (!(m.cpu > 0)) missing.push(`${s} ${w} ${t}: CPU per cycle`);
      }
  for (const f of Object.keys(FLOORS))
    for (const t of TRANSPORTS) {
      const m = med[`floor-${f}|floor|${t}`];
      if (!(m?.rate > 0) || !(m.cpu > 0)) missing.push(`floor ${f} ${t}`);
    }
  if (args.scale)
    for (const k of Object.keys(scaleCounts))
      for (const t of TRANSPORTS) {
        const r = scaleResults[`${k}|${t}`];
        if (!r || r.errors || r.reached !== scaleCounts[k] || !(r.rss_held_kb > 0)) missing.push(`scale ${k} ${t}`);
      }
  const md = fs.readFileSync(path.join(outDir, 'benchmarks.md'), 'utf8');
  const svg = fs.readFileSync(path.join(outDir, 'benchmarks.svg'), 'utf8');
  if (!md.includes('| lmx broker + lmx C++ client |')) missing.push('the markdown tables');
  if (!svg.startsWith('<svg') || !svg.includes('<rect')) missing.push('the chart');
  if (missing.length) console.log(`SMOKE FAILED: missing or failed: ${missing.join('; ')}`);
  else console.log('smoke: every system, workload, transport and scale figure produced results');
  return missing.length === 0;
}

function machine() {
  const sh = (c) => { try { return execFileSync('sh', ['-c', c]).toString().trim(); } catch { return '?'; } };
  const cpu = (os.cpus()[0] || {}).model || '?';
  return {
    cpus: sh('nproc'), cpu, kernel: sh('uname -sr'), os: sh('. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"'),
    node: process.version, cxx: sh('c++ --version | head -1'), lmx: sh(`"${bins.lmx}" --version`),
    liveMutex: JSON.parse(fs.readFileSync(path.join(here, 'node_modules/live-mutex/package.json'), 'utf8')).version,
    load: os.loadavg().map((x) => x.toFixed(2)).join(' '), mem: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    idle: cpuIdle(sh),
  };
}

// How an idle CPU waits decides what a wake-up costs, and so every round trip: on a VM whose idle
// vCPUs halt without polling first, waking one goes through the hypervisor.
function cpuIdle(sh) {
  const driver = sh('cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null');
  const poll = sh('cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null');
  if (!driver || driver === '?') return 'unknown';
  if (driver !== 'haltpoll' || !poll || poll === '?') return driver;
  return `${driver}, guest halt polling ${poll === '0' ? 'off' : `${Number(poll) / 1000} us`}`;
}

const WL = {
  w1: 'W1: one key, 20 in flight, one connection',
  w2: 'W2: 20 keys (one per worker), 20 in flight, one connection',
  w3: 'W3: one key, 4 client processes x 5 in flight',
  w4: 'W4: semaphore max 4 on one key, 20 in flight',
  lat: 'Uncontended: one key, one in flight',
};

function table(med, w) {
  const rows = ['| system | transport | cycles/ms | CPU us/cycle | wall ms | acquire p50 us | acquire p99 us | acquire max us | cycle p99 us | per worker min/max | runs ok |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'];
  for (const [s, d] of Object.entries(SYSTEMS))
    for (const t of d.transports) {
      const m = med[`${s}|${w}|${t}`];
      if (!m) continue;
      rows.push(`| ${d.label} | ${t} | **${fmt(m.rate)}** | ${fmt(m.cpu)} | ${fmt(m.wall, 0)} | ${fmt(m.p50)} | ${fmt(m.p99)} | ${fmt(m.max)} | ${fmt(m.cp99)} | ${fmt(m.fmin, 0)}/${fmt(m.fmax, 0)} | ${m.ok}/${m.runs} |`);
    }
  return rows.join('\n');
}

function writeOutputs(med, targets, durationS) {
  const M = machine();
  const cmd = `node bench/compare/compare.mjs${args.rounds !== 3 ? ` --rounds ${args.rounds}` : ''}${args.cycles !== 10000 ? ` --cycles ${args.cycles}` : ''}${args.scale ? '' : ' --no-scale'}${args.smoke ? ' --smoke' : ''}`;
  const L = [];
  L.push('<!-- compare:begin (written by bench/compare/compare.mjs; edits here are overwritten) -->');
  L.push('## lmx against live-mutex and the transport floor (`bench/compare`)', '');
  L.push('Lock cycles (acquire, then an immediate confirmed release) against real broker processes: the lmx');
  L.push('broker with the lmx C++ client (`lmx-bench`), once with its defaults and once with');
  L.push('`--busy-poll 50` (tcp and unix), the lmx broker with the unmodified npm');
  L.push(`\`live-mutex@${M.liveMutex}\` client, live-mutex's own broker with that client, and the floor: a`);
  L.push('plain-socket echo (`lmx-floor`) of 100-byte messages between two processes, one in flight');
  L.push('(ping-pong) and 20 in flight (pipelined). Each W1 cycle needs one round trip, so the ping-pong');
  L.push('rate bounds W1; each W2 cycle needs two (the acquire, then the release), so half the pipelined');
  L.push('rate bounds W2. The npm client drives the same workloads (`bench/compare/driver.mjs`).');
  L.push('live-mutex speaks only TCP and Unix sockets, so its rows have no ws column. CPU per cycle is');
  L.push('the user and system time of both processes (client and broker, or the two floor ends) over the');
  L.push('run, divided by its cycles: the cost a VM\'s wake-up latency does not move.', '');
  L.push('```sh');
  L.push('cmake --preset release && cmake --build --preset release --target lmx lmx-bench lmx-floor');
  L.push(cmd + '        # npm ci on first use');
  L.push('```', '');
  L.push(`Run ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}, ${fmt(durationS, 0)} s; ${args.rounds} interleaved round(s), medians; ${fmt(args.cycles, 0)} cycles per run (W2: ${fmt(cyclesFor('w2'), 0)}), a fresh broker process per run.`);
  L.push(`Machine: ${M.cpus} CPUs (${M.cpu}), ${M.mem}, ${M.kernel}, ${M.os}; CPU idle: ${M.idle}; load average at the end ${M.load}.`);
  L.push(`Versions: ${M.lmx}; live-mutex ${M.liveMutex}; node ${M.node}; ${M.cxx}.`, '');
  L.push('![cycles per millisecond, log scale](benchmarks.svg)', '');
  L.push('### Targets', '', '| target | wanted | measured | |', '| --- | --- | --- | --- |');
  for (const t of targets) L.push(`| ${t.name} | ${t.want} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'met' : '**gap**'} |`);
  L.push('');
  for (const w of args.workloads) L.push(`### ${WL[w]}`, '', table(med, w), '');
  L.push('### The floor', '', '| floor | transport | round trips/ms | CPU us/round trip | rtt p50 us | rtt p99 us | runs ok |', '| --- | --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [f, d] of Object.entries(FLOORS))
    for (const t of TRANSPORTS) {
      const m = med[`floor-${f}|floor|${t}`];
      if (m) L.push(`| ${d.label} | ${t} | **${fmt(m.rate)}** | ${fmt(m.cpu)} | ${f === 'pingpong' ? fmt(m.p50) : '—'} | ${f === 'pingpong' ? fmt(m.p99) : '—'} | ${m.ok}/${m.runs} |`);
    }
  L.push('');
  if (Object.keys(scaleResults).length) {
    L.push('### Scale: lmx broker memory', '', 'One run per transport, a fresh broker each; RSS is VmRSS of the broker process.', '');
    L.push('| held | transport | reached | broker RSS before | broker RSS held | bytes per item | build-up ms |', '| --- | --- | ---: | ---: | ---: | ---: | ---: |');
    for (const [k, r] of Object.entries(scaleResults)) {
      const [what, t] = k.split('|');
      L.push(`| ${fmt(scaleCounts[what], 0)} ${what} | ${t} | ${fmt(r.reached, 0)} | ${fmt(r.rss_before_kb / 1024)} MB | **${fmt(r.rss_held_kb / 1024)} MB** | ${fmt(r.bytes_per_item, 0)} | ${fmt(r.build_ms, 0)} |`);
    }
    L.push('');
  }
  if (failures.length) L.push('### Errors', '', ...failures.map((f) => `- ${f}`), '');
  L.push('<!-- compare:end -->');
  const block = L.join('\n');

  const mdPath = path.join(outDir, 'benchmarks.md');
  let md = fs.existsSync(mdPath) ? fs.readFileSync(mdPath, 'utf8') : '# Benchmarks\n';
  const b = md.indexOf('<!-- compare:begin');
  const e = md.indexOf('<!-- compare:end -->');
  if (b >= 0 && e > b) md = md.slice(0, b) + block + md.slice(e + '<!-- compare:end -->'.length);
  else md = md.trimEnd() + '\n\n' + block + '\n';
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(mdPath, md);
  fs.writeFileSync(path.join(outDir, 'benchmarks.svg'), chart(med));
}

// Grouped bars, log scale: cycles/ms per workload over unix for each system, and the floor.
function chart(med) {
  const series = [
    { key: 'lmx-cpp', label: 'lmx broker + lmx C++ client', color: '#1f77b4' },
    { key: 'lmx-bp', label: 'lmx broker --busy-poll 50 + lmx C++ client', color: '#2ca02c' },
    { key: 'lmx-npm', label: 'lmx broker + npm live-mutex client', color: '#7fb3d5' },
    { key: 'lm-npm', label: 'live-mutex broker + npm client', color: '#d62728' },
  ];
  const groups = args.workloads.map((w) => ({ name: w === 'lat' ? 'uncontended' : w.toUpperCase(), vals: series.map((s) => rate(med, s.key, w, 'unix')) }));
  const floors = [rate(med, 'floor-pingpong', 'floor', 'unix'), rate(med, 'floor-pipeline', 'floor', 'unix')];
  const all = [...groups.flatMap((g) => g.vals), ...floors].filter((x) => x > 0);
  const top = 10 ** Math.ceil(Math.log10(Math.max(...all, 10)));
  const W = 760, H = 420, left = 60, right = 20, topPad = 50, bottom = 70;
  const plotH = H - topPad - bottom, plotW = W - left - right;
  const y = (v) => topPad + plotH - (Math.log10(Math.max(v, 1)) / Math.log10(top)) * plotH;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Lock cycles per millisecond over a Unix socket (log scale; higher is better)</text>`];
  for (let d = 1; d <= top; d *= 10) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(d)}" y2="${y(d)}" stroke="#ddd"/>`, `<text x="${left - 6}" y="${y(d) + 4}" text-anchor="end">${d}</text>`);
  }
  const gw = plotW / groups.length, bw = (gw - 30) / series.length;
  groups.forEach((g, gi) => {
    g.vals.forEach((v, si) => {
      if (!(v > 0)) return;
      const x = left + gi * gw + 15 + si * bw;
      out.push(`<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(topPad + plotH - y(v)).toFixed(1)}" fill="${series[si].color}"><title>${series[si].label}: ${fmt(v)}</title></rect>`,
        `<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(y(v) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${v >= 100 ? Math.round(v) : v.toFixed(1)}</text>`);
    });
    out.push(`<text x="${left + gi * gw + gw / 2}" y="${topPad + plotH + 18}" text-anchor="middle" font-weight="bold">${g.name}</text>`);
  });
  [['floor: ping-pong', floors[0], '#2ca02c'], ['floor: pipelined x20', floors[1], '#9467bd']].forEach(([label, v, color]) => {
    if (!(v > 0)) return;
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="${color}" stroke-dasharray="6 4" stroke-width="1.5"/>`,
      `<text x="${W - right - 4}" y="${y(v) - 4}" text-anchor="end" fill="${color}">${label} ${fmt(v)}/ms</text>`);
  });
  // Two labels to a row: four long ones do not fit side by side.
  series.forEach((s, i) => {
    const x = left + (i % 2) * 340, yy = H - 40 + Math.floor(i / 2) * 18;
    out.push(`<rect x="${x}" y="${yy}" width="12" height="12" fill="${s.color}"/>`, `<text x="${x + 16}" y="${yy + 10}">${s.label}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

main().catch((e) => {
  console.error(`compare: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
