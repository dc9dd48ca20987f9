// Shared plumbing for the live-mutex interop tests: a real `lmx broker` process on an ephemeral
// TCP port and a Unix socket, live-mutex clients with recorded 'error'/'warning' events, and
// small promise wrappers with bounded waits.
//
// This file holds no tests; the test files are the *.test.mjs files next to the lib folder.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { spawnBroker, sleep, withTimeout, waitFor, uniqueKey } from '../../support/broker_process.mjs';

const require = createRequire(import.meta.url);

// Every live-mutex Client adds a process 'exit' listener; the tests make dozens of clients.
process.setMaxListeners(0);

// The unmodified npm client. Loaded from dist/client rather than the package root on purpose:
// the root module also loads live-mutex's broker, which installs a process-wide
// 'uncaughtException' handler that would swallow failing assertions in these tests.
export const { Client } = require('live-mutex/dist/client');
export const livemutexVersion = require('live-mutex/package.json').version;

export { sleep, withTimeout, waitFor, uniqueKey };

export const transports = ['tcp', 'unix'];

// live-mutex's Client refuses ports outside 1025..49151, but Linux hands out ephemeral ports
// up to 60999. A broker that got a port the client cannot use is stopped and started again.
const CLIENT_MAX_PORT = 49151;

async function startOnce(extraArgs) {
  const b = await spawnBroker({
    listen: (dir) => ['tcp://127.0.0.1:0', `unix://${dir}/lmx.sock`],
    args: extraArgs,
    prefix: 'lmx-interop-',
  });
  const tcpUrl = b.urls.find((u) => u.startsWith('tcp://'));
  const unixUrl = b.urls.find((u) => u.startsWith('unix://'));
  if (!tcpUrl || !unixUrl) throw new Error(`unexpected urls file content: ${JSON.stringify(b.urls)}`);
  const m = /^tcp:\/\/([^:/]+):(\d+)$/.exec(tcpUrl);
  if (!m) throw new Error(`cannot parse ${tcpUrl}`);

  const broker = {
    proc: b.proc, dir: b.dir, host: m[1], port: Number(m[2]), udsPath: unixUrl.slice('unix://'.length), urls: b.urls,
    output: b.output,
    // Client constructor options that reach this broker over the given transport.
    connectOptions(transport) {
      if (transport === 'tcp') return { host: broker.host, port: broker.port };
      if (transport === 'unix') return { udsPath: broker.udsPath };
      throw new Error(`unknown transport ${transport}`);
    },
    // Stops the broker with SIGTERM; resolves to {code, signal, socketFileLeft} (SIGKILL after 10 s).
    async stop() {
      const st = await b.stop();
      return { code: st.code, signal: st.signal, socketFileLeft: st.socketFiles.length > 0 };
    },
  };
  return broker;
}

// Starts `lmx broker` (binary from $LMX_BINARY) on tcp://127.0.0.1:0 and a Unix socket in a
// fresh temporary directory, and waits for the bound URLs in its --urls-file.
export async function startBroker(extraArgs = []) {
  for (let attempt = 0; attempt < 40; attempt++) {
    const b = await startOnce(extraArgs);
    if (b.port <= CLIENT_MAX_PORT) return b;
    await b.stop();
  }
  throw new Error(`no ephemeral port <= ${CLIENT_MAX_PORT} after 40 broker starts`);
}

// A connected live-mutex Client whose 'error' and 'warning' events are recorded.
// Tracks every client so closeAll() can shut them before the broker stops (a client whose
// broker goes away tries to reconnect and ends with an unhandled rejection).
export class ClientSet {
  constructor(broker, transport) {
    this.broker = broker;
    this.transport = transport;
    this.all = [];
  }

  async make(name, opts = {}) {
    const c = new Client({ ...this.broker.connectOptions(this.transport), ...opts });
    const h = { name, c, errors: [], warnings: [] };
    c.emitter.on('error', (e) => h.errors.push(e));
    c.emitter.on('warning', (...w) => h.warnings.push(w.map(String).join(' ')));
    this.all.push(h);
    await withTimeout(c.ensure(), 5000, `${name}: connect over ${this.transport}`);
    return h;
  }

  closeAll() {
    for (const h of this.all) disconnect(h);
    this.all = [];
  }

  // Every recorded 'error' event of every client, labelled.
  errors() {
    return this.all.flatMap((h) => h.errors.map((e) => `${h.name}: ${typeof e === 'string' ? e : JSON.stringify(e)}`));
  }
}

