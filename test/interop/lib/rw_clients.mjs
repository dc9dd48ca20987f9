// Test clients that speak live-mutex's read/write-lock protocol exactly as upstream live-mutex's
// current RW clients do (src/rw-client.ts, src/rw-write-preferred-client.ts, on the base Client of
// src/client.ts): the same frames, in the same order, with the same decisions on the answers
// (readersCount === 1 for the first and last reader), the same lock timers and retries, and the
// same acceptance rules for the write-preferring messages. No published npm version ships working
// RW clients, so these are written from those sources for the interop tests. Not copied code.

import net from 'node:net';
import { randomUUID } from 'node:crypto';

const CLIENT_VERSION = '0.2.27';

// The base client: one connection, requests matched to answers by uuid.
export class WireClient {
  constructor(connectOptions, { ttl = 7050, lockRequestTimeout = 3000, maxRetries = 3, unlockRequestTimeout = 8000 } = {}) {
    this.connectOptions = connectOptions;
    this.ttl = ttl;
    this.lockRequestTimeout = lockRequestTimeout;
    this.maxRetries = maxRetries;
    this.unlockRequestTimeout = unlockRequestTimeout;
    this.resolutions = new Map();
    this.errors = []; // what live-mutex's client would emit as 'error' events
    this.buffer = '';
  }

  connect() {
    return new Promise((resolve, reject) => {
      const o = this.connectOptions;
      this.socket = o.udsPath ? net.createConnection(o.udsPath) : net.createConnection(o.port, o.host);
      this.socket.setEncoding('utf8');
      this.socket.once('connect', () => {
        this.write({ type: 'version', value: CLIENT_VERSION });
        resolve(this);
      });
      this.socket.once('error', reject);
      this.socket.on('data', (d) => this.onData(d));
      this.socket.on('close', () => {
        this.closed = true;
        for (const fn of [...this.resolutions.values()]) fn(new Error('connection closed'), null);
      });
    });
  }

  // What the upstream client adds to every frame.
  write(data) {
    const frame = { ...data, max: data.max || null, pid: process.pid, keepLocksAfterDeath: Boolean(data.keepLocksAfterDeath) };
    if (frame.ttl === Infinity) frame.ttl = null;
    if (!this.closed) this.socket.write(JSON.stringify(frame) + '\n');
  }

  onData(chunk) {
    this.buffer += chunk;
    let nl;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (!line.trim()) continue;
      const data = JSON.parse(line);
      if (data.error) this.errors.push(data.error);
      if (!data.uuid) continue;
      const fn = this.resolutions.get(data.uuid);
      if (fn) fn(data.error, data);
    }
  }

  // lock(key, opts): resolves {id, key, readersCount, fencingToken}; rejects on an error answer,
  // a refusal (wait:false) or after maxRetries tries of lockRequestTimeout each (then it sends
  // lock-client-timeout, as upstream does).
  lock(key, opts = {}) {
    const uuid = opts._uuid || randomUUID();
    const ttl = opts.ttl || this.ttl;
    const maxRetries = opts.maxRetries ?? this.maxRetries;
    const timeout = opts.lockRequestTimeout || this.lockRequestTimeout;
    let retryCount = 0;
    return new Promise((resolve, reject) => {
      let timer;
      const send = () => {
        this.write({ type: 'lock', uuid, key, ttl, rwStatus: opts.rwStatus || null, max: opts.max, retryCount,
                     keepLocksAfterDeath: Boolean(opts.keepLocksAfterDeath) });
        timer = setTimeout(() => {
          this.resolutions.delete(uuid);
          retryCount += 1;
          if (retryCount >= maxRetries) {
            this.write({ type: 'lock-client-timeout', uuid, key });
            reject(Object.assign(new Error(`lock ${key} timed out`), { code: 'request_timeout' }));
          } else {
            this.resolutions.set(uuid, onAnswer);
            send();
          }
        }, timeout);
      };
      const onAnswer = (err, data) => {
        const done = () => { clearTimeout(timer); this.resolutions.delete(uuid); };
        if (err) { done(); return reject(Object.assign(new Error(String(err)), { code: data?.code })); }
        if (String(data.key) !== String(key)) { done(); return reject(new Error('key mismatch')); }
        if (data.acquired === true) {
          done();
          this.write({ type: 'lock-received', uuid, key });
          return resolve({ id: uuid, key, readersCount: Number.isInteger(data.readersCount) ? data.readersCount : null,
                           fencingToken: data.fencingToken ?? null });
        }
        if (data.acquired === false) {
          if (opts.wait === false) { done(); return reject(Object.assign(new Error('not free'), { code: 'wait_option_is_false' })); }
          return; // keep waiting
        }
        done();
        reject(new Error(`unexpected answer ${JSON.stringify(data)}`));
      };
      this.resolutions.set(uuid, onAnswer);
      send();
    });
  }

  unlock(key, opts = {}) {
    const uuid = randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.resolutions.delete(uuid); reject(new Error(`unlock ${key} timed out`)); },
                               this.unlockRequestTimeout);
      this.resolutions.set(uuid, (err, data) => {
        clearTimeout(timer);
        this.resolutions.delete(uuid);
        if (err) return reject(new Error(String(err)));
        if (data.unlocked === true) return resolve({ id: opts._uuid, key, unlocked: true });
        reject(new Error(`unlock failed: ${JSON.stringify(data)}`));
      });
      const frame = { type: 'unlock', uuid, key, rwStatus: opts.rwStatus || null, force: Boolean(opts.force) };
      if (opts._uuid !== undefined) frame._uuid = opts._uuid;
      this.write(frame);
    });
  }

  // The write-preferring messages: no timer, no retry. register-write-flag-check takes only a
  // register-write-flag-success as its answer; the others take the first message with their uuid.
  helper(type, key) {
    const uuid = randomUUID();
    return new Promise((resolve, reject) => {
      this.resolutions.set(uuid, (err, data) => {
        if (type === 'register-write-flag-check' && data && data.type !== 'register-write-flag-success') return;
        this.resolutions.delete(uuid);
        if (err) return reject(new Error(String(err)));
        if (!data) return reject(new Error('connection closed'));
        resolve(data);
      });
      this.write({ type, uuid, key });
    });
  }

  // Gone at once, as a crashed process is.
  destroy() {
    this.closed = true;
    this.socket.destroy();
  }
}

