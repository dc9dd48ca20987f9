#!/usr/bin/env bash
# Capacity figures for sizing an lmx broker: what one held lock, one queued waiter and one idle
# connection cost in broker memory, and how much of it stays resident once they are gone.
# Each figure is measured on a fresh broker (tcp on loopback, an ephemeral port) in each of RUNS
# rounds; the table prints the median and the spread (min..max) over the rounds.
#
#   held lock    N locks on N distinct keys (no expiry) held by K connections: (RSS held - RSS
#                with the K connections open and nothing held) / N. Twice: short keys and ids (a
#                12-byte key, a 12-character id as the lmx C++ client makes them: both fit in
#                std::string's inline storage) and long ones (a 40-byte key, a 36-character UUID
#                id as the npm live-mutex client sends). Then every lock is unlocked (RSS again),
#                N locks on N other keys are taken (does the broker reuse what it freed?) and the
#                connections closed (RSS again).
#   waiter       one key held, M requests queued on it from K connections (queuedNotice:false,
#                no timeout): (RSS queued - RSS before) / M; then the waiting connections close.
#   connection   C connections that connected and said hello, then nothing: (RSS - RSS before) /
#                C, and 1 GiB over that; then they close, and as many connect (hello) and close
#                again (is what the first ones left reused?).
# RSS is Rss of /proc/PID/smaps_rollup (VmRSS of /proc/PID/status where there is none), read once
# the broker reports (system-stats) that everything asked for is in place. It is user-space
# memory only: the kernel's socket buffers (small for idle connections) are not in it.
#
#   bash bench/capacity.sh [--runs R] [--locks N] [--waiters M] [--connections C] [--holders K]
#   defaults: 3 runs, N = 100000, M = 100000, C = 10000 (less when the file limit is lower), K = 4
#   (the same from the environment: LMX_CAP_RUNS, LMX_CAP_LOCKS, LMX_CAP_WAITERS,
#   LMX_CAP_CONNECTIONS, LMX_CAP_HOLDERS)
#
# Needs the lmx binary (LMX_BINARY, default build/release/apps/lmx/lmx: measure a release build)
# and node (the load is raw NDJSON over TCP, docs/protocol.md, from a helper written to a temp
# dir). The script raises its open-file limit to the hard limit for the broker and the helper.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lmx=${LMX_BINARY:-$root/build/release/apps/lmx/lmx}
runs=${LMX_CAP_RUNS:-3}
locks=${LMX_CAP_LOCKS:-100000}
waiters=${LMX_CAP_WAITERS:-100000}
conns=${LMX_CAP_CONNECTIONS:-10000}
holders=${LMX_CAP_HOLDERS:-4}
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --locks) locks=$2; shift 2 ;;
    --waiters) waiters=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --holders) holders=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench/capacity.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in runs locks waiters conns holders; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench/capacity.sh: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[[ -x $lmx ]] || { echo "bench/capacity.sh: $lmx is missing (cmake --build --preset release, or set LMX_BINARY)" >&2; exit 3; }
command -v node >/dev/null || { echo "bench/capacity.sh: node is needed (it drives the load)" >&2; exit 3; }

# Room for C connections at both ends: the broker and the helper each need C descriptors and some.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true
fds=$(ulimit -n)
if ((conns > fds - 128)); then
  echo "bench/capacity.sh: the open-file limit is $fds: measuring $((fds - 128)) connections, not $conns" >&2
  conns=$((fds - 128))
fi
per_conn=$(((locks + holders - 1) / holders))
per_wait=$(((waiters + holders - 1) / holders))
# A connection's holds and waits are bounded (--max-locks-per-connection, 100000 by default).
max_per_conn=$((per_conn > per_wait ? per_conn : per_wait))
((max_per_conn < 100000)) && max_per_conn=100000

base=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
dir=$(mktemp -d "$base/lmx-capacity.XXXXXX")
broker_pid=
cleanup() {
  if [[ -n $broker_pid ]]; then kill "$broker_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$dir/load.cjs" <<'EOF'
'use strict';
// The load and the reading of the broker's memory for bench/capacity.sh. Modes:
//   node load.cjs locks|waiters|connections   (settings from the environment) -> one JSON line
//   node load.cjs summary RESULTS-FILE                                         -> the table
const net = require('net');
const fs = require('fs');
const crypto = require('crypto');
const env = (k, d) => process.env[k] ?? d;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function memory(pid) {  // kB: rss, anonymous
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return { rss: +/^Rss:\s+(\d+)/m.exec(t)[1], anon: +/^Anonymous:\s+(\d+)/m.exec(t)[1], src: 'smaps_rollup' };
  } catch {
    const t = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return { rss: +/^VmRSS:\s+(\d+)/m.exec(t)[1], anon: +(/^RssAnon:\s+(\d+)/m.exec(t) || [0, 0])[1], src: 'status' };
  }
}

