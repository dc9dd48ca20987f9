// A broker that checks tokens (--auth-token-file), with lmx.js and the dashboard in headless
// Chromium: the token goes in a WebSocket subprotocol and in the hello (never in the URL), a
// missing or wrong one fails with `unauthenticated` without a reconnect storm, the hello gives the
// token's role and a client token may not force-release (`forbidden`), the dashboard asks for a
// token and keeps it in sessionStorage, and /v1/stats wants a Bearer token.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
  brokerAndBrowser, startBroker, connectedPage, lmxPage, newPage, attempt, waitFor, sleep, uniqueKey,
} from './lib/browser.mjs';

// Tokens are at least 16 printable ASCII characters (the broker refuses shorter ones).
const adminToken = `admin-${crypto.randomBytes(12).toString('hex')}`;
const clientToken = `client-${crypto.randomBytes(12).toString('hex')}`;
const otherClientToken = `other-${crypto.randomBytes(12).toString('hex')}`;
const wrongToken = `wrong-${crypto.randomBytes(12).toString('hex')}`;

const tokenDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lmx-auth-'));
const tokenFile = path.join(tokenDir, 'tokens');
const tokenLines = [
  '# tokens of the browser tests',
  '',
  `${adminToken}   admin`,
  clientToken,
  `${otherClientToken}\tclient  # a comment after the role`,
];
fs.writeFileSync(tokenFile, `${tokenLines.join('\n')}\n`, { mode: 0o600 });
after(() => fs.rmSync(tokenDir, { recursive: true, force: true }));

let broker;
let browser;
let context;
brokerAndBrowser((s) => ({ broker, browser, context } = s), { args: ['--auth-token-file', tokenFile] });

// WebSockets the page creates, as the browser reports them (counted from now on).
function countSockets(page) {
  const seen = [];
  page.on('websocket', (ws) => seen.push(ws.url()));
  return seen;
}

