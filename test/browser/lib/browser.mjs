// Shared plumbing for the browser tests: a real `lmx broker` listening on ws:// (which also serves
// the dashboard and /lmx.js over HTTP), headless Chromium (the Debian package, driven over the
// DevTools protocol by playwright-core; no browser is ever downloaded), pages that import lmx.js
// from the broker, and a small static HTTP server for pages of another origin.
//
// This file holds no tests; the test files are the *.test.mjs files next to the lib folder.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';
import { spawnBroker, sleep } from '../../support/broker_process.mjs';

export { sleep, withTimeout, waitFor, uniqueKey } from '../../support/broker_process.mjs';

const chromiumPath = process.env.LMX_CHROMIUM || '/usr/bin/chromium';

// Starts a broker on ws://127.0.0.1:<port> (0: an ephemeral port). `http` is its HTTP origin.
export async function startBroker({ port = 0, args = [] } = {}) {
  const b = await spawnBroker({ listen: () => [`ws://127.0.0.1:${port}`], args, prefix: 'lmx-browser-' });
  const m = /^ws:\/\/127\.0\.0\.1:(\d+)/.exec(b.urls[0]);
  if (!m) throw new Error(`unexpected broker URL ${b.urls[0]}`);
  return { ...b, port: Number(m[1]), http: `http://127.0.0.1:${m[1]}`, ws: `ws://127.0.0.1:${m[1]}/` };
}

// Starts a broker again on `port` (that of a stopped one). The port was ephemeral, so it is
// retried for a few seconds in case it is briefly not free; the test fails if it stays taken.
export async function restartBroker(port, { args = [] } = {}) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await startBroker({ port, args });
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`cannot listen on port ${port} again: ${e.message}`);
      await sleep(200);
    }
  }
}

// Headless Chromium with a fresh temporary profile, closed when the test file's `after` runs.
export async function launchBrowser() {
  if (!fs.existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: install the Debian packages chromium and chromium-driver (scripts/deps.sh test), or set LMX_CHROMIUM`);
  }
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

// A new page of `context` whose uncaught errors and console errors (a CSP violation among them)
// are collected in page.problems.
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // The browser's own favicon request on pages without one is not a problem of the page.
    if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) page.problems.push(`console: ${m.text()}`);
  });
  return page;
}

// A page on `origin` (any URL of it) that has imported lmx.js from `broker` as window.lmx.
export async function lmxPage(context, broker, origin = `${broker.http}/healthz`) {
  const page = await newPage(context);
  await page.goto(origin);
  await page.evaluate(async (url) => { window.lmx = await import(url); }, `${broker.http}/lmx.js`);
  return page;
}

// Serves one HTML page at / on http://127.0.0.1:<ephemeral port>: a page of another origin.
export async function staticServer(html = '<!doctype html><title>elsewhere</title><p>a page of another origin</p>') {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => server.close(resolve)) };
}

// Where test artifacts (screenshots) go: $LMX_ARTIFACT_DIR (set by CTest to a folder of the build
// tree), else ./artifacts.
export function artifactPath(name) {
  const dir = process.env.LMX_ARTIFACT_DIR || path.resolve('artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

// The setup most test files share: one broker and one headless Chromium for the whole file (and a
// browser context, unless `context` is false), started before its first test and stopped after
// its last. `args` are more arguments of `lmx broker` (e.g. ['--auth-token-file', path]).
// `ready` receives { broker, browser, context } once they are up.
export function brokerAndBrowser(ready, { context = true, args = [] } = {}) {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({ args });
    browser = await launchBrowser();
    ready({ broker, browser, context: context ? await browser.newContext() : undefined });
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });
}

// A page of `context` that has imported lmx.js from `broker` and connected to it as
// window.client, with connect options `options` (plain data).
export async function connectedPage(context, broker, options = {}) {
  const page = await lmxPage(context, broker);
  await page.evaluate(async ([url, options]) => { window.client = await window.lmx.connect(url, options); },
    [broker.ws, options]);
  return page;
}

// Runs `body` (the source of a function of one argument) in the page; an lmx rejection comes back
// as { error: code, name, message, cause: the code of its cause }.
export function attempt(page, body, arg) {
  return page.evaluate(`(async (arg) => {
    try { return await (${body})(arg); }
    catch (e) { return { error: e.code ?? String(e), name: e.name, message: e.message, cause: e.cause?.code }; }
  })(${JSON.stringify(arg ?? null)})`);
}
