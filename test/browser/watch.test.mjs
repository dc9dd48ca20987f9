// client.watch in lmx.js, in headless Chromium against a real broker: which keys a call means
// (any iterable; never a string split into characters; never "every key" by accident), and
// subscriptions whose keys add up to more than the broker watches at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, restartBroker, waitFor, uniqueKey, brokerAndBrowser, connectedPage as connectTo } from './lib/browser.mjs';

let broker;
let browser;
let context;
brokerAndBrowser((s) => ({ broker, browser, context } = s));

async function connectedPage(b = broker) {
  const page = await connectTo(context, b);
  await page.evaluate(() => {
    // Takes and releases each key; then a ping, whose answer comes after every event before it.
    window.touch = async (...keys) => {
      for (const k of keys) await (await client.acquire(k, { ttl: 10000 })).release();
      await client.ping();
    };
  });
  return page;
}

test('watch takes any iterable of keys; a string or no keys is refused, null or only a callback means every key', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const [a, b, c, other] = [uniqueKey('a'), uniqueKey('b'), uniqueKey('c'), uniqueKey('other')];
  const r = await page.evaluate(async ([a, b, c, other]) => {
    const code = (p) => p.then(() => 'ok', (e) => `${e.code}: ${e.message}`);
    const seen = { set: [], gen: [], all: [], nullAll: [] };
    function* gen() { yield b; yield c; }
    const subs = [
      await client.watch(new Set([a]), (e) => seen.set.push(e.key)),
      await client.watch(gen(), (e) => seen.gen.push(e.key)),
      await client.watch((e) => { if (e.key !== undefined) seen.all.push(e.key); }),
      await client.watch(null, (e) => { if (e.key !== undefined) seen.nullAll.push(e.key); }),
    ];
    const refused = {
      string: await code(client.watch(a, () => {})),
      emptyArray: await code(client.watch([], () => {})),
      emptySet: await code(client.watch(new Set(), () => {})),
      undefinedKeys: await code(client.watch(undefined, () => {})),
      noCallback: await code(client.watch([a])),
      emptyKey: await code(client.watch([''], () => {})),
    };
    await touch(a, b, c, other);
    const keys = subs.map((s) => s.keys);
    for (const s of subs) await s.unsubscribe();
    return { seen, refused, keys };
  }, [a, b, c, other]);
  assert.deepEqual(r.seen.set, [a, a]);
  assert.deepEqual(r.seen.gen, [b, b, c, c]);
  for (const all of [r.seen.all, r.seen.nullAll]) {
    assert.deepEqual(all.filter((k) => [a, b, c, other].includes(k)), [a, a, b, b, c, c, other, other]);
  }
  assert.deepEqual(r.keys, [[a], [b, c], null, null]);
  assert.match(r.refused.string, /^bad_request: .*iterable of keys/);
  assert.match(r.refused.emptyArray, /^bad_request: .*no keys/);
  assert.match(r.refused.emptySet, /^bad_request: .*no keys/);
  assert.match(r.refused.undefinedKeys, /^bad_request/);
  assert.match(r.refused.noCallback, /^bad_request: .*callback/);
  assert.match(r.refused.emptyKey, /^bad_request: .*must not be empty/);
  await page.close();
});

test('subscriptions over more keys than the broker watches at once are merged, each still getting only its own keys', { timeout: 60_000 }, async () => {
  const page = await connectedPage();
  const first = Array.from({ length: 40 }, (_, i) => uniqueKey(`first-${i}`));
  const second = Array.from({ length: 40 }, (_, i) => uniqueKey(`second-${i}`));
  const outside = uniqueKey('outside');
  const r = await page.evaluate(async ([first, second, outside]) => {
    const seen = { first: [], second: [], client: [] };
    client.addEventListener('event', (e) => seen.client.push(e.detail.event === 'connections' ? 'connections' : e.detail.key));
    const a = await client.watch(first, (e) => seen.first.push(e.event === 'connections' ? 'connections' : e.key));
    const b = await client.watch(second, (e) => seen.second.push(e.event === 'connections' ? 'connections' : e.key));
    // Another connection opening and closing: a connections event, only for watchers of every key.
    (await window.lmx.connect(client.url)).close();
    await touch(first[0], first[39], second[0], second[39], outside);
    const merged = structuredClone(seen);
    await b.unsubscribe();
    for (const k of Object.keys(seen)) seen[k].length = 0;
    await touch(first[1], second[1], outside);
    return { merged, afterUnsubscribe: seen };
  }, [first, second, outside]);
  assert.deepEqual(r.merged.first, [first[0], first[0], first[39], first[39]]);
  assert.deepEqual(r.merged.second, [second[0], second[0], second[39], second[39]]);
  assert.deepEqual(r.merged.client, [first[0], first[0], first[39], first[39], second[0], second[0], second[39], second[39]],
    'the client\'s "event" carries only what a subscription asked for');
  assert.deepEqual(r.afterUnsubscribe, { first: [first[1], first[1]], second: [], client: [first[1], first[1]] });
  await page.close();
});

test('merged subscriptions are renewed after a reconnect', { timeout: 60_000 }, async () => {
  const own = await startBroker({ args: ['--max-keys', '3'] });
  const page = await connectedPage(own);
  const keys = Array.from({ length: 5 }, (_, i) => uniqueKey(`k${i}`));
  await page.evaluate(async (keys) => {
    window.seen = [];
    window.connects = 0;
    client.addEventListener('connect', () => connects++);
    await client.watch(keys.slice(0, 3), (e) => seen.push(e.key));
    await client.watch(keys.slice(3), (e) => seen.push(e.key));
  }, keys);
  const port = own.port;
  await own.stop();
  const again = await restartBroker(port, { args: ['--max-keys', '3'] });
  try {
    await waitFor(() => page.evaluate(() => connects === 1), 8000, 'the client reconnected');
    const seen = await page.evaluate(async (keys) => {
      await touch(keys[0], keys[4]);
      return seen;
    }, keys);
    assert.deepEqual(seen, [keys[0], keys[0], keys[4], keys[4]]);
  } finally {
    await page.close();
    await again.stop();
  }
});