// Closes a client's connection (live-mutex's close(): socket destroyed, no reconnect).
// live-mutex leaves the retry timers of requests still in flight armed; when one fires after
// close() the client reconnects and re-sends the lock request on a new connection (or throws
// "Could not reconnect." from a timer once the broker is gone). Disarm them, so that a client
// closed mid-test really is gone.
export function disconnect(h) {
  try { h.c.close(); } catch { /* already closed */ }
  for (const k of Object.keys(h.c.timers || {})) clearTimeout(h.c.timers[k]);
}

// Warnings the client emits about its own socket closing are expected on close(); everything
// else is a message from (or about) the broker.
export function brokerWarnings(h) {
  return h.warnings.filter((w) => !/lmx client stream "(close|end)" event occurred/.test(w));
}

// Tracks whether a promise has settled, without consuming its rejection.
export function track(promise) {
  const st = { settled: false, value: undefined, error: undefined, at: 0 };
  st.promise = promise.then(
    (v) => { st.settled = true; st.value = v; st.at = performance.now(); return v; },
    (e) => { st.settled = true; st.error = e; st.at = performance.now(); throw e; });
  st.promise.catch(() => {});
  return st;
}

// live-mutex's requestLockInfo/ls have no timeout of their own.
export function lockInfo(h, key, ms = 3000) {
  return withTimeout(new Promise((resolve, reject) => {
    h.c.requestLockInfo(key, (err, v) => (err ? reject(err) : resolve(v.data)));
  }), ms, `${h.name}: requestLockInfo(${key})`);
}

export function ls(h, ms = 3000) {
  return withTimeout(new Promise((resolve, reject) => {
    h.c.ls((err, v) => (err ? reject(err) : resolve(v)));
  }), ms, `${h.name}: ls()`);
}

// One NDJSON request on a fresh raw connection (for messages the npm client cannot send, such as
// system-stats-request). Resolves with the first reply echoing the request's uuid.
export function rawRequest(broker, transport, msg, ms = 3000) {
  const uuid = msg.uuid || randomUUID();
  return withTimeout(new Promise((resolve, reject) => {
    const sock = transport === 'unix' ? net.createConnection(broker.udsPath) : net.createConnection(broker.port, broker.host);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', reject);
    sock.on('connect', () => sock.write(JSON.stringify({ ...msg, uuid }) + '\n'));
    sock.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        if (m.uuid === uuid) { sock.destroy(); resolve(m); return; }
      }
    });
  }), ms, `raw ${msg.type}`);
}

export async function systemStats(broker, transport) {
  const r = await rawRequest(broker, transport, { type: 'system-stats-request' });
  if (!r.stats) throw new Error(`system-stats-response without stats: ${JSON.stringify(r)}`);
  return r.stats;
}

// Blocks the event loop (to make two events land in the same loop iteration).
export function busyWait(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

// Makes a client's lock-request timer and a grant land in the same event-loop turn: from a
// setImmediate callback, calls release() (whose write goes out at once and makes the broker send
// a grant to the waiter) and then blocks this process until `dueAt` (performance.now() time at
// which the waiter's timer fires) has passed by `margin` ms. The next loop turn runs due timers
// before it reads sockets, so the waiter's timer (retry or give-up) runs first and the grant,
// already in its socket, is read right after. Resolves to whether release() ran before dueAt
// (otherwise the timer had fired already and the scenario did not happen).
export function crossTimerWithGrant(release, dueAt, margin = 150) {
  return new Promise((resolve) => setImmediate(() => {
    const early = performance.now() < dueAt - 20;
    release();
    busyWait(Math.max(dueAt - performance.now(), 0) + margin);
    resolve(early);
  }));
}


// Stops the broker with SIGTERM and checks a graceful exit: status 0 and its socket file removed.
export async function assertCleanStop(broker) {
  const st = await broker.stop();
  const out = broker.output();
  assert.equal(st.signal, null, `broker killed by ${st.signal}; output:\n${out}`);
  assert.equal(st.code, 0, `broker exit code ${st.code}; output:\n${out}`);
  assert.equal(st.socketFileLeft, false, 'broker left its Unix socket file behind');
}

// A ClientSet for one test on one transport, closed when the test ends.
export function clientsFor(t, broker, transport) {
  const cs = new ClientSet(broker, transport);
  t.after(() => cs.closeAll());
  return cs;
}