// Request ids: as the lmx C++ client makes them (8 random characters, '.', a base-62 counter) or
// 36-character UUIDs as the npm live-mutex client sends.
const B62 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
function idMaker(style) {
  if (style === 'uuid') return () => crypto.randomUUID();
  const prefix = crypto.randomBytes(6).toString('base64url').slice(0, 8);
  let n = 0;
  return () => {
    let x = ++n, s = '';
    do { s += B62[x % 62]; x = Math.floor(x / 62); } while (x);
    return `${prefix}.${s}`;
  };
}

class Conn {
  constructor(host, port, ids) {
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.next = ids;
    this.pending = new Map();  // uuid -> resolve
    this.out = [];
    this.buf = '';
    this.closed = new Promise((r) => this.sock.once('close', r));
    this.sock.on('error', (e) => { this.error = e; });
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const m = JSON.parse(line);
        const r = m.uuid !== undefined && this.pending.get(m.uuid);
        if (r) { this.pending.delete(m.uuid); r(m); }
      }
    });
  }
  static async open(host, port, ids) {
    const c = new Conn(host, port, ids);
    await new Promise((res, rej) => { c.sock.once('connect', res); c.sock.once('error', rej); });
    const h = await c.request({ type: 'hello', uuid: c.next(), client: 'lmx-capacity', protocol: 1 });
    if (h.type !== 'hello') throw new Error(`hello answered ${JSON.stringify(h)}`);
    return c;
  }
  send(o) {  // batched: one write per turn of the event loop
    if (this.out.push(JSON.stringify(o)) === 1) setImmediate(() => { this.sock.write(this.out.join('\n') + '\n'); this.out = []; });
  }
  request(o) { return new Promise((r) => { this.pending.set(o.uuid, r); this.send(o); }); }
  close() { this.sock.end(); return this.closed; }
}

async function stats(ctl) {
  const r = await ctl.request({ type: 'system-stats-request', uuid: ctl.next() });
  return r.stats;
}
// Polls the broker's stats until pred(stats) holds (60 s at most); then lets it settle.
async function until(ctl, pred, what) {
  const end = Date.now() + 60000;
  for (;;) {
    const s = await stats(ctl);
    if (pred(s)) break;
    if (Date.now() > end) throw new Error(`the broker never reached ${what}: ${JSON.stringify(s)}`);
    await sleep(20);
  }
  await sleep(150);
}

// Runs items 0..n-1 through work(i) with `window` in flight on each of the connections.
async function windowed(conns, n, window, work) {
  let next = 0, failed = 0, first;
  const lane = async (c) => {
    while (next < n) {
      const r = await work(c, next++);
      if (r !== true && failed++ === 0) first = r;
    }
  };
  await Promise.all(conns.flatMap((c) => Array.from({ length: window }, () => lane(c))));
  if (failed) throw new Error(`${failed} of ${n} failed, the first: ${JSON.stringify(first)}`);
}