// A counter of the broker's /metrics (no token needed there).
async function metric(name) {
  const text = await (await fetch(`${broker.http}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

// A WebSocket server that completes the upgrade (answering the "lmx" subprotocol), records the
// upgrade request and the first text message, and never answers it: what a client sends.
async function recordingServer() {
  const seen = [];
  const server = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  const sockets = new Set();
  server.on('upgrade', (req, socket) => {
    sockets.add(socket);
    const record = { url: req.url, protocols: req.headers['sec-websocket-protocol'], authorization: req.headers.authorization, messages: [] };
    seen.push(record);
    const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(/\s*,\s*/).includes('lmx');
    socket.write(['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade',
      `Sec-WebSocket-Accept: ${accept}`, ...(offered ? ['Sec-WebSocket-Protocol: lmx'] : []), '', ''].join('\r\n'));
    let buf = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      // Client frames are masked; these are small, unfragmented text frames.
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + 4 + len) return;
        const mask = buf.subarray(at, at + 4);
        const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
        for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
        buf = buf.subarray(at + 4 + len);
        if (opcode === 1) record.messages.push(JSON.parse(payload.toString('utf8')));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    seen,
    ws: `ws://127.0.0.1:${server.address().port}/`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

test('the token goes in a subprotocol (base64url of its UTF-8) and in the hello, never in the URL', async () => {
  const server = await recordingServer();
  const page = await lmxPage(context, broker);
  const token = 'tøken-ü-✓-😀/+=?&x';  // not one the broker would take: only what is sent matters here
  try {
    const r = await attempt(page, `([url, token]) => {
      const c = new lmx.Client(url, { token, reconnect: false, connectTimeout: 1500 });
      return c.connect().finally(() => c.close());
    }`, [server.ws, token]);
    assert.equal(r.error, 'unreachable', 'the recording server never answers the hello');
    assert.equal(server.seen.length, 1);
    const [seen] = server.seen;
    assert.equal(seen.url, '/', 'nothing added to the URL');
    assert.equal(seen.authorization, undefined);
    const b64 = Buffer.from(token, 'utf8').toString('base64url');
    assert.doesNotMatch(b64, /=/);
    assert.deepEqual(seen.protocols.split(/\s*,\s*/), ['lmx', `lmx.token.${b64}`]);
    assert.equal(seen.messages.length, 1);
    assert.deepEqual({ ...seen.messages[0], uuid: undefined },
      { type: 'hello', uuid: undefined, client: 'lmx-js', protocol: 1, token });

    // Without a token: no subprotocol and no token field, as before.
    await attempt(page, `(url) => {
      const c = new lmx.Client(url, { reconnect: false, connectTimeout: 1000 });
      return c.connect().finally(() => c.close());
    }`, server.ws);
    assert.equal(server.seen.length, 2);
    assert.equal(server.seen[1].protocols, undefined);
    assert.equal('token' in server.seen[1].messages[0], false);
  } finally {
    await page.close();
    await server.close();
  }
});

test('a token lmx.js cannot send is refused before connecting (bad_request)', async () => {
  const page = await lmxPage(context, broker);
  const sockets = countSockets(page);
  for (const token of ['', 'two SECRET words', 'SECRET-and-a-newline\n', 'tab\tSECRET', 42, {}, 'SECRET\uD800']) {
    const r = await attempt(page, '(token) => new lmx.Client(undefined, { token })', token);
    assert.equal(r.error, 'bad_request', `token ${JSON.stringify(token)}`);
    assert.doesNotMatch(r.message, /SECRET/, 'the token is not echoed in the message');
  }
  const r = await attempt(page, '() => { const c = new lmx.Client(undefined, { token: null }); c.setToken(""); }');
  assert.equal(r.error, 'bad_request');
  assert.equal(sockets.length, 0);
  await page.close();
});

test('the right token connects, acquires and releases; the hello gives its role', async () => {
  const key = uniqueKey('authed');
  const page = await connectedPage(context, broker, { token: clientToken });
  const r = await page.evaluate(async (key) => {
    const lock = await client.acquire(key, { ttl: 10000 });
    const held = (await client.info(key)).holders.includes(lock.id);
    await lock.release();
    return { role: client.role, held, released: lock.released, after: (await client.info(key)).locked };
  }, key);
  assert.deepEqual(r, { role: 'client', held: true, released: true, after: false });
  const admin = await connectedPage(context, broker, { token: adminToken });
  assert.equal(await admin.evaluate(() => client.role), 'admin');
  const other = await connectedPage(context, broker, { token: otherClientToken });
  assert.equal(await other.evaluate(() => client.role), 'client', 'a role followed by a comment');
  for (const p of [page, admin, other]) {
    assert.deepEqual(p.problems, []);
    await p.close();
  }
});

test('no token: unauthenticated, and the client does not reconnect by itself', async () => {
  const page = await lmxPage(context, broker);
  const sockets = countSockets(page);
  const before = await metric('lmx_connections_total');
  const r = await attempt(page, '(url) => lmx.connect(url)', broker.ws);
  assert.equal(r.error, 'unauthenticated');
  assert.equal(r.name, 'LmxError');
  assert.match(r.message, /no token/);
  // A client kept around (background reconnects on) fails its calls at once and stands still.
  const t0 = Date.now();
  const first = await attempt(page, `async (url) => {
    window.c = new lmx.Client(url, { minBackoff: 10, maxBackoff: 50 });
    return c.acquire('k', { timeout: 30000 });
  }`, broker.ws);
  assert.equal(first.error, 'unauthenticated');
  assert.ok(Date.now() - t0 < 5000, `failed at once, not at the timeout (${Date.now() - t0} ms)`);
  await sleep(1500);
  assert.equal(sockets.length, 2, `WebSockets opened: ${sockets.length}`);
  const later = await attempt(page, '() => c.ping()');
  assert.equal(later.error, 'unauthenticated', 'a later call fails without a new connection');
  assert.equal(later.cause, 'unauthenticated');
  assert.equal(await page.evaluate(() => c.state), 'disconnected');
  assert.equal(sockets.length, 2);
  assert.equal(await metric('lmx_connections_total') - before, 2, 'connections the broker saw');
  await page.evaluate(() => c.close());
  await page.close();
});

test('a wrong token: unauthenticated without a reconnect storm; setToken() or connect() tries again', async () => {
  const page = await lmxPage(context, broker);
  const sockets = countSockets(page);
  const before = await metric('lmx_connections_total');
  const codes = await page.evaluate(async ([url, token]) => {
    window.states = [];
    window.c = new lmx.Client(url, { token, minBackoff: 10, maxBackoff: 50 });
    c.addEventListener('state', (e) => states.push([e.state, e.error?.code ?? null]));
    window.pending = [c.acquire('a', { timeout: 30000 }), c.ping(), c.watch(null, () => {})].map((p) => p.then(() => 'ok', (e) => e.code));
    return Promise.all(pending);
  }, [broker.ws, wrongToken]);
  assert.deepEqual(codes, ['unauthenticated', 'unauthenticated', 'unauthenticated'], 'every call waiting for the connection');
  // With a backoff of 10 to 50 ms a retrying client would open dozens in this time.
  await sleep(2000);
  assert.equal(sockets.length, 1, `WebSockets opened: ${sockets.length}`);
  assert.equal(await metric('lmx_connections_total') - before, 1);
  assert.deepEqual(await page.evaluate(() => states), [['connecting', null], ['disconnected', 'unauthenticated']]);
  assert.match((await attempt(page, '() => c.info("a")')).message, /not retried until setToken\(\) or connect\(\)/);
  assert.doesNotMatch((await attempt(page, '() => c.info("a")')).message, new RegExp(wrongToken), 'the token is not in messages');

  // connect() tries again (and is refused again); setToken() with a right one connects.
  assert.equal((await attempt(page, '() => c.connect()')).error, 'unauthenticated');
  assert.equal(sockets.length, 2);
  const role = await page.evaluate(async (token) => {
    c.setToken(token);
    await c.ping();
    return c.role;
  }, adminToken);
  assert.equal(role, 'admin');
  assert.equal(sockets.length, 3);
  await page.evaluate(() => c.close());
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('a token added to the file is taken after SIGHUP; connect() then succeeds', async () => {
  const late = `late-${crypto.randomBytes(12).toString('hex')}`;
  const page = await lmxPage(context, broker);
  assert.equal((await attempt(page, `([url, token]) => { window.c = new lmx.Client(url, { token }); return c.connect(); }`, [broker.ws, late])).error, 'unauthenticated');
  fs.appendFileSync(tokenFile, `${late}\n`);
  broker.proc.kill('SIGHUP');
  await waitFor(async () => (await attempt(page, '() => c.connect().then(() => c.role)')) === 'client', 5000, 'the reloaded token accepted', 100);
  assert.equal(await page.evaluate(async () => (await c.ping()) >= 0), true);
  await page.evaluate(() => c.close());
  await page.close();
});

test('a client token may not force-release every holder (forbidden, the connection stays); an admin token may', async () => {
  const key = uniqueKey('force');
  const holder = await connectedPage(context, broker, { token: clientToken });
  const lockId = await holder.evaluate(async (key) => {
    window.held = await client.acquire(key, { ttl: 30000 });
    window.lost = new Promise((resolve) => held.addEventListener('lost', (e) => resolve(e.reason)));
    return held.id;
  }, key);
  const user = await connectedPage(context, broker, { token: otherClientToken });
  const r = await attempt(user, '(key) => client.forceRelease(key)', key);
  assert.equal(r.error, 'forbidden');
  assert.equal(r.name, 'LmxError');
  assert.equal(await user.evaluate(() => client.state), 'connected', 'the connection stays');
  assert.ok(await user.evaluate(() => client.ping()) >= 0);
  assert.deepEqual((await user.evaluate((key) => client.info(key), key)).holders, [lockId], 'the hold is untouched');
  assert.equal(await holder.evaluate(() => held.held), true);

  const admin = await connectedPage(context, broker, { token: adminToken });
  await admin.evaluate((key) => client.forceRelease(key), key);
  assert.equal(await holder.evaluate(() => lost), 'forced');
  assert.equal((await admin.evaluate((key) => client.info(key), key)).locked, false);
  for (const p of [holder, user, admin]) {
    assert.deepEqual(p.problems, []);
    await p.close();
  }
});

test('against a broker that checks no tokens, a token is harmless and role is null', async () => {
  const open = await startBroker();
  try {
    const page = await connectedPage(context, open, { token: clientToken });
    const r = await page.evaluate(async () => {
      const lock = await client.acquire('plain', { ttl: 5000 });
      await lock.release();
      return { role: client.role, state: client.state };
    });
    assert.deepEqual(r, { role: null, state: 'connected' });
    const plain = await connectedPage(context, open);
    assert.equal(await plain.evaluate(() => client.role), null);
    await page.close();
    await plain.close();
  } finally {
    await open.stop();
  }
});

test('the dashboard asks for a token, keeps it in sessionStorage, and works once it is typed', async () => {
  const dashContext = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  try {
    const dash = await newPage(dashContext);
    const sockets = countSockets(dash);
    const res = await dash.goto(`${broker.http}/`);
    assert.equal(res.status(), 200, 'the page itself is open');
    await dash.waitForSelector('#auth:not([hidden])', { timeout: 5000 });
    assert.equal(await dash.locator('#status-text').textContent(), 'token needed');
    assert.equal(await dash.getAttribute('#token', 'type'), 'password');
    assert.equal(await dash.locator('#forget-token').isVisible(), false);
    await sleep(500);
    assert.equal(sockets.length, 1, 'no retries while it waits for a token');

    // A wrong token: refused, asked again.
    await dash.fill('#token', wrongToken);
    await dash.click('#auth-form button[type=submit]');
    await waitFor(async () => (await dash.locator('#auth-note').getAttribute('class')) === 'error'
      && await dash.locator('#auth').isVisible(), 5000, 'the refusal shown');
    assert.match(await dash.locator('#auth-note').textContent(), /refused the token/);
    assert.equal(await dash.evaluate(() => sessionStorage.getItem('lmx.dashboard.token')), null, 'a refused token is not kept');
    assert.doesNotMatch(await dash.locator('body').textContent(), new RegExp(wrongToken));

    // The right one (pasted with spaces around it): live, and it shows a key another page holds.
    await dash.fill('#token', `  ${clientToken} `);
    await dash.press('#token', 'Enter');
    await dash.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
    assert.equal(await dash.locator('#auth').isVisible(), false);
    assert.equal(await dash.locator('#status-text').textContent(), 'live');
    assert.equal(await dash.locator('#forget-token').isVisible(), true);
    const storage = await dash.evaluate(() => ({ session: sessionStorage.getItem('lmx.dashboard.token'), local: localStorage.length }));
    assert.deepEqual(storage, { session: clientToken, local: 0 });

    const key = uniqueKey('dash-auth');
    const holder = await connectedPage(context, broker, { token: clientToken });
    const lockId = await holder.evaluate(async (key) => (window.held = await client.acquire(key, { ttl: 30000 })).id, key);
    await waitFor(async () => (await dash.locator(`tr[data-key="${key}"]`).textContent({ timeout: 50 }).catch(() => '')).includes(lockId),
      5000, 'the held key on the dashboard');
    await holder.evaluate(() => held.release());
    await holder.close();

    // A reload of the tab connects with the kept token, without asking.
    await dash.reload();
    await dash.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
    assert.equal(await dash.locator('#auth').isVisible(), false);

    // "forget token": gone from the tab, asked for again.
    await dash.click('#forget-token');
    await dash.waitForSelector('#auth:not([hidden])', { timeout: 5000 });
    assert.equal(await dash.evaluate(() => sessionStorage.getItem('lmx.dashboard.token')), null);
    assert.equal(await dash.locator('#auth-note').getAttribute('class'), 'muted');
    assert.deepEqual(dash.problems, []);
  } finally {
    await dashContext.close();
  }
});

test('/v1/stats wants a Bearer token; /metrics, /healthz, the dashboard and lmx.js stay open', async () => {
  const none = await fetch(`${broker.http}/v1/stats`);
  assert.equal(none.status, 401);
  assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer\b/);
  await none.body?.cancel();
  const wrong = await fetch(`${broker.http}/v1/stats`, { headers: { authorization: `Bearer ${wrongToken}` } });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  for (const token of [clientToken, adminToken]) {
    const ok = await fetch(`${broker.http}/v1/stats`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(ok.status, 200);
    assert.equal(typeof (await ok.json()).connections, 'number');
  }
  for (const p of ['/metrics', '/healthz', '/', '/lmx.js', '/lmx.d.ts']) {
    const res = await fetch(`${broker.http}${p}`);
    assert.equal(res.status, 200, p);
    await res.body?.cancel();
  }
});
