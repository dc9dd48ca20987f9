// The dashboard served at GET / by a real broker, in headless Chromium: it shows holders and
// waiters live from the watch stream, filters keys, counts connections, and fits a phone screen.
// Screenshots are saved as test artifacts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, restartBroker, newPage, lmxPage, waitFor, uniqueKey, artifactPath, brokerAndBrowser } from './lib/browser.mjs';

let broker;
let browser;
brokerAndBrowser((s) => ({ broker, browser } = s), { context: false });

// The dashboard, ready (snapshot taken, watching), with its problems collected (see newPage).
async function openDashboard(context, query = '', b = broker) {
  const page = await newPage(context);
  const res = await page.goto(`${b.http}/${query}`);
  assert.equal(res.status(), 200);
  assert.equal(res.headers()['content-type'], 'text/html; charset=utf-8');
  assert.equal(res.headers()['x-content-type-options'], 'nosniff');
  assert.match(res.headers()['content-security-policy'], /default-src 'none'/);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
  return page;
}

const row = (page, key) => page.locator(`tr[data-key="${key}"]`);

// A page of `context` connected to `b` (window.client) that holds `key` (window.held).
async function holding(context, key, options = {}, b = broker) {
  const page = await lmxPage(context, b);
  const lock = await page.evaluate(async ([url, key, options]) => {
    window.client = await lmx.connect(url);
    window.held = await client.acquire(key, { ttl: 60000, ...options });
    return { id: held.id, token: held.fencingToken };
  }, [b.ws, key, options]);
  return { page, ...lock };
}

test('the dashboard shows a held lock and its waiter as they happen, then follows the release', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const dash = await openDashboard(context);
  const key = uniqueKey('orders');

  const { page: holder, id: lockId, token } = await holding(context, key);
  const waiter = await lmxPage(context, broker);
  const waiterId = await waiter.evaluate(async ([url, key]) => {
    window.client = await lmx.connect(url);
    window.pending = client.acquire(key, { ttl: 60000, timeout: 30000, onqueued: (n) => { window.queuedId = n.uuid; } });
    while (!window.queuedId) await new Promise((r) => setTimeout(r, 5));
    return window.queuedId;
  }, [broker.ws, key]);

  const t0 = Date.now();
  await waitFor(async () => {
    const text = await row(dash, key).textContent({ timeout: 50 }).catch(() => '');
    return text.includes(lockId) && text.includes('1 waiting') && text.includes(waiterId);
  }, 5000, 'the dashboard row with the holder and its waiter', 20);
  const seenAfter = Date.now() - t0;
  const text = await row(dash, key).textContent();
  assert.ok(text.includes(`#${token}`), `fencing token #${token} in "${text}"`);
  assert.match(text, /\d+\.\d s/, 'held-for time');
  assert.equal(await dash.locator('#connections').textContent(), '3', 'dashboard + holder + waiter');
  assert.equal(await dash.locator('#holder-count').textContent(), '1');
  assert.equal(await dash.locator('#waiter-count').textContent(), '1');

  // Let "held for" tick once, then keep the picture.
  await dash.waitForTimeout(600);
  const shot = artifactPath('dashboard.png');
  await dash.screenshot({ path: shot, fullPage: true });
  console.log(`dashboard screenshot: ${shot} (row visible ${seenAfter} ms after the waiter queued)`);

  // The release hands the lock to the waiter; the dashboard follows.
  await holder.evaluate(() => held.release());
  const waiterLockId = await waiter.evaluate(async () => (await pending).id);
  const t1 = Date.now();
  await waitFor(async () => {
    const t = await row(dash, key).textContent({ timeout: 50 }).catch(() => '');
    return t.includes(waiterLockId) && !t.includes(lockId) && !t.includes('waiting');
  }, 5000, 'the waiter shown as the holder');
  console.log(`the handover shown ${Date.now() - t1} ms after the waiter got the lock`);
  await waiter.evaluate(async () => (await pending).release());
  await waitFor(async () => (await row(dash, key).count()) === 0, 5000, 'the free key leaves the table');

  // A page that closes is counted out.
  await holder.close();
  await waitFor(async () => (await dash.locator('#connections').textContent()) === '2', 5000, 'connection count 2');
  assert.ok(Number(await dash.locator('#rate').textContent()) >= 0);
  assert.deepEqual(dash.problems, []);
  await context.close();
});