// RWLockClient (= RWLockReadPrefClient): a read key R and a write key W the caller names.
export class ReadPrefClient extends WireClient {
  async beginRead(key, { writeKey, max, ttl } = {}) {
    const r = await this.lock(key, { rwStatus: 'begin_read', max: max ?? 10, ttl });
    if (!Number.isInteger(r.readersCount)) throw new Error('missing "readersCount"');
    if (r.readersCount === 1) {
      // The first reader locks the write key (with the client's ttl), then lets go of R.
      try {
        await this.lock(writeKey, { rwStatus: 'locking_write_key' });
      } catch (e) {
        await this.unlock(key, { _uuid: r.id, rwStatus: 'begin_read', force: false });
        throw e;
      }
    }
    await this.unlock(key, { _uuid: r.id, rwStatus: 'begin_read', force: false });
    return { release: () => this.endRead(key, { writeKey }) };
  }

  async endRead(key, { writeKey }) {
    const r = await this.lock(key, { rwStatus: 'end_read', max: 1 });
    if (!Number.isInteger(r.readersCount)) throw new Error('Implementation error, missing "readersCount".');
    await this.unlock(key, { _uuid: r.id, rwStatus: 'end_read', force: false });
    if (r.readersCount === 1) await this.unlock(writeKey, { force: true, rwStatus: 'unlocking_write_key' });
  }

  async beginWrite(key, { ttl } = {}) {
    await this.lock(key, { rwStatus: 'begin_write', max: 1, ttl });
    return { release: () => this.endWrite(key) };
  }

  async endWrite(key) {
    await this.unlock(key, { rwStatus: 'end_write', force: true });
  }
}

// RWLockWritePrefClient: one key; readers and writers hold it for the whole section.
export class WritePrefClient extends WireClient {
  async acquireReadLock(key, { max, ttl } = {}) {
    await this.helper('register-write-flag-check', key);
    const r = await this.lock(key, { max: max ?? 10, ttl });
    try {
      await this.helper('increment-readers', key);
    } catch (e) {
      this.unlock(key, { _uuid: r.id, force: false }).catch(() => {});
      throw e;
    }
    return { release: () => this.releaseReadLock(key, r.id) };
  }

  async releaseReadLock(key, id) {
    await this.helper('decrement-readers', key);
    await this.unlock(key, { _uuid: id, force: false });
  }

  async acquireWriteLock(key, { ttl } = {}) {
    const r = await this.lock(key, { max: 1, ttl });
    try {
      await this.helper('register-write-flag-and-readers-check', key);
    } catch (e) {
      await this.unlock(key, { _uuid: r.id, force: false });
      throw e;
    }
    return { release: () => this.releaseWriteLock(key, r.id) };
  }

  async releaseWriteLock(key, id) {
    await this.unlock(key, { _uuid: id, force: false });
    await this.helper('set-write-flag-false-and-broadcast', key).catch(() => {});
  }
}