async function main(mode) {
  const [host, port] = [env('CAP_HOST'), +env('CAP_PORT')];
  const count = +env('CAP_COUNT'), holders = +env('CAP_HOLDERS'), window = +env('CAP_WINDOW', '200');
  const style = env('CAP_IDS', 'short'), keyBytes = +env('CAP_KEY_BYTES', '12');
  const ctl = await Conn.open(host, port, idMaker('short'));
  const pid = (await stats(ctl)).pid;
  const out = { mode, style, keyBytes, count, holders, pid };
  const t = () => Date.now();
  if (mode === 'locks') {
    const tag = crypto.randomBytes(3).toString('hex');
    const key = (round, i) => `${round}${tag}${i.toString(36)}`.padEnd(keyBytes, '.');
    const cs = await Promise.all(Array.from({ length: holders }, () => Conn.open(host, port, idMaker(style))));
    await until(ctl, (s) => s.connections === holders + 1, 'its connections');
    out.fresh = memory(pid);
    const held = new Array(count);
    const fill = (round) => windowed(cs, count, window, async (c, i) => {
      const uuid = c.next(), k = key(round, i);
      const r = await c.request({ type: 'lock', uuid, key: k, ttl: null, wait: false, queuedNotice: false });
      held[i] = { c, k, uuid };
      return r.acquired === true || r;
    });
    let t0 = t();
    await fill('a');
    out.build_ms = t() - t0;
    await until(ctl, (s) => s.holders === count && s.keys === count, `${count} holders`);
    out.held = memory(pid);
    await windowed(cs, count, window, async (_, i) => {
      const { c, k, uuid } = held[i];
      const r = await c.request({ type: 'unlock', uuid: c.next(), key: k, _uuid: uuid });
      return r.unlocked === true || r;
    });
    await until(ctl, (s) => s.holders === 0 && s.keys === 0, 'no holders');
    out.released = memory(pid);
    await fill('b');
    await until(ctl, (s) => s.holders === count && s.keys === count, `${count} holders again`);
    out.refilled = memory(pid);
    await Promise.all(cs.map((c) => c.close()));
    await until(ctl, (s) => s.holders === 0 && s.connections === 1, 'the holders gone');
    out.closed = memory(pid);
  } else if (mode === 'waiters') {
    const k = `w${crypto.randomBytes(3).toString('hex')}`;
    const g = await ctl.request({ type: 'lock', uuid: ctl.next(), key: k, ttl: null, wait: false });
    if (g.acquired !== true) throw new Error(`the key was not granted: ${JSON.stringify(g)}`);
    const cs = await Promise.all(Array.from({ length: holders }, () => Conn.open(host, port, idMaker(style))));
    await until(ctl, (s) => s.connections === holders + 1, 'its connections');
    out.fresh = memory(pid);
    const t0 = t();
    for (let i = 0; i < count; ++i) {
      const c = cs[i % holders];
      c.send({ type: 'lock', uuid: c.next(), key: k, ttl: null, queuedNotice: false });
      if (i % 5000 === 4999) await sleep(1);  // lets the writes go out as they are made
    }
    await until(ctl, (s) => s.waiters === count, `${count} waiters`);
    out.build_ms = t() - t0;
    out.held = memory(pid);
    await Promise.all(cs.map((c) => c.close()));
    await until(ctl, (s) => s.waiters === 0 && s.connections === 1, 'the waiters gone');
    out.closed = memory(pid);
  } else if (mode === 'connections') {
    out.fresh = memory(pid);
    const open = async () => {
      const cs = [];
      let next = 0;
      await Promise.all(Array.from({ length: Math.min(window, count) }, async () => {
        while (next < count) { ++next; cs.push(await Conn.open(host, port, idMaker(style))); }
      }));
      await until(ctl, (s) => s.connections === count + 1, `${count} connections`);
      return cs;
    };
    const closeAll = async (cs) => {
      await Promise.all(cs.map((c) => c.close()));
      await until(ctl, (s) => s.connections === 1, 'the connections gone');
    };
    const t0 = t();
    const cs = await open();
    out.build_ms = t() - t0;
    out.held = memory(pid);
    await closeAll(cs);
    out.closed = memory(pid);
    await closeAll(await open());  // as many again: is what the first ones left reused?
    out.reopened = memory(pid);
  } else throw new Error(`unknown mode ${mode}`);
  await ctl.close();
  console.log(JSON.stringify(out));
}