test('the dashboard shows locks held before it opened, with their fencing tokens', async () => {
  const context = await browser.newContext();
  const key = uniqueKey('before');
  const { page: holder, ...r } = await holding(context, key, { max: 3 });
  await new Promise((resolve) => setTimeout(resolve, 1100));
  const dash = await openDashboard(context);
  const text = await row(dash, key).textContent();
  assert.ok(text.includes(r.id) && text.includes(`#${r.token}`), text);
  assert.match(text, /[1-9]\.\d s/, `held for over a second: "${text}"`);
  assert.equal(await row(dash, key).locator('td').last().textContent(), '3', 'max');
  await holder.evaluate(() => held.release());
  assert.deepEqual(dash.problems, []);
  await context.close();
});

test('the filter box hides keys that do not match', async () => {
  const context = await browser.newContext();
  const [a, b] = [uniqueKey('alpha'), uniqueKey('beta')];
  const holder = await lmxPage(context, broker);
  await holder.evaluate(async ([url, a, b]) => {
    window.client = await lmx.connect(url);
    window.locks = [await client.acquire(a, { ttl: 60000 }), await client.acquire(b, { ttl: 60000 })];
  }, [broker.ws, a, b]);
  const dash = await openDashboard(context);
  await waitFor(async () => (await row(dash, a).count()) === 1 && (await row(dash, b).count()) === 1, 5000, 'both keys');
  await dash.fill('#filter', 'beta');
  await waitFor(async () => (await row(dash, a).count()) === 0 && (await row(dash, b).count()) === 1, 5000, 'only beta');
  await dash.fill('#filter', 'no-such-key');
  assert.equal(await dash.locator('#empty').isVisible(), true);
  await dash.fill('#filter', '');
  await waitFor(async () => (await row(dash, a).count()) === 1, 5000, 'alpha back');
  // ?filter= fills the box in.
  const filtered = await openDashboard(context, `?filter=${encodeURIComponent(b)}`);
  assert.equal(await filtered.inputValue('#filter'), b);
  assert.equal(await row(filtered, a).count(), 0);
  assert.equal(await row(filtered, b).count(), 1);
  await holder.evaluate(() => Promise.all(locks.map((l) => l.release())));
  await context.close();
});

test('the dashboard fits a phone screen (in dark mode)', async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true,
    hasTouch: true, colorScheme: 'dark' });
  const key = uniqueKey('phone');
  const { page: holder } = await holding(context, key);
  const dash = await openDashboard(context);
  await waitFor(async () => (await row(dash, key).count()) === 1, 5000, 'the key row');
  const overflow = await dash.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  const background = await dash.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(background, 'rgb(15, 19, 24)', 'the dark palette');
  const shot = artifactPath('dashboard-phone.png');
  await dash.screenshot({ path: shot, fullPage: true });
  console.log(`dashboard phone screenshot: ${shot}`);
  await holder.evaluate(() => held.release());
  assert.deepEqual(dash.problems, []);
  await context.close();
});

