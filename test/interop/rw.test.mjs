// live-mutex's read/write-lock clients against a real lmx broker, with test clients that follow
// upstream's current RW clients frame for frame (lib/rw_clients.mjs). The guarantee checked: while
// an RW reader is between the completion of its begin-read and its end-read, no RW writer is in
// (its begin-write completed, its end-write not sent), and while a writer is in, no reader is.
// Each scenario also states where live-mutex's own broker lets the two overlap.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startBroker, sleep, withTimeout } from './lib/harness.mjs';
import { ReadPrefClient, WritePrefClient } from './lib/rw_clients.mjs';

let broker;
const clients = [];

async function make(Kind, opts = {}) {
  const c = new Kind(broker.connectOptions('tcp'), opts);
  clients.push(c);
  await c.connect();
  return c;
}

let n = 0;
const fresh = (p) => `${p}-${++n}-${Date.now()}`;

// Whether `p` is still unsettled after `ms`.
async function pending(p, ms = 300) {
  let settled = false;
  p.then(() => { settled = true; }, () => { settled = true; });
  await sleep(ms);
  return !settled;
}

const within = (p, what, ms = 5000) => withTimeout(p, ms, what);

before(async () => { broker = await startBroker(); });
after(async () => {
  for (const c of clients) if (!c.closed) c.destroy();
  await broker.stop();
});

describe('read-preferring clients (RWLockClient)', () => {
  test('readers share the lock', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    const a = await make(ReadPrefClient), b = await make(ReadPrefClient);
    const ra = await within(a.beginRead(R, { writeKey: W }), 'first reader');
    const rb = await within(b.beginRead(R, { writeKey: W }), 'second reader while the first reads');
    await ra.release();
    await rb.release();
    assert.deepEqual(a.errors.concat(b.errors), []);
  });

  test('a writer waits for every reader; live-mutex lets it in when the first of two readers leaves', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    const a = await make(ReadPrefClient), b = await make(ReadPrefClient), x = await make(ReadPrefClient);
    const ra = await within(a.beginRead(R, { writeKey: W }), 'a');
    const rb = await within(b.beginRead(R, { writeKey: W }), 'b');
    const wx = x.beginWrite(W);
    assert.ok(await pending(wx), 'writer got in while two readers read');
    await ra.release();  // upstream's broker answers readersCount 1 here and a frees W: the bug
    assert.ok(await pending(wx), 'writer got in while the second reader still reads');
    await rb.release();
    const hx = await within(wx, 'writer after the last reader');
    await hx.release();
  });

  test('readers wait for a writer', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    const x = await make(ReadPrefClient), a = await make(ReadPrefClient), b = await make(ReadPrefClient);
    const hx = await within(x.beginWrite(W), 'writer');
    const ra = a.beginRead(R, { writeKey: W });
    const rb = b.beginRead(R, { writeKey: W });
    assert.ok(await pending(ra), 'first reader got in while the writer writes');
    assert.ok(await pending(rb, 50), 'second reader got in while the writer writes');
    await hx.release();
    const [ha, hb] = await within(Promise.all([ra, rb]), 'readers after the writer');
    const wy = (await make(ReadPrefClient)).beginWrite(W);
    assert.ok(await pending(wy), 'a writer got in while readers read');
    await ha.release();
    await hb.release();
    await (await within(wy, 'writer after the readers')).release();
  });

  test('a reader whose connection closes has ended its read; the write key stays taken for the others', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    const a = await make(ReadPrefClient), b = await make(ReadPrefClient), x = await make(ReadPrefClient);
    await within(a.beginRead(R, { writeKey: W }), 'first reader (takes W)');
    const rb = await within(b.beginRead(R, { writeKey: W }), 'second reader');
    const wx = x.beginWrite(W);
    a.destroy();  // the reader that took the write key dies; live-mutex releases W here
    assert.ok(await pending(wx, 500), 'writer got in while a reader still reads');
    await rb.release();
    await (await within(wx, 'writer after the last reader')).release();
    // The only reader dies: the writer goes in.
    const c = await make(ReadPrefClient);
    await within(c.beginRead(R, { writeKey: W }), 'reader');
    const wy = x.beginWrite(W);
    assert.ok(await pending(wy), 'writer got in while the reader reads');
    c.destroy();
    await (await within(wy, 'writer after the reader died')).release();
  });

  test('a writer whose connection closes lets readers in', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    const x = await make(ReadPrefClient), a = await make(ReadPrefClient);
    await within(x.beginWrite(W), 'writer');
    const ra = a.beginRead(R, { writeKey: W });
    assert.ok(await pending(ra), 'reader got in while the writer writes');
    x.destroy();
    await (await within(ra, 'reader after the writer died')).release();
  });

  test('the write key does not expire under the readers; a late end-write never ends the next writer', async () => {
    const [R, W] = [fresh('r'), fresh('w')];
    // The first reader locks W with its client's ttl (300 ms); live-mutex's broker frees W then.
    const a = await make(ReadPrefClient, { ttl: 300 }), x = await make(ReadPrefClient);
    const ra = await within(a.beginRead(R, { writeKey: W }), 'reader');
    const wx = x.beginWrite(W);
    assert.ok(await pending(wx, 800), 'writer got in after the first reader\'s ttl, while it reads');
    await ra.release();
    await (await within(wx, 'writer')).release();

    // A writer's own lease does run out: the next writer goes in, and the first writer's late
    // end-write (force, no lock id) must not end the second one's hold.
    const y = await make(ReadPrefClient), z = await make(ReadPrefClient), v = await make(ReadPrefClient);
    const hy = await within(y.beginWrite(W, { ttl: 300 }), 'writer with a short lease');
    const hz = await within(z.beginWrite(W), 'next writer, after the lease', 3000);
    await hy.release();  // late
    const wv = v.beginWrite(W);
    assert.ok(await pending(wv), 'a third writer got in while the second writes');
    await hz.release();
    await (await within(wv, 'third writer')).release();
  });
});

