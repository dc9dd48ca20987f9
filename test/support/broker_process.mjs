// Shared plumbing for the node-driven tests (test/interop, test/browser): a real `lmx broker`
// process (binary from $LMX_BINARY) with its bound URLs read from --urls-file, and small helpers
// for bounded waits. Holds no tests.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

// Brokers still running and their temp dirs: never leave them behind, even when the test process
// ends early (failed assertion outside a test, Ctrl-C, the test runner's timeout).
const live = new Map(); // ChildProcess -> temp dir
function killLive() {
  for (const [proc, dir] of live) {
    try { proc.kill('SIGKILL'); } catch { /* gone */ }
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
  live.clear();
}
process.on('exit', killLive);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killLive(); process.kill(process.pid, sig); });
}

export function lmxBinary() {
  const bin = process.env.LMX_BINARY;
  if (!bin) throw new Error('LMX_BINARY is not set: point it at the lmx executable (e.g. build/apps/lmx/lmx)');
  if (!fs.existsSync(bin)) throw new Error(`LMX_BINARY=${bin} does not exist`);
  return bin;
}

// Starts `lmx broker --listen <each of listen(dir)> --urls-file ... ...args` in a fresh temporary
// directory `dir` and waits (10 s at most) until it has written one bound URL per listener.
// Resolves to {proc, dir, urls, output(), exited, stop()}; stop() sends SIGTERM (SIGKILL after
// 10 s), removes the directory and resolves to {code, signal, socketFiles: paths still there}.
export async function spawnBroker({ listen, args = [], prefix = 'lmx-test-' }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const listenUrls = listen(dir);
  const urlsFile = path.join(dir, 'urls');
  const argv = ['broker', ...listenUrls.flatMap((u) => ['--listen', u]), '--urls-file', urlsFile, ...args];
  const proc = spawn(lmxBinary(), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.set(proc, dir);
  let output = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => { output += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { output += d; });
  let exitStatus = null;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
    proc.once('error', (e) => { live.delete(proc); output += `cannot run ${lmxBinary()}: ${e.message}\n`; resolve({ code: null, signal: null, error: e.message }); });
  });
  exited.then((s) => { exitStatus = s; });

  const deadline = Date.now() + 10_000;
  let urls = null;
  while (Date.now() < deadline && !exitStatus) {
    try {
      const lines = fs.readFileSync(urlsFile, 'utf8').split('\n').filter(Boolean);
      if (lines.length >= listenUrls.length) { urls = lines; break; }
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    await sleep(20);
  }
  if (!urls) {
    if (!exitStatus) proc.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`lmx broker did not write ${urlsFile} within 10 s (exit ${JSON.stringify(exitStatus)}); output:\n${output}`);
  }
  const socketFiles = urls.filter((u) => u.startsWith('unix://')).map((u) => u.slice('unix://'.length));
  return {
    proc, dir, urls, exited,
    output: () => output,
    async stop() {
      if (!exitStatus) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const st = await exited;
      clearTimeout(t);
      const left = socketFiles.filter((f) => fs.existsSync(f));
      fs.rmSync(dir, { recursive: true, force: true });
      return { ...st, socketFiles: left };
    },
  };
}

export function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Polls cond() (sync or async) until it is truthy.
export async function waitFor(cond, ms, what, step = 10) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(step);
  }
}

export function uniqueKey(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}