test('after a broker restart the dashboard reconnects and shows the new state', async () => {
  const own = await startBroker();
  const context = await browser.newContext();
  let again;
  try {
    const key = uniqueKey('restart');
    const { page: holder } = await holding(context, key, {}, own);
    const dash = await openDashboard(context, '', own);
    await waitFor(async () => (await row(dash, key).count()) === 1, 5000, 'the key row');
    const port = own.port;
    await own.stop();
    await waitFor(async () => (await dash.locator('#status-text').textContent()) === 'reconnecting…', 5000, 'reconnecting shown');
    again = await restartBroker(port);
    await waitFor(async () => (await dash.locator('#status-text').textContent()) === 'live', 10000, 'live again');
    // The holder's client reconnected too, but its hold ended with the old broker.
    await waitFor(async () => (await row(dash, key).count()) === 0, 5000, 'the old hold gone');
    await holder.evaluate(async (key) => { window.again = await client.acquire(key, { ttl: 60000 }); }, key);
    await waitFor(async () => (await row(dash, key).count()) === 1, 5000, 'the new hold shown');
  } finally {
    await context.close();
    await again?.stop();
  }
});

test('a grant made while the dashboard takes its snapshot is not wiped by it', async () => {
  const context = await browser.newContext();
  const [early, late] = [uniqueKey('early'), uniqueKey('late')];
  const { page: holder } = await holding(context, early);
  // The dashboard's lock-info replies are held back until a grant of `late` has reached the page.
  const dash = await newPage(context);
  let hold = true;
  const heldBack = [];
  let lateGranted = false;
  let pageSide = null;
  await dash.routeWebSocket(/.*/, (ws) => {
    pageSide = ws;
    const server = ws.connectToServer();
    const infoIds = new Set();
    ws.onMessage((m) => {
      const msg = JSON.parse(m);
      if (msg.type === 'lock-info-request') infoIds.add(msg.uuid);
      server.send(m);
    });
    server.onMessage((m) => {
      const msg = JSON.parse(m);
      if (msg.type === 'event' && msg.event === 'granted' && msg.key === late) lateGranted = true;
      if (hold && infoIds.has(msg.uuid)) heldBack.push(m);
      else ws.send(m);
    });
  });
  await dash.goto(`${broker.http}/`);
  await waitFor(() => heldBack.length > 0, 5000, 'a lock-info reply held back');
  const lateId = await holder.evaluate(async (late) => { window.second = await client.acquire(late, { ttl: 60000 }); return second.id; }, late);
  await waitFor(() => lateGranted, 5000, 'the grant event of the late key sent to the page');
  await dash.waitForTimeout(200);
  // The replies held back go out now, in order, after that grant.
  hold = false;
  for (const m of heldBack.splice(0)) pageSide.send(m);
  await dash.waitForSelector('body[data-ready="true"]', { timeout: 5000 });
  await waitFor(async () => (await row(dash, early).count()) === 1, 5000, 'the key held before the snapshot');
  const text = await row(dash, late).textContent({ timeout: 5000 });
  assert.ok(text.includes(lateId), `the grant made during the snapshot is shown: "${text}"`);
  await holder.evaluate(() => Promise.all([held.release(), second.release()]));
  assert.deepEqual(dash.problems, []);
  await context.close();
});

test('a dashboard that cannot reach the broker at load shows "connecting…" and retries until it can', async () => {
  const context = await browser.newContext();
  const key = uniqueKey('late-start');
  const { page: holder, id: lockId } = await holding(context, key);
  const dash = await newPage(context);
  // The first three WebSocket connections of the page are closed at once, as by a broker that is down.
  let refused = 0;
  await dash.routeWebSocket(/.*/, (ws) => {
    if (refused < 3) {
      refused++;
      ws.close();
      return;
    }
    ws.connectToServer();
  });
  await dash.goto(`${broker.http}/`);
  await waitFor(async () => (await dash.locator('#status-text').textContent()) === 'connecting…' && refused >= 2, 5000, '"connecting…" while refused');
  assert.equal(await dash.locator('#status').getAttribute('data-state'), 'down');
  await dash.waitForSelector('body[data-ready="true"]', { timeout: 10000 });
  assert.equal(refused, 3);
  assert.equal(await dash.locator('#status-text').textContent(), 'live');
  assert.ok((await row(dash, key).textContent()).includes(lockId));
  await holder.evaluate(() => held.release());
  assert.deepEqual(dash.problems.filter((p) => !p.includes('WebSocket')), []);
  await context.close();
});
