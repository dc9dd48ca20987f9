// lmx.js: the browser client of the lmx broker, served by the broker at /lmx.js.
// A dependency-free ES module speaking the lmx wire protocol (docs/protocol.md), one JSON
// message per WebSocket text frame. Declarations: /lmx.d.ts. Guide: docs/browser.md.
//
//   import { connect } from "http://127.0.0.1:6971/lmx.js";
//   const client = await connect("ws://127.0.0.1:6971/");
//   {
//     await using lock = await client.acquire("doc:42", { ttl: 10000 });  // released on scope exit
//     console.log(lock.fencingToken);
//   }

/** Protocol version spoken in the hello handshake. */
export const PROTOCOL = 1;

/** The error codes, named like the C++ client's lmx::errc. */
export const errc = Object.freeze({
  timeout: "timeout",
  would_block: "would_block",
  connection_lost: "connection_lost",
  unreachable: "unreachable",
  broker_incompatible: "broker_incompatible",
  bad_request: "bad_request",
  not_holder: "not_holder",
  cancelled: "cancelled",
  too_many_waiters: "too_many_waiters",
  duplicate_request: "duplicate_request",
  lock_lost: "lock_lost",
  closed: "closed",
  invalid_url: "invalid_url",
  shutting_down: "shutting_down",
  unavailable: "unavailable",
  lease_expired: "lease_expired",
  forced: "forced",
  released: "released",
  not_held: "not_held",
  refused: "refused",
  name_not_resolved: "name_not_resolved",
  wrong_endpoint: "wrong_endpoint",
  origin_refused: "origin_refused",
});

const messages = {
  timeout: "the lock was not granted within the timeout",
  would_block: "the lock is not free (try-lock)",
  connection_lost: "the connection to the broker was lost",
  unreachable: "no broker answers at the URL",
  broker_incompatible: "the peer is not a compatible lmx broker",
  bad_request: "the broker refused the request as invalid",
  not_holder: "the lock id does not hold the key",
  cancelled: "the operation was cancelled",
  too_many_waiters: "the broker's waiter limit is reached",
  duplicate_request: "the request id is already in use",
  lock_lost: "the lock was lost (ttl expired or forced)",
  closed: "the client is closed",
  invalid_url: "the broker URL is invalid",
  shutting_down: "the broker is shutting down",
  unavailable: "the broker cannot grant locks now (its fencing state cannot be persisted)",
  lease_expired: "the lock's lease ran out",
  forced: "another client ended the lock",
  released: "the lock was released",
  not_held: "the lock id held nothing on the key",
  refused: "the broker's address refused the connection",
  name_not_resolved: "the broker's host name did not resolve",
  wrong_endpoint: "the peer does not speak lmx's protocol",
  origin_refused: "the broker refuses connections from this origin (see its --allow-origin)",
};

/** A failed lmx operation; `code` is one of `errc`. */
export class LmxError extends Error {
  constructor(code, detail, options) {
    super(detail ? `${messages[code] ?? code}: ${detail}` : (messages[code] ?? code), options);
    this.name = "LmxError";
    this.code = code;
  }
}

// The errc for a broker `code` string; bad_request for codes it does not know.
function fromWire(code) {
  switch (code) {
    case "timeout":
    case "cancelled":
    case "not_holder":
    case "too_many_waiters":
    case "duplicate_request":
    case "shutting_down":
    case "unavailable":
      return code;
    case "not_found":
      return errc.not_holder;
    case "version_mismatch":
      return errc.broker_incompatible;
    default:
      return errc.bad_request;
  }
}

function wireError(reply) {
  return new LmxError(fromWire(reply.code), reply.error);
}

// `await using` needs Symbol.asyncDispose; where the engine lacks it, the well-known
// registered symbol keeps explicit calls working.
const asyncDispose = Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose");
const dispose = Symbol.dispose ?? Symbol.for("Symbol.dispose");