function summary(file) {
  const rows = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const median = (a) => { const s = [...a].sort((x, y) => x - y), m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const fmt = (v, d) => v.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  const table = [];
  // One figure: its value in each run, from the rows of a case.
  const fig = (name, unit, d, sel, f) => {
    const v = rows.filter(sel).map(f);
    if (v.length) table.push([name, fmt(median(v), d), unit, `${fmt(Math.min(...v), d)}..${fmt(Math.max(...v), d)}`]);
  };
  const per = (r, a, b) => ((r[b].rss - r[a].rss) * 1024) / r.count;  // bytes per item from phase a to b
  const kept = (r, what) => (100 * (r[what].rss - r.fresh.rss)) / (r.held.rss - r.fresh.rss);
  const L = (s) => (r) => r.mode === 'locks' && r.style === s;
  const W = (r) => r.mode === 'waiters', C = (r) => r.mode === 'connections';
  const any = rows.find((r) => r.mode === 'connections') || rows[0];
  fig('broker RSS, fresh (one connection)', 'MiB', 1, C, (r) => r.fresh.rss / 1024);
  for (const [s, label] of [['short', '12-byte key, 12-char id'], ['uuid', '40-byte key, 36-char UUID id']]) {
    const n = rows.find(L(s));
    if (!n) continue;
    fig(`held lock (${label})`, 'bytes', 0, L(s), (r) => per(r, 'fresh', 'held'));
    fig(`  held locks per GiB`, 'locks', 0, L(s), (r) => 2 ** 30 / per(r, 'fresh', 'held'));
    fig(`  RSS with ${fmt(n.count, 0)} held`, 'MiB', 1, L(s), (r) => r.held.rss / 1024);
    fig(`  still resident after unlocking all`, '% of growth', 0, L(s), (r) => kept(r, 'released'));
    fig(`  growth, ${fmt(n.count, 0)} other keys taken after that`, 'bytes/lock', 0, L(s), (r) => per(r, 'released', 'refilled'));
    fig(`  still resident after their connections closed`, '% of growth', 0, L(s), (r) => (100 * (r.closed.rss - r.fresh.rss)) / (r.refilled.rss - r.fresh.rss));
  }
  const w = rows.find(W);
  if (w) {
    fig(`queued waiter (${fmt(w.count, 0)} on one key)`, 'bytes', 0, W, (r) => per(r, 'fresh', 'held'));
    fig(`  still resident after their connections closed`, '% of growth', 0, W, (r) => kept(r, 'closed'));
  }
  const c = rows.find(C);
  if (c) {
    fig(`idle connection (${fmt(c.count, 0)} after hello)`, 'bytes', 0, C, (r) => per(r, 'fresh', 'held'));
    fig(`  idle connections per GiB`, 'connections', 0, C, (r) => 2 ** 30 / per(r, 'fresh', 'held'));
    fig(`  RSS with ${fmt(c.count, 0)} open`, 'MiB', 1, C, (r) => r.held.rss / 1024);
    fig(`  still resident after they closed`, '% of growth', 0, C, (r) => kept(r, 'closed'));
    fig(`  growth, as many opened and closed after that`, 'bytes/conn', 0, C, (r) => per(r, 'closed', 'reopened'));
  }
  const head = ['figure', 'median', 'unit', 'runs min..max'];
  const wd = head.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  const line = (r) => r.map((x, i) => (i === 1 || i === 3 ? x.padStart(wd[i]) : x.padEnd(wd[i]))).join('  ').trimEnd();
  console.log(line(head));
  for (const r of table) console.log(line(r));
  const runs = rows.filter(C).length || rows.filter(W).length;
  console.log(`medians of ${runs} run(s), a fresh broker per figure and run; RSS from /proc/PID/${any.fresh.src}`);
}

if (process.argv[2] === 'summary') summary(process.argv[3]);
else main(process.argv[2]).catch((e) => { console.error(`load: ${e.stack || e}`); process.exit(1); });
EOF

# Starts a broker with ARGS on an ephemeral loopback port; sets broker_pid, host and port.
start_broker() {
  rm -f "$dir/urls"
  "$lmx" broker --listen tcp://127.0.0.1:0 --urls-file "$dir/urls" --log-level warn "$@" >>"$dir/broker.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 200); do
    [[ -s $dir/urls ]] && break
    kill -0 "$broker_pid" 2>/dev/null || { cat "$dir/broker.log" >&2; echo "bench/capacity.sh: the broker exited" >&2; exit 1; }
    sleep 0.05
  done
  local url
  url=$(head -1 "$dir/urls")
  [[ $url == tcp://* ]] || { echo "bench/capacity.sh: no URL from the broker" >&2; exit 1; }
  url=${url#tcp://}
  host=${url%:*} port=${url##*:}
}
stop_broker() {
  kill "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=
}
# figure MODE [VAR=VALUE...] -- [BROKER ARGS...]: one measurement on a fresh broker, its JSON
# line appended to the results.
figure() {
  local mode=$1 vars=()
  shift
  while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
  (($#)) && shift
  start_broker "$@"
  if ! env CAP_HOST="$host" CAP_PORT="$port" CAP_HOLDERS="$holders" "${vars[@]}" node "$dir/load.cjs" "$mode" >>"$dir/results" 2>"$dir/load.err"; then
    cat "$dir/load.err" >&2
    echo "bench/capacity.sh: $mode failed" >&2
    exit 1
  fi
  stop_broker
}

limits=(--max-locks-per-connection "$max_per_conn")
started=$(date +%s)
for r in $(seq "$runs"); do
  [[ -t 2 ]] && printf '\rrun %d of %d ' "$r" "$runs" >&2
  figure locks CAP_COUNT="$locks" CAP_IDS=short CAP_KEY_BYTES=12 -- "${limits[@]}"
  figure locks CAP_COUNT="$locks" CAP_IDS=uuid CAP_KEY_BYTES=40 -- "${limits[@]}"
  figure waiters CAP_COUNT="$waiters" -- "${limits[@]}" --max-waiters "$((waiters + 16))"
  figure connections CAP_COUNT="$conns" CAP_HOLDERS=1 -- --max-connections "$((conns + 64))" \
    --max-connections-per-peer "$((conns + 64))"
done
[[ -t 2 ]] && printf '\r%40s\r' '' >&2

echo "lmx capacity: $("$lmx" --version 2>/dev/null | head -1)"
mem_total=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "machine: $(nproc) CPUs (${cpu:-unknown}), $mem_total, Linux $(uname -r); open-file limit $fds"
echo "sizes: $locks held locks and $waiters waiters over $holders connections, $conns idle connections; tcp on loopback"
echo
node "$dir/load.cjs" summary "$dir/results"
echo "took $(($(date +%s) - started)) s"