describe('write-preferring clients (RWLockWritePrefClient)', () => {
  test('readers share; a writer waits for them', async () => {
    const K = fresh('k');
    const a = await make(WritePrefClient), b = await make(WritePrefClient), x = await make(WritePrefClient);
    const ha = await within(a.acquireReadLock(K), 'reader a');
    const hb = await within(b.acquireReadLock(K), 'reader b while a reads');
    const wx = x.acquireWriteLock(K);
    assert.ok(await pending(wx), 'writer got in while readers read');
    await ha.release();
    assert.ok(await pending(wx), 'writer got in while a reader still reads');
    await hb.release();
    await (await within(wx, 'writer after the readers')).release();
  });

  test('writers go first: a reader arriving while a writer waits waits too', async () => {
    const K = fresh('k');
    const a = await make(WritePrefClient), x = await make(WritePrefClient), c = await make(WritePrefClient);
    const ha = await within(a.acquireReadLock(K), 'reader');
    const wx = x.acquireWriteLock(K);
    await sleep(100);
    const rc = c.acquireReadLock(K);
    assert.ok(await pending(rc), 'a new reader went in ahead of the waiting writer');
    await ha.release();
    const hx = await within(wx, 'writer');
    assert.ok(await pending(rc), 'a reader went in while the writer writes');
    await hx.release();
    await (await within(rc, 'reader after the writer')).release();
  });

  test('two writers never together; readers wait for a writer', async () => {
    const K = fresh('k');
    const x = await make(WritePrefClient), y = await make(WritePrefClient), a = await make(WritePrefClient);
    const hx = await within(x.acquireWriteLock(K), 'writer x');
    const wy = y.acquireWriteLock(K);
    const ra = a.acquireReadLock(K);
    assert.ok(await pending(wy), 'a second writer got in');
    assert.ok(await pending(ra, 50), 'a reader got in while x writes');
    await hx.release();
    const first = await within(Promise.race([wy.then(() => 'y'), ra.then(() => 'a')]), 'next after x');
    if (first === 'y') {
      assert.ok(await pending(ra), 'a reader got in while y writes');
      await (await wy).release();
      await (await within(ra, 'reader')).release();
    } else {
      assert.ok(await pending(wy), 'y got in while a reads');
      await (await ra).release();
      await (await within(wy, 'writer y')).release();
    }
  });

  test('a writer that dies with the flag set, and a reader that dies, free the others', async () => {
    const K = fresh('k');
    const x = await make(WritePrefClient), a = await make(WritePrefClient), y = await make(WritePrefClient);
    await within(x.acquireWriteLock(K), 'writer');
    const ra = a.acquireReadLock(K);
    assert.ok(await pending(ra), 'reader got in while the writer writes');
    x.destroy();  // live-mutex leaves the writer flag set forever: everyone hangs
    const ha = await within(ra, 'reader after the writer died');
    const wy = y.acquireWriteLock(K);
    assert.ok(await pending(wy), 'writer got in while the reader reads');
    a.destroy();  // live-mutex keeps counting the dead reader: writers wait forever
    await (await within(wy, 'writer after the reader died')).release();
    void ha;
  });

  test('leases: a reader past its ttl still keeps writers out, a writer past its ttl still keeps others out', async () => {
    const K = fresh('k');
    const a = await make(WritePrefClient, { ttl: 300 }), x = await make(WritePrefClient);
    const ha = await within(a.acquireReadLock(K), 'reader with a short lease');
    const wx = x.acquireWriteLock(K);
    assert.ok(await pending(wx, 800), 'writer got in while the reader reads (after its lease)');
    await ha.release().catch(() => {});  // its unlock may find the hold gone: the reader has left
    const hx = await within(wx, 'writer');
    await hx.release();

    const y = await make(WritePrefClient, { ttl: 300 }), z = await make(WritePrefClient), b = await make(WritePrefClient);
    const hy = await within(y.acquireWriteLock(K), 'writer with a short lease');
    const wz = z.acquireWriteLock(K);
    const rb = b.acquireReadLock(K);
    assert.ok(await pending(wz, 800), 'a second writer got in while the first writes (after its lease)');
    assert.ok(await pending(rb, 50), 'a reader got in while the first writer writes (after its lease)');
    await hy.release().catch(() => {});
    const next = await within(Promise.race([wz.then((h) => ['z', h]), rb.then((h) => ['b', h])]), 'next after y');
    await next[1].release();
    const other = next[0] === 'z' ? rb : wz;
    await (await within(other, 'the other one')).release();
  });
});

describe('requests lmx does not serve', () => {
  test('are answered in their own type, so the client fails them instead of waiting', async () => {
    const c = await make(ReadPrefClient);
    const answer = await within(new Promise((resolve) => {
      const uuid = 'unknown-1';
      c.resolutions.set(uuid, (err, data) => resolve({ err, data }));
      c.write({ type: 'simulate-version-mismatch', uuid, key: 'k' });
    }), 'answer');
    assert.equal(answer.data.type, 'simulate-version-mismatch');
    assert.equal(answer.data.code, 'unknown_type');
    assert.ok(answer.err, 'the answer carries an error');
    assert.notEqual(answer.data.acquired, true);
  });
});