const defaults = {
  ttl: 4000, // lease of a lock that names none (ms)
  lockRequestTimeout: 3000, // one try of a waiting acquire (ms)
  maxRetries: 3, // tries of a waiting acquire: the default wait is lockRequestTimeout x maxRetries
  keepLocksOnExit: false,
  connectTimeout: 5000,
  requestTimeout: 10000, // replies to non-lock requests
  reconnect: true,
  minBackoff: 50,
  maxBackoff: 2000,
};

// A connection that stays up this long (ms) restarts the reconnect backoff from minBackoff.
const stableAfter = 5000;
// Sent for a watch set whose state at the broker is unknown (a watch or unwatch that failed).
const unknownWatch = Symbol("unknown");

function randomPrefix() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = new Uint8Array(8);
  globalThis.crypto.getRandomValues(bytes);
  let p = "";
  for (const b of bytes) p += alphabet[b & 63];
  return p;
}

// The ws:// URL of the broker that served this module (for connect() without a URL).
function ownBrokerUrl() {
  const u = new URL("/", import.meta.url);
  if (u.protocol !== "http:" && u.protocol !== "https:") return null;
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

function normalizeUrl(url) {
  let u;
  try {
    u = new URL(url ?? ownBrokerUrl());
  } catch {
    throw new LmxError(errc.invalid_url, String(url));
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new LmxError(errc.invalid_url, `${url}: not ws:// or wss://`);
  return u.href;
}

function ttlField(ttl) {
  if (ttl === null || ttl === Infinity) return null; // never expires
  if (!Number.isSafeInteger(ttl) || ttl < 0) throw new LmxError(errc.bad_request, `ttl ${ttl}: not a whole number of ms`);
  return ttl;
}

function abortReason(signal) {
  return new LmxError(errc.cancelled, "aborted", { cause: signal.reason });
}

/**
 * One hold of one key. Dispatches a "lost" event (and calls `onlost`) when the broker ends the
 * hold without this client's release: ttl expiry, a force, or the connection dropping.
 */
export class Lock extends EventTarget {
  #client;
  #lost = false;
  #released = false;
  #releasing = false;

  constructor(client, key, id, fencingToken, keep) {
    super();
    this.#client = client;
    /** The key held. */
    this.key = key;
    /** The lock id (the uuid of the request that obtained it). */
    this.id = id;
    /** Strictly increasing across all grants of the broker. */
    this.fencingToken = fencingToken;
    /** Whether the hold survives this client's connection closing. */
    this.keepLocksOnExit = keep;
    /** Why the hold was lost: "ttl", "forced", "disconnected" or "closed"; null while not lost. */
    this.lostReason = null;
    /** Called with the "lost" event. */
    this.onlost = null;
  }

  /** True after the hold ended without this client's release. */
  get lost() {
    return this.#lost;
  }
  /** True after release() was called. */
  get released() {
    return this.#released;
  }
  /** True while the hold is neither released nor lost, as far as this client knows. */
  get held() {
    return !this.#lost && !this.#released;
  }

  /**
   * Confirmed release. Rejects with `lock_lost` when the hold had already ended. When no answer
   * comes (`connection_lost`, `timeout`, ...) the lock stays as it was: still held unless the
   * connection loss ended it (then `lost`), so that release() can be tried again.
   */
  async release() {
    if (this.#lost) throw new LmxError(errc.lock_lost, this.key);
    if (this.#released) throw new LmxError(errc.not_holder, `${this.key} was already released`);
    if (this.#releasing) throw new LmxError(errc.not_holder, `${this.key} is being released`);
    this.#releasing = true;
    let ended;
    try {
      ended = this._ended(await this.#client._call(this._releaseMessage()));
    } catch (e) {
      if (e.code !== errc.not_holder) throw e;
      ended = e.message;
    } finally {
      this.#releasing = false;
    }
    this.#client._forget(this.id);
    if (!ended) {
      this.#released = true;
      return;
    }
    this.#lost = true;
    this.lostReason ??= "ttl";
    throw new LmxError(errc.lock_lost, ended);
  }

  _releaseMessage() {
    return { type: "unlock", key: this.key, _uuid: this.id };
  }

  // Why the release found the hold already ended, or null. The broker answers an unlock of a
  // hold that already ended with a warning.
  _ended(reply) {
    return !reply.unlocked || reply.warning ? (reply.warning ?? reply.error ?? this.key) : null;
  }

  /** Renews the lease: it now ends `ttl` ms from now (null: never). Resolves to ms left, or null. */
  async extend(ttl) {
    if (this.#lost) throw new LmxError(errc.lock_lost, this.key);
    if (this.#released) throw new LmxError(errc.not_holder, `${this.key} was released`);
    try {
      const reply = await this.#client._call({ type: "extend", key: this.key, _uuid: this.id, ttl: ttlField(ttl) });
      return reply.expiresInMs ?? null;
    } catch (e) {
      if (e.code === errc.not_holder) {
        this._markLost("ttl");
        this.#client._forget(this.id);
        throw new LmxError(errc.lock_lost, e.message);
      }
      throw e;
    }
  }

  /**
   * Releases at the end of an `await using` scope. A hold that is already gone (released, lost, or
   * ended by the connection loss that failed the release) is not an error; any other failure is
   * thrown, since the hold may still be in place at the broker.
   */
  async [asyncDispose]() {
    if (!this.held) return;
    try {
      await this.release();
    } catch (e) {
      if (!this.#lost) throw e;
    }
  }

  _markLost(reason) {
    if (this.#lost || this.#released) return;
    this.#client._forget(this.id);
    this.#lost = true;
    this.lostReason = reason;
    const ev = new Event("lost");
    ev.reason = reason;
    ev.lock = this;
    if (typeof this.onlost === "function") {
      try {
        this.onlost(ev);
      } catch (e) {
        reportError(e);
      }
    }
    this.dispatchEvent(ev);
    this.#client.dispatchEvent(Object.assign(new Event("lost"), { reason, lock: this }));
  }
}

/** A hold of several keys taken at once by acquireMany; released (or lost) as a whole. */
export class MultiLock extends Lock {
  constructor(client, keys, id, fencingTokens, keep) {
    super(client, keys[0], id, Math.max(0, ...Object.values(fencingTokens)), keep);
    /** The keys held, sorted. */
    this.keys = keys;
    /** The fencing token of each key. */
    this.fencingTokens = fencingTokens;
  }

  _releaseMessage() {
    return { type: "release-many", lockUuid: this.id };
  }

  _ended(reply) {
    return reply.released ? null : (reply.error ?? this.keys.join(", "));
  }
}

function reportError(e) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(e);
  else queueMicrotask(() => { throw e; });
}

/** A watch subscription; `unsubscribe()` (or `await using`) ends it. */
export class Subscription {
  #client;
  constructor(client, keys, callback) {
    this.#client = client;
    /** The keys watched, or null for every key. */
    this.keys = keys;
    this.callback = callback;
    this.active = true;
  }
  /** Stops the callbacks; the broker stops sending events once no subscription wants them. */
  async unsubscribe() {
    if (!this.active) return;
    this.active = false;
    await this.#client._unwatch(this);
  }
  async [asyncDispose]() {
    await this.unsubscribe().catch(() => {});
  }
  [dispose]() {
    this.unsubscribe().catch(() => {});
  }
}

/**
 * A connection to one broker, reconnecting with backoff when it drops. Events: "connect",
 * "disconnect" (detail in `error`), "lost" (a hold was lost; `lock`, `reason`), "event" (every
 * watch event; `data`).
 */
export class Client extends EventTarget {
  #url;
  #opt;
  #ws = null;
  #state = "disconnected"; // disconnected | connecting | connected | closed
  #ready = null; // promise of the connection attempt in progress
  #failures = 0; // attempts failed (or connections dropped before stableAfter) since the last stable one
  #scheduled = null; // the next background attempt: {timer, promise, resolve, reject}
  #stableTimer = null;
  #openFail = null; // fails the connection attempt in progress
  #prefix = randomPrefix();
  #counter = 0;
  #pending = new Map(); // request uuid -> {resolve, reject, queued?}
  #holds = new Map(); // lock id -> Lock
  #abandoned = new Map(); // request uuid -> {key, keep}: give back a grant that crossed a cancel
  #orphans = new Map(); // request uuid -> key: kept-on-exit requests whose answer a drop cut off
  #subscriptions = new Set();
  #watchedKeys = undefined; // what the broker confirmed watching: undefined none, null all
  #watchSync = Promise.resolve(); // watch changes, one after the other

  constructor(url, options = {}) {
    super();
    this.#url = normalizeUrl(url);
    this.#opt = { ...defaults, ...options };
    /** The session name the broker gave this connection. */
    this.session = null;
    /** The broker's name and version, from the hello handshake. */
    this.broker = null;
  }

  /** The broker's ws:// URL. */
  get url() {
    return this.#url;
  }
  /** "disconnected", "connecting", "connected" or "closed". */
  get state() {
    return this.#state;
  }

  #nextId() {
    return `${this.#prefix}.${(++this.#counter).toString(36)}`;
  }

  /**
   * Connects, or waits for the attempt in progress or the next scheduled one; other calls connect
   * on first use too.
   */
  connect() {
    return this.#ensureConnected();
  }

  // While a reconnect is scheduled, calls wait for that attempt instead of starting their own.
  #ensureConnected() {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#state === "closed") return Promise.reject(new LmxError(errc.closed));
    if (this.#ready) return this.#ready;
    if (this.#scheduled) return this.#scheduled.promise;
    return this.#attempt();
  }

  // One connection attempt; when it fails and reconnect is on, the next one is scheduled (not
  // for a URL the WebSocket constructor refused: no retry can succeed).
  #attempt() {
    const attempt = this.#open();
    this.#ready = attempt;
    attempt.then(
      () => {
        if (this.#ready === attempt) this.#ready = null;
      },
      (e) => {
        if (this.#ready === attempt) this.#ready = null;
        if (e.code !== errc.invalid_url) this.#scheduleReconnect();
      },
    );
    return attempt;
  }

  #open() {
    this.#state = "connecting";
    return new Promise((resolve, reject) => {
      const WS = this.#opt.WebSocket ?? globalThis.WebSocket;
      let ws;
      try {
        ws = new WS(this.#url);
      } catch (e) {
        this.#state = "disconnected";
        reject(new LmxError(errc.invalid_url, e.message, { cause: e }));
        return;
      }
      this.#ws = ws;
      let settled = false;
      const fail = (code, detail) => {
        if (settled) return;
        settled = true;
        this.#openFail = null;
        clearTimeout(timer);
        this.#failures++;
        if (this.#state === "closed") code = errc.closed;
        if (this.#ws === ws) this.#drop(new LmxError(code, detail));
        reject(new LmxError(code, detail));
      };
      this.#openFail = fail;
      const timer = setTimeout(() => fail(errc.unreachable, `${this.#url}: no answer within ${this.#opt.connectTimeout} ms`),
        this.#opt.connectTimeout);
      ws.onmessage = (m) => this.#route(m.data);
      // Browsers tell a refused upgrade (a foreign Origin) from a dead port by nothing at all.
      ws.onerror = () => fail(errc.unreachable, this.#url);
      ws.onclose = (ev) => {
        if (!settled) fail(errc.unreachable, `${this.#url} (close ${ev.code})`);
        else if (this.#ws === ws) this.#drop(new LmxError(errc.connection_lost, `close ${ev.code}`));
      };
      ws.onopen = () => {
        // The hello handshake tells an lmx broker from anything else.
        const uuid = this.#nextId();
        this.#pending.set(uuid, {
          hello: true,
          resolve: (reply) => {
            if (reply.type !== "hello" || reply.protocol !== PROTOCOL) {
              fail(errc.broker_incompatible, `answer to hello: ${JSON.stringify(reply)}`);
              return;
            }
            if (settled) return;
            settled = true;
            this.#openFail = null;
            clearTimeout(timer);
            this.#state = "connected";
            this.#stableTimer = setTimeout(() => {
              this.#stableTimer = null;
              this.#failures = 0;
            }, stableAfter);
            this.session = reply.session ?? null;
            this.broker = reply.broker ?? null;
            this.#watchedKeys = undefined;
            // Watches are renewed before the attempt resolves and "connect" fires, so that what
            // follows a connect (a snapshot, say) misses no event.
            this.#syncWatch().catch(() => {}).then(() => {
              if (this.#ws !== ws) {
                reject(new LmxError(errc.connection_lost, `${this.#url}: dropped while renewing watches`));
                return;
              }
              this.#recheckKept();
              resolve();
              this.dispatchEvent(new Event("connect"));
            });
          },
          reject: (e) => fail(e.code ?? errc.connection_lost, e.message),
        });
        this.#send({ type: "hello", uuid, client: "lmx-js", protocol: PROTOCOL });
      };
    });
  }

  #send(msg) {
    if (this.#ws && this.#ws.readyState === 1) this.#ws.send(JSON.stringify(msg));
  }

  // Ends the current connection: pending requests fail, holds not kept on exit are lost.
  #drop(error) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onmessage = ws.onerror = ws.onclose = ws.onopen = null;
    try {
      ws.close();
    } catch {
      /* already closed */
    }
    this.#openFail?.(error.code, error.message);
    const wasConnected = this.#state === "connected";
    if (this.#state !== "closed") this.#state = "disconnected";
    if (wasConnected && this.#stableTimer) this.#failures++; // dropped soon after connecting
    clearTimeout(this.#stableTimer);
    this.#stableTimer = null;
    const pending = [...this.#pending.entries()];
    this.#pending.clear();
    // A kept-on-exit request cut off here may have been granted: give it back after a reconnect.
    for (const [uuid, p] of pending) if (p.keepKey !== undefined) this.#orphans.set(uuid, p.keepKey);
    for (const [uuid, a] of this.#abandoned) if (a.keep) this.#orphans.set(uuid, a.key);
    this.#abandoned.clear();
    for (const [, p] of pending) p.reject(error);
    const closed = this.#state === "closed";
    for (const [id, lock] of this.#holds) {
      if (lock.keepLocksOnExit && !closed) continue;
      this.#holds.delete(id);
      lock._markLost(closed ? "closed" : "disconnected");
    }
    if (wasConnected) {
      this.dispatchEvent(Object.assign(new Event("disconnect"), { error }));
      this.#scheduleReconnect();
    }
  }

  // Reconnects in the background after a delay (backoff with jitter), so that watches resume;
  // calls made meanwhile wait for that attempt. Runs until a connection succeeds or close().
  #scheduleReconnect() {
    if (this.#state !== "disconnected" || !this.#opt.reconnect || this.#scheduled || this.#ready) return;
    const base = Math.min(this.#opt.minBackoff * 2 ** Math.min(this.#failures, 16), this.#opt.maxBackoff);
    const delay = base / 2 + Math.random() * (base / 2);
    const next = {};
    next.promise = new Promise((resolve, reject) => Object.assign(next, { resolve, reject }));
    next.promise.catch(() => {}); // nobody may be waiting
    next.timer = setTimeout(() => {
      this.#scheduled = null;
      this.#attempt().then(next.resolve, next.reject);
    }, delay);
    this.#scheduled = next;
  }

  // After a reconnect: a hold kept on exit that the broker no longer lists ended while this
  // client was away (ttl, force, broker restart); it is lost with reason "disconnected". Requests
  // kept on exit whose answer the drop cut off are given back, in case they were granted.
  #recheckKept() {
    for (const [uuid, key] of this.#orphans) {
      this.#orphans.delete(uuid);
      const msg = key === null ? { type: "release-many", lockUuid: uuid } : { type: "unlock", key, _uuid: uuid };
      this._call(msg).catch(() => {});
    }
    for (const lock of this.#holds.values()) {
      const keys = lock.keys ?? [lock.key];
      Promise.all(keys.map((k) => this.info(k))).then(
        (infos) => {
          if (infos.some((i) => !i.holders.includes(lock.id))) lock._markLost("disconnected");
        },
        () => {}, // the next reconnect checks again
      );
    }
  }

  #route(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return; // a broker never sends these
    }
    if (!m || typeof m !== "object") return;
    if (m.type === "event") {
      this.#deliver(m);
      return;
    }
    if (m.type === "lock-lost") {
      const lock = this.#holds.get(m.uuid);
      if (lock) {
        this.#holds.delete(m.uuid);
        lock._markLost(m.reason ?? "ttl");
      }
      return;
    }
    let uuid = m.uuid;
    // A peer that does not know hello answers it without our id: that is the handshake's answer.
    if (!uuid && this.#state === "connecting") {
      for (const [id, p] of this.#pending) if (p.hello) uuid = id;
    }
    const p = this.#pending.get(uuid);
    if (p) {
      // A queued notice is progress, not the answer: keep waiting for the grant.
      if ((m.type === "lock" || m.type === "acquire-many") && m.queued && !m.acquired) {
        p.queued?.(m);
        return;
      }
      this.#pending.delete(uuid);
      p.resolve(m);
      return;
    }
    if (this.#abandoned.has(uuid)) {
      // A grant that crossed our withdrawal: give it back at once.
      const { key } = this.#abandoned.get(uuid);
      if (m.acquired && key === null) this.#send({ type: "release-many", uuid: this.#nextId(), lockUuid: uuid });
      else if (m.acquired) this.#send({ type: "unlock", uuid: this.#nextId(), key, _uuid: uuid });
      if (m.acquired !== undefined && !m.queued) this.#abandoned.delete(uuid);
    }
  }

  // Withdraws request `uuid` at the broker; a grant that still arrives is released at once.
  #abandon(uuid, key, keep) {
    this.#pending.delete(uuid);
    if (this.#state !== "connected") return;
    this.#abandoned.set(uuid, { key, keep });
    const cancelId = this.#nextId();
    this.#pending.set(cancelId, {
      // Any answer to the target came before this reply on the same connection.
      resolve: () => this.#abandoned.delete(uuid),
      reject: () => {},
    });
    this.#send({ type: "cancel", uuid: cancelId, target: uuid });
  }

  // Sends `msg` with a fresh uuid and resolves with the reply carrying it; rejects on an error reply.
  async _call(msg, timeout = this.#opt.requestTimeout) {
    await this.#ensureConnected();
    const uuid = this.#nextId();
    const reply = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(uuid);
        reject(new LmxError(errc.timeout, `no reply to ${msg.type} within ${timeout} ms`));
      }, timeout);
      this.#pending.set(uuid, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#send({ ...msg, uuid });
    });
    if (reply.type === "error" || (reply.error && reply.code)) throw wireError(reply);
    return reply;
  }

  _forget(id) {
    this.#holds.delete(id);
  }

  /**
   * Acquires `key`; resolves with a Lock. Options: ttl (ms, null = never expires), max (holders
   * allowed: a semaphore), wait (false: try-lock), timeout (ms to wait in the queue), shared (a
   * reader lock), keepLocksOnExit, signal (an AbortSignal that withdraws the request).
   */
  async acquire(key, options = {}) {
    const msg = { type: "lock", key };
    if (options.max != null) msg.max = options.max;
    if (options.shared) msg.mode = "shared";
    const { uuid, reply, keep } = await this.#acquireRequest(msg, options, key);
    if (reply.acquired) {
      const lock = new Lock(this, key, uuid, reply.fencingToken ?? 0, keep);
      this.#holds.set(uuid, lock);
      return lock;
    }
    if (reply.error || reply.type === "error") throw wireError(reply);
    throw new LmxError(errc.would_block, key);
  }

  /**
   * Acquires every key of `keys` at once, or none: resolves with a MultiLock. Options as in
   * acquire, except max and shared.
   */
  async acquireMany(keys, options = {}) {
    if (typeof keys === "string" || typeof keys?.[Symbol.iterator] !== "function") {
      throw new LmxError(errc.bad_request, "acquireMany takes an iterable of keys (an array, a Set, ...)");
    }
    keys = [...keys];
    const msg = { type: "acquire-many", keys };
    const { uuid, reply, keep } = await this.#acquireRequest(msg, options, null);
    if (reply.acquired) {
      const lock = new MultiLock(this, reply.keys ?? [...keys].sort(), uuid, reply.fencingTokens ?? {}, keep);
      this.#holds.set(uuid, lock);
      return lock;
    }
    if (reply.error || reply.type === "error") throw wireError(reply);
    throw new LmxError(errc.would_block, keys.join(", "));
  }

  // Sends a lock or acquire-many request with the wait, ttl and keep fields of `options`, and
  // waits for its answer. A timeout or an abort withdraws the request (`cancel`); a grant that
  // crosses the withdrawal is given back (`key`: unlock it; null: release-many).
  async #acquireRequest(msg, options, key) {
    const { signal } = options;
    if (signal?.aborted) throw abortReason(signal);
    const wait = options.wait ?? true;
    const budget = options.timeout ?? this.#opt.lockRequestTimeout * Math.max(1, options.maxRetries ?? this.#opt.maxRetries);
    const keep = options.keepLocksOnExit ?? this.#opt.keepLocksOnExit;
    msg.ttl = ttlField(options.ttl === undefined ? this.#opt.ttl : options.ttl);
    if (!wait) msg.wait = false;
    else msg.timeout = budget;
    if (keep) msg.keepLocksOnExit = true;
    await this.#ensureConnected();
    if (signal?.aborted) throw abortReason(signal);
    const uuid = this.#nextId();
    msg.uuid = uuid;
    const reply = await new Promise((resolve, reject) => {
      let onAbort = null;
      const finish = () => {
        clearTimeout(timer);
        if (onAbort) signal.removeEventListener("abort", onAbort);
      };
      // The broker withdraws the request at `budget`; this deadline only guards against a broker
      // that never answers.
      const limit = wait ? budget + this.#opt.requestTimeout : this.#opt.requestTimeout;
      const timer = setTimeout(() => {
        finish();
        this.#abandon(uuid, key, keep);
        reject(new LmxError(errc.timeout, `no answer to ${msg.type} within ${limit} ms`));
      }, limit);
      if (signal) {
        onAbort = () => {
          finish();
          this.#abandon(uuid, key, keep);
          reject(abortReason(signal));
        };
        signal.addEventListener("abort", onAbort, { once: true });
      }
      this.#pending.set(uuid, {
        resolve: (r) => {
          finish();
          resolve(r);
        },
        reject: (e) => {
          finish();
          reject(e);
        },
        queued: options.onqueued,
        keepKey: keep ? key : undefined,
      });
      this.#send(msg);
    });
    return { uuid, reply, keep };
  }

  /** A try-lock: resolves with a Lock, or rejects with code `would_block` when the key is taken. */
  tryAcquire(key, options = {}) {
    return this.acquire(key, { ...options, wait: false });
  }

  /** Releases the hold `id` of `key` (e.g. one kept on exit by another client). */
  async release(key, id) {
    const reply = await this._call({ type: "unlock", key, _uuid: id });
    if (!reply.unlocked) throw new LmxError(errc.not_holder, reply.error ?? `${id} does not hold ${key}`);
    const lock = this.#holds.get(id);
    if (lock) {
      this.#holds.delete(id);
      lock._markLost("forced");
    }
  }

  /** Ends every hold of `key`, whoever holds it (each holder is told its lock was lost). */
  async forceRelease(key) {
    const reply = await this._call({ type: "unlock", key, force: true });
    if (!reply.unlocked) throw new LmxError(errc.not_holder, reply.error ?? key);
  }

  /** Keys with holders or waiters (the broker answers in pages; this follows them all). */
  async ls() {
    const keys = [];
    let cursor;
    do {
      const r = await this._call(cursor === undefined ? { type: "ls" } : { type: "ls", cursor });
      keys.push(...(r.ls_result ?? []));
      cursor = r.cursor ?? undefined;
    } while (cursor !== undefined);
    return keys;
  }

  /** One key's state: {key, locked, holders (lock ids), waiters, max, fencingToken (last granted)}. */
  async info(key) {
    const r = await this._call({ type: "lock-info-request", key });
    const info = {
      key,
      locked: !!r.isLocked,
      holders: r.lockholderUUIDs ?? [],
      waiters: r.lockRequestCount ?? 0,
      max: r.max ?? 1,
      fencingToken: r.fencingToken ?? 0,
    };
    if (Array.isArray(r.holders)) info.holderDetails = r.holders;
    return info;
  }

  /** The broker's figures (connections, keys, holders, waiters, grants, ...). */
  async stats() {
    return (await this._call({ type: "system-stats-request" })).stats ?? {};
  }

  /** Round trip time to the broker, in ms. */
  async ping() {
    await this.#ensureConnected();
    const t0 = performance.now();
    await this._call({ type: "ping" });
    return performance.now() - t0;
  }

  /**
   * Calls `callback(event)` for every watch event on `keys` (an array; null or omitted: every
   * key). Events: {event: "granted"|"released"|"expired"|"queued"|"cancelled"|"timeout"|"forced",
   * key, uuid, fencingToken?, lockRequestCount?}. Resolves once the broker confirmed the watch;
   * survives reconnects.
   */
  async watch(keys, callback) {
    if (typeof keys === "function") [keys, callback] = [null, keys];
    const sub = new Subscription(this, keys && keys.length ? [...keys] : null, callback);
    this.#subscriptions.add(sub);
    try {
      await this.#ensureConnected();
      await this.#syncWatch();
    } catch (e) {
      this.#subscriptions.delete(sub);
      sub.active = false;
      throw e;
    }
    return sub;
  }

  async _unwatch(sub) {
    this.#subscriptions.delete(sub);
    if (this.#state === "connected") await this.#syncWatch();
  }

  // Asks the broker for the union of what the subscriptions want (one watch set per connection).
  // Changes run one after the other, so that each resolves once the broker confirmed a watch set
  // that covers it; after a failure the next change asks again.
  #syncWatch() {
    const run = async () => {
      let want;
      if (this.#subscriptions.size === 0) want = undefined;
      else if ([...this.#subscriptions].some((s) => s.keys === null)) want = null;
      else want = [...new Set([...this.#subscriptions].flatMap((s) => s.keys))].sort();
      if (this.#watchedKeys !== unknownWatch && JSON.stringify(want) === JSON.stringify(this.#watchedKeys)) return;
      // Never wait for a connection here: the attempt in progress waits for this chain to renew
      // the watches. A reconnect asks for the whole set anyway.
      if (this.#state !== "connected") {
        this.#watchedKeys = unknownWatch;
        throw new LmxError(errc.connection_lost, "the connection dropped before the watch was confirmed");
      }
      try {
        if (want === undefined) await this._call({ type: "unwatch" });
        else await this._call(want === null ? { type: "watch" } : { type: "watch", keys: want });
        this.#watchedKeys = want;
      } catch (e) {
        this.#watchedKeys = unknownWatch;
        throw e;
      }
    };
    const next = this.#watchSync.catch(() => {}).then(run);
    this.#watchSync = next;
    return next;
  }

  #deliver(m) {
    this.dispatchEvent(Object.assign(new Event("event"), { data: m }));
    for (const sub of this.#subscriptions) {
      if (!sub.active || (sub.keys && !sub.keys.includes(m.key))) continue;
      try {
        sub.callback(m);
      } catch (e) {
        reportError(e);
      }
    }
  }

  /**
   * Closes the connection; pending calls fail with `closed`. Holds end at the broker, except those
   * taken with keepLocksOnExit, which stay until their ttl runs out or another client releases them
   * (this client's Lock objects all report lost, reason "closed").
   */
  close() {
    if (this.#state === "closed") return;
    this.#state = "closed";
    if (this.#scheduled) {
      clearTimeout(this.#scheduled.timer);
      this.#scheduled.reject(new LmxError(errc.closed));
      this.#scheduled = null;
    }
    clearTimeout(this.#stableTimer);
    this.#stableTimer = null;
    this.#subscriptions.clear();
    if (this.#ws) this.#drop(new LmxError(errc.closed));
    for (const lock of [...this.#holds.values()]) lock._markLost("closed"); // kept holds, while disconnected
  }

  async [asyncDispose]() {
    this.close();
  }
}

/**
 * Connects to the broker at `url` (default: the broker that served this module). When the first
 * attempt fails the client is closed (no background retries) and the promise rejects.
 */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  try {
    await client.connect();
  } catch (e) {
    client.close();
    throw e;
  }
  return client;
}
