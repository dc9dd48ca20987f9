// lmx.js: the browser client of the lmx broker, served by the broker at /lmx.js.
// A dependency-free ES module speaking the lmx wire protocol (docs/protocol.md), one JSON
// message per WebSocket text frame. Declarations: /lmx.d.ts. Guide: docs/browser.md.
//
//   import { connect } from "http://127.0.0.1:6971/lmx.js";
//   const client = await connect("ws://127.0.0.1:6971/");
//   await client.withLock("doc:42", async (lock, signal) => {
//     await save(lock.fencingToken, { signal });   // signal aborts if the lease is lost
//   });

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
  limit_reached: "limit_reached",
  max_pinned: "max_pinned",
  unauthenticated: "unauthenticated",
  forbidden: "forbidden",
  tls_failed: "tls_failed",
});

const messages = {
  timeout: "the lock was not granted within the timeout",
  would_block: "the lock is not free (try-lock)",
  connection_lost: "the connection to the broker was lost",
  unreachable: "no broker answers at the URL",
  broker_incompatible: "the peer is not a compatible lmx broker",
  bad_request: "the request is invalid",
  not_holder: "the lock id does not hold the key",
  cancelled: "the operation was cancelled",
  too_many_waiters: "the broker's waiter limit is reached",
  duplicate_request: "the request id is already in use",
  lock_lost: "the lock was lost",
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
  origin_refused: "the broker refuses connections from this origin",
  limit_reached: "a limit of the broker is reached (holds and waiters of this connection, or keys in total)",
  max_pinned: "the broker pins this key's max; name no max, or that one",
  unauthenticated: "the broker requires a token it accepts",
  forbidden: "the token's role does not permit this request",
  tls_failed: "the TLS handshake failed (certificate untrusted, expired or for another host)",
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
    case "limit_reached":
    case "max_pinned":
    case "unauthenticated":
    case "forbidden":
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
  return new LmxError(fromWire(reply.code), reply.error ?? reply.message);
}

function bad(why) {
  return new LmxError(errc.bad_request, why);
}

// `await using` needs Symbol.asyncDispose; where the engine lacks it, the well-known
// registered symbol keeps explicit calls working.
const asyncDispose = Symbol.asyncDispose ?? Symbol.for("Symbol.asyncDispose");
const dispose = Symbol.dispose ?? Symbol.for("Symbol.dispose");

const defaults = {
  ttl: 5000, // lease of a lock that names none (ms); such a lease is renewed while held
  lockRequestTimeout: 3000, // one try of a waiting acquire (ms)
  maxRetries: 3, // tries of a waiting acquire: the default wait is lockRequestTimeout x maxRetries
  keepLocksOnExit: false,
  connectTimeout: 5000,
  requestTimeout: 10000, // replies to non-lock requests
  reconnect: true,
  minBackoff: 50,
  maxBackoff: 2000,
  token: null, // sent at the WebSocket upgrade (a subprotocol) and in the hello
};

// What the broker takes until its hello says otherwise (the broker's own defaults).
const defaultLimits = Object.freeze({
  maxMessageSize: 64 * 1024,
  maxKeyLength: 1024,
  maxKeys: 64,
  maxIdLength: 1024,
  maxDurationMs: 366 * 24 * 3600 * 1000,
});

function readLimits(wire) {
  const limits = { ...defaultLimits };
  if (wire && typeof wire === "object") {
    for (const name of Object.keys(limits)) {
      if (Number.isSafeInteger(wire[name]) && wire[name] > 0) limits[name] = wire[name];
    }
  }
  return Object.freeze(limits);
}

// A connection that stays up this long (ms) restarts the reconnect backoff from minBackoff.
const stableAfter = 5000;
// Sent for a watch set whose state at the broker is unknown (a watch or unwatch that failed).
const unknownWatch = Symbol("unknown");
// What a request that is asked again after a reconnect gets when its connection drops.
const dropped = Symbol("dropped");
// Connect failures that the next attempt will not cure by itself: calls waiting for a connection
// fail with them at once instead of waiting for their deadline.
const lasting = new Set(["invalid_url", "origin_refused", "wrong_endpoint", "broker_incompatible", "unauthenticated"]);
// Why a hold ended (the lost event's `reason`) -> the error code that says so.
const lossCodes = { ttl: errc.lease_expired, forced: errc.forced, disconnected: errc.connection_lost, closed: errc.closed };

// setTimeout takes at most 2^31-1 ms; longer waits are made of several steps.
const longestTimer = 2 ** 31 - 1;

// Calls `fn` once performance.now() reaches `when` (Infinity: never). Returns {cancel()}.
function timerAt(when, fn) {
  const t = {
    id: null,
    cancel() {
      clearTimeout(t.id);
      t.id = null;
    },
  };
  if (when === Infinity) return t;
  const step = () => {
    const left = when - performance.now();
    if (left <= 0) {
      t.id = null;
      fn();
      return;
    }
    t.id = setTimeout(step, Math.min(Math.ceil(left), longestTimer));
  };
  t.id = setTimeout(step, Math.max(0, Math.min(Math.ceil(when - performance.now()), longestTimer)));
  return t;
}

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

// The broker URLs a client was given: one URL, a comma-separated list or an array of them (a
// URL object counts as one). Several URLs are several brokers sharing their lock state (over
// etcd); the client keeps the first that answers and moves on to the next when it fails.
function normalizeUrls(urls) {
  let list;
  if (Array.isArray(urls)) list = urls;
  else if (typeof urls === "string" && urls.includes(",")) list = urls.split(",").map((u) => u.trim());
  else return [normalizeUrl(urls)];
  if (list.length === 0) throw new LmxError(errc.invalid_url, "the list of broker URLs is empty");
  return list.map((u) => {
    if (u === "" || u === undefined || u === null) throw new LmxError(errc.invalid_url, `an empty broker URL in ${describe(String(urls))}`);
    return normalizeUrl(u);
  });
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

function describe(v) {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === "number" || typeof v === "boolean" || v == null) return String(v);
  return `a ${typeof v}`;
}

const encoder = new TextEncoder();
// A lone surrogate has no UTF-8 form: the frame would carry U+FFFD instead of the key asked for.
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkKey(key, limits, what = "a key") {
  if (typeof key !== "string") throw bad(`${what} must be a string, not ${describe(key)}`);
  if (key === "") throw bad(`${what} must not be empty`);
  if (loneSurrogate.test(key)) throw bad(`${what} is not valid Unicode (it has a lone surrogate, which UTF-8 cannot carry)`);
  const n = encoder.encode(key).length;
  if (n > limits.maxKeyLength) throw bad(`${what} is ${n} bytes of UTF-8, over the broker's limit of ${limits.maxKeyLength}`);
}

function checkId(id, limits) {
  if (typeof id !== "string" || id === "") throw bad(`a lock id must be a non-empty string, not ${describe(id)}`);
  if (loneSurrogate.test(id)) throw bad("the lock id is not valid Unicode (it has a lone surrogate)");
  const n = encoder.encode(id).length;
  if (n > limits.maxIdLength) throw bad(`the lock id is ${n} bytes, over the broker's limit of ${limits.maxIdLength}`);
}

// A token as the broker's token file has them: a non-empty string without whitespace or control
// characters (a token and its role are separated by whitespace there). The token itself is never
// put in a message: it is a secret.
function checkToken(token) {
  if (token === null || token === undefined) return null;
  if (typeof token !== "string") throw bad(`token must be a string (or null for none), not a ${typeof token}`);
  if (token === "") throw bad("token must not be empty (null: no token)");
  if (/[\s\x00-\x1f\x7f]/.test(token)) throw bad("the token has whitespace or control characters (a token never has them; was a newline pasted with it?)");
  if (loneSurrogate.test(token)) throw bad("the token is not valid Unicode (it has a lone surrogate)");
  return token;
}

// base64url of the UTF-8 of `text`, without padding (RFC 4648, section 5).
function base64url(text) {
  let binary = "";
  for (const b of encoder.encode(text)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The WebSocket subprotocols offered with a token: "lmx", which the broker selects, and the token
// (browsers cannot set an Authorization header on a WebSocket; a subprotocol is sent in the
// upgrade, never in the URL).
function tokenProtocols(token) {
  return ["lmx", `lmx.token.${base64url(token)}`];
}

// The wire ttl of a lease: whole ms > 0, or null for one that never expires (null or Infinity).
function leaseTtl(ttl, limits) {
  if (ttl === null || ttl === Infinity) return null;
  if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl <= 0) {
    throw bad(`ttl ${describe(ttl)}: must be a positive whole number of ms (null or Infinity: never expires)`);
  }
  if (ttl > limits.maxDurationMs) {
    throw bad(`ttl ${ttl} ms is over the broker's limit of ${limits.maxDurationMs} ms (null or Infinity: never expires)`);
  }
  return ttl;
}

// How long a request may wait in the queue: whole ms >= 0, or Infinity for no limit.
function waitBudget(timeout, limits, what = "timeout") {
  if (timeout === Infinity) return Infinity;
  if (typeof timeout !== "number" || !Number.isInteger(timeout) || timeout < 0) {
    throw bad(`${what} ${describe(timeout)}: must be a whole number of ms >= 0 (Infinity: wait forever)`);
  }
  if (timeout > limits.maxDurationMs) {
    throw bad(`${what} ${timeout} ms is over the broker's limit of ${limits.maxDurationMs} ms (Infinity: wait forever)`);
  }
  return timeout;
}

function positiveMs(value, what) {
  if (value === Infinity) return value;
  if (typeof value !== "number" || !(value > 0) || Number.isNaN(value)) throw bad(`${what} ${describe(value)}: must be a positive number of ms`);
  return value;
}

function abortReason(signal) {
  return new LmxError(errc.cancelled, "aborted", { cause: signal.reason });
}

/**
 * One hold of one key. Dispatches a "lost" event (and calls `onlost`), and aborts `signal`, when
 * the hold ends without this client's release: its lease ran out (as the broker says, or as this
 * client counts it), a force, or the connection dropping.
 */
export class Lock extends EventTarget {
  #client;
  #lost = false;
  #released = false;
  #releasing = false;
  #reported = false; // the loss was thrown to the caller (release, extend, dispose, withLock)
  #abort = new AbortController();
  #ttl;
  #renew;
  #expiresAt = null;
  #expiry = null;
  #renewal = null;
  #renewing = null;
  #announced = false; // handed to the caller: from then on a loss is announced by events

  constructor(client, key, id, fencingToken, keep, ttl = null, renew = false) {
    super();
    this.#client = client;
    this.#ttl = ttl;
    this.#renew = renew && ttl !== null;
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
    this.#expireIfDue();
    return this.#lost;
  }
  /** True after release() was confirmed. */
  get released() {
    return this.#released;
  }
  /** True while the hold is neither released nor lost, and its lease has not run out. */
  get held() {
    this.#expireIfDue();
    return !this.#lost && !this.#released;
  }
  /** Aborted when the hold is lost; its reason is an LmxError saying why. */
  get signal() {
    return this.#abort.signal;
  }
  /** When the lease ends as this client counts it (a performance.now() time); null: never. */
  get expiresAt() {
    return this.#lost || this.#released ? null : this.#expiresAt;
  }
  /** The lease's ttl in ms (null: never expires). */
  get ttl() {
    return this.#ttl;
  }
  /** Whether the client renews the lease while the lock is held. */
  get autoRenew() {
    return this.#renew;
  }

  /**
   * Confirmed release. Rejects with `lock_lost` when the hold had already ended. When no answer
   * comes (`connection_lost`, `timeout`, ...) the lock stays as it was: still held unless the
   * connection loss ended it (then `lost`), so that release() can be tried again.
   */
  async release() {
    if (this.lost) throw this._lostError();
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
    if (!ended) {
      this.#end();
      this.#released = true;
      return;
    }
    this._markLost("ttl");
    throw this._lostError(ended);
  }

  _releaseMessage() {
    return { type: "unlock", key: this.key, _uuid: this.id };
  }

  // Why the release found the hold already ended, or null. The broker answers an unlock of a
  // hold that already ended with a warning.
  _ended(reply) {
    return !reply.unlocked || reply.warning ? (reply.warning ?? reply.error ?? this.key) : null;
  }

  /**
   * Renews the lease: it now ends `ttl` ms from now (null or Infinity: never). Resolves to the ms
   * left as the broker counts them, or null. Automatic renewal, if on, goes on with this ttl.
   */
  async extend(ttl) {
    if (this.lost) throw this._lostError();
    if (this.#released) throw new LmxError(errc.not_holder, `${this.key} was released`);
    const wire = leaseTtl(ttl, this.#client.limits);
    try {
      const { reply, sentAt } = await this.#client._request({ type: "extend", key: this.key, _uuid: this.id, ttl: wire });
      if (this.held) this._lease(sentAt, wire);
      return reply.expiresInMs ?? null;
    } catch (e) {
      if (e.code === errc.not_holder) {
        this._markLost("ttl");
        throw this._lostError(e.message);
      }
      throw e;
    }
  }

  /**
   * Releases at the end of an `await using` scope. A hold lost while in scope is thrown as
   * `lock_lost` (once: not when release() or extend() already threw it), since the work done in
   * the scope may have run without the lock. Any other failure is thrown too, and the lease is
   * no longer renewed, so that it ends by itself.
   */
  async [asyncDispose]() {
    if (this.#released) return;
    if (this.lost) {
      if (this.#reported) return;
      throw this._lostError();
    }
    try {
      await this.release();
    } catch (e) {
      if (e.code === errc.lock_lost) throw e;
      if (this.#lost) throw this._lostError();
      this._stopRenewing();
      throw e;
    }
  }

  // The error that tells the caller the hold was lost; `cause` is the signal's reason.
  _lostError(detail) {
    this.#reported = true;
    const why = this.#abort.signal.reason;
    return new LmxError(errc.lock_lost, `${this.key}: ${detail ?? why?.message ?? this.lostReason}`, { cause: why });
  }

  // The lease as this client counts it: from `sentAt`, when the request (or renewal) that set it
  // was sent, since the broker's lease starts later; less a margin of max(5% of the ttl, twice
  // the last round trip).
  _lease(sentAt, ttl) {
    this.#ttl = ttl;
    this.#expiry?.cancel();
    this.#renewal?.cancel();
    if (ttl === null) {
      this.#expiresAt = null;
      return;
    }
    this.#expiresAt = sentAt + ttl - Math.max(ttl / 20, 2 * this.#client._rtt);
    // Both timers: should the renewal go unanswered, the lease still ends on time.
    this.#expiry = timerAt(this.#expiresAt, () => this.#expireIfDue());
    if (this.#renew) this.#renewal = timerAt(sentAt + ttl / 3, () => this._renew());
  }

  // Renews the lease now (also for a lock without automatic renewal when `force`); resolves once
  // the renewal was answered or failed. A failed renewal is tried again soon, until the lease's
  // own deadline ends the hold.
  _renew(force = false) {
    if (this.#renewing) return this.#renewing;
    if (!this.held || this.#ttl === null || (!this.#renew && !force)) return Promise.resolve();
    const ttl = this.#ttl;
    const run = async () => {
      try {
        if (this.#releasing) throw new LmxError(errc.cancelled, "being released");
        const { sentAt } = await this.#client._request({ type: "extend", key: this.key, _uuid: this.id, ttl });
        if (this.held && this.#ttl === ttl) this._lease(sentAt, ttl);
      } catch (e) {
        if (e.code === errc.not_holder) this._markLost("ttl");
        else if (this.held && this.#renew) {
          this.#renewal?.cancel();
          this.#renewal = timerAt(performance.now() + Math.min(Math.max(ttl / 10, 20), 1000), () => this._renew());
        }
      } finally {
        this.#renewing = null;
      }
    };
    this.#renewing = run();
    return this.#renewing;
  }

  _announce() {
    this.#announced = true;
  }

  _stopRenewing() {
    this.#renew = false;
    this.#renewal?.cancel();
  }

  // The lease ran out as this client counts it. The hold is given back as well: a renewal the
  // broker read late (it was slow, or frozen) may have extended the broker's lease, and the key
  // would then stay taken by nobody.
  #expireIfDue() {
    if (this.#lost || this.#released || this.#expiresAt === null) return;
    if (performance.now() < this.#expiresAt) return;
    this._markLost("ttl");
    this.#client._call(this._releaseMessage()).catch(() => {});
  }

  #end() {
    this.#expiry?.cancel();
    this.#renewal?.cancel();
    this.#client._forget(this.id);
  }

  _markLost(reason) {
    if (this.#lost || this.#released) return;
    this.#end();
    this.#lost = true;
    this.lostReason = reason;
    const code = lossCodes[reason] ?? errc.lock_lost;
    const error = new LmxError(code, this.key);
    this.#abort.abort(error);
    if (!this.#announced) return;
    const ev = Object.assign(new Event("lost"), { reason, error, lock: this });
    if (typeof this.onlost === "function") {
      try {
        this.onlost(ev);
      } catch (e) {
        reportError(e);
      }
    }
    this.dispatchEvent(ev);
    this.#client.dispatchEvent(Object.assign(new Event("lost"), { reason, error, lock: this }));
  }
}

/** A hold of several keys taken at once by acquireMany; released, renewed and lost as a whole. */
export class MultiLock extends Lock {
  constructor(client, keys, id, fencingTokens, keep, ttl = null, renew = false) {
    super(client, keys[0], id, Math.max(0, ...Object.values(fencingTokens)), keep, ttl, renew);
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
  #set;
  constructor(client, keys, callback) {
    this.#client = client;
    /** The keys watched, or null for every key. */
    this.keys = keys;
    this.#set = keys === null ? null : new Set(keys);
    this.callback = callback;
    this.active = true;
  }
  _wants(event) {
    if (this.#set === null) return true;
    return event.event !== "connections" && this.#set.has(event.key);
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
 * A connection to one broker, reconnecting with backoff when it drops. Events: "state" (every
 * change of `state`; `state`, `error`), "connect", "disconnect" (`error`), "lost" (a hold was
 * lost; `lock`, `reason`, `error`), "event" (a watch event some subscription wants; `data`, also
 * as `detail`).
 */
export class Client extends EventTarget {
  #urls; // the brokers to try, in order
  #at = 0; // the one connected, or tried next
  #opt;
  #ws = null;
  #state = "disconnected"; // disconnected | connecting | connected | closed
  #ready = null; // promise of the connection attempt in progress
  #failures = 0; // attempts failed (or connections dropped before stableAfter) since the last stable one
  #scheduled = null; // the next background attempt: {timer, promise, resolve, reject}
  #stableTimer = null;
  #openFail = null; // fails the connection attempt in progress
  #lastError = null; // why the last connection attempt failed
  #refusal = null; // the error of the broker's refusal of the token: no attempt until connect() or setToken()
  #connWaiters = new Set(); // calls waiting for a connection: {resolve, reject}
  #limits = defaultLimits;
  #rtt = 0; // the last round trip measured (ms)
  #answeredSent = -Infinity; // latest send time of a request answered on this connection
  #prefix = randomPrefix();
  #counter = 0;
  #pending = new Map(); // request uuid -> {resolve, reject, sentAt, ...}
  #holds = new Map(); // lock id -> Lock
  #abandoned = new Map(); // request uuid -> {key, keep}: give back a grant that crossed a cancel
  #orphans = new Map(); // request uuid -> key: kept-on-exit requests whose answer a drop cut off
  #subscriptions = new Set();
  #watchedKeys = undefined; // what the broker confirmed watching: undefined none, null all
  #watchSync = Promise.resolve(); // watch changes, one after the other

  constructor(url, options = {}) {
    super();
    this.#urls = normalizeUrls(url);
    if (options === null || typeof options !== "object") throw bad("client options must be an object");
    this.#opt = { ...defaults, ...options };
    for (const k of Object.keys(defaults)) if (this.#opt[k] === undefined) this.#opt[k] = defaults[k];
    leaseTtl(this.#opt.ttl, defaultLimits);
    waitBudget(this.#opt.lockRequestTimeout, defaultLimits, "lockRequestTimeout");
    if (!Number.isInteger(this.#opt.maxRetries) || this.#opt.maxRetries < 0) throw bad(`maxRetries ${describe(this.#opt.maxRetries)}: must be a whole number >= 0`);
    for (const k of ["connectTimeout", "requestTimeout", "minBackoff", "maxBackoff"]) positiveMs(this.#opt[k], k);
    this.#opt.token = checkToken(this.#opt.token);
    /** The session name the broker gave this connection. */
    this.session = null;
    /** The role the broker gave the token ("admin" or "client"); null when it checks no tokens. */
    this.role = null;
    /** The broker's name and version, from the hello handshake. */
    this.broker = null;
  }

  /** The ws:// URL of the broker connected to (or tried next). */
  get url() {
    return this.#urls[this.#at];
  }
  /** Every broker URL the client was given, in the order they are tried. */
  get urls() {
    return [...this.#urls];
  }
  // After a failed attempt or a dropped connection: the next broker of the list is tried next.
  #moveOn() {
    this.#at = (this.#at + 1) % this.#urls.length;
  }
  /** "disconnected", "connecting", "connected" or "closed". */
  get state() {
    return this.#state;
  }
  /** The broker's limits from its hello (its defaults until the first connection). */
  get limits() {
    return this.#limits;
  }
  get _rtt() {
    return this.#rtt;
  }

  #setState(state, error) {
    if (this.#state === state) return;
    this.#state = state;
    this.dispatchEvent(Object.assign(new Event("state"), { state, error: error ?? null }));
  }

  #nextId() {
    return `${this.#prefix}.${(++this.#counter).toString(36)}`;
  }

  /**
   * Connects, or waits for the attempt in progress or the next scheduled one; other calls connect
   * on first use too. After the broker refused the token (`unauthenticated`) this is what tries
   * again.
   */
  connect() {
    this.#refusal = null;
    return this.#ensureConnected();
  }

  /**
   * The token for the next connection attempts (null: none); the current connection stays as it
   * is. Lifts the stop after an `unauthenticated` refusal: the next call connects with it.
   */
  setToken(token) {
    this.#opt.token = checkToken(token);
    this.#refusal = null;
  }

  // What calls get while the client stands still after the broker refused its token.
  #refused() {
    const first = this.#refusal;
    const prefix = `${messages.unauthenticated}: `;
    const why = first.message.startsWith(prefix) ? first.message.slice(prefix.length) : first.message;
    return new LmxError(errc.unauthenticated, `${why} (not retried until setToken() or connect())`, { cause: first });
  }

  // While a reconnect is scheduled, calls wait for that attempt instead of starting their own.
  #ensureConnected() {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#state === "closed") return Promise.reject(new LmxError(errc.closed));
    if (this.#refusal !== null && !this.#ready) return Promise.reject(this.#refused());
    if (this.#ready) return this.#ready;
    if (this.#scheduled) return this.#scheduled.promise;
    return this.#attempt();
  }

  // Waits for a connection until `deadline` (a performance.now() time; Infinity: no limit),
  // through as many reconnect attempts as that takes. Fails at the deadline with why the last
  // attempt failed, at once on a failure that retrying does not cure (a refused origin, ...), on
  // close() and on `signal`. With reconnect off: one attempt.
  #whenConnected(deadline, signal) {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#state === "closed") return Promise.reject(new LmxError(errc.closed));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.#refusal !== null && !this.#ready) return Promise.reject(this.#refused());
    if (!this.#opt.reconnect) return this.#ensureConnected();
    return new Promise((resolve, reject) => {
      const done = () => {
        this.#connWaiters.delete(w);
        timer.cancel();
        signal?.removeEventListener("abort", onAbort);
      };
      const w = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const onAbort = () => w.reject(abortReason(signal));
      const timer = timerAt(deadline, () => {
        const last = this.#lastError;
        w.reject(last ? new LmxError(last.code, `no connection in time; the last attempt: ${last.message}`, { cause: last })
          : new LmxError(errc.connection_lost, "no connection in time"));
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#connWaiters.add(w);
      if (!this.#ready && !this.#scheduled) this.#attempt().catch(() => {});
    });
  }

  // One connection attempt; when it fails and reconnect is on, the next one is scheduled (not
  // for a URL the WebSocket constructor refused, nor after the broker refused the token: no retry
  // can succeed. A refused token stops the attempts until connect() or setToken()).
  #attempt() {
    const attempt = this.#open();
    this.#ready = attempt;
    attempt.then(
      () => {
        if (this.#ready === attempt) this.#ready = null;
        this.#lastError = null;
        for (const w of [...this.#connWaiters]) w.resolve();
      },
      (e) => {
        if (this.#ready === attempt) this.#ready = null;
        this.#lastError = e;
        if (e.code === errc.unauthenticated) this.#refusal = e;
        // With several brokers, what one of them lacks (the origin allowed, the path) another may
        // have: only a refused token, which every broker of a cluster shares, stops them all.
        const single = this.#urls.length === 1 || e.code === errc.unauthenticated;
        if ((single && lasting.has(e.code)) || e.code === errc.closed) for (const w of [...this.#connWaiters]) w.reject(e);
        this.#moveOn();
        if (e.code !== errc.invalid_url || !single) this.#scheduleReconnect();
      },
    );
    return attempt;
  }

  #open() {
    const url = this.#urls[this.#at];
    this.#setState("connecting");
    return new Promise((resolve, reject) => {
      const WS = this.#opt.WebSocket ?? globalThis.WebSocket;
      const token = this.#opt.token;
      let ws;
      try {
        ws = token === null ? new WS(url) : new WS(url, tokenProtocols(token));
      } catch (e) {
        this.#setState("disconnected");
        reject(new LmxError(errc.invalid_url, e.message, { cause: e }));
        return;
      }
      this.#ws = ws;
      let settled = false;
      let opened = false;
      let diagnosing = false;
      const fail = (code, detail) => {
        if (settled) return;
        settled = true;
        this.#openFail = null;
        timer.cancel();
        this.#failures++;
        if (this.#state === "closed") code = errc.closed;
        const error = new LmxError(code, detail);
        if (this.#ws === ws) this.#drop(error);
        reject(error);
      };
      this.#openFail = fail;
      const timer = timerAt(performance.now() + this.#opt.connectTimeout,
        () => fail(errc.unreachable, `${url}: no answer within ${this.#opt.connectTimeout} ms`));
      // A browser does not tell a page why a WebSocket failed to open (a refused Origin, a wrong
      // path, nothing listening): the broker's /v1/origin says which.
      const refusedUpgrade = () => {
        if (settled || diagnosing) return;
        diagnosing = true;
        this.#diagnose(url).then(([code, detail]) => fail(code, detail));
      };
      ws.onmessage = (m) => {
        if (!opened || this.#state !== "connecting") return this.#route(m.data);
        // Before the hello is answered: anything that is not JSON is not an lmx broker.
        if (typeof m.data !== "string") return fail(errc.wrong_endpoint, `${url} sent a binary frame`);
        try {
          JSON.parse(m.data);
        } catch {
          return fail(errc.wrong_endpoint, `${url} sent ${describe(m.data)}, not JSON`);
        }
        this.#route(m.data);
      };
      ws.onerror = () => {
        if (!opened) refusedUpgrade();
      };
      ws.onclose = (ev) => {
        if (!opened) refusedUpgrade();
        else if (!settled) fail(errc.unreachable, `${url} closed the connection before the hello (close ${ev.code})`);
        else if (this.#ws === ws && ev.code === 1001) this.#drop(new LmxError(errc.shutting_down, `the broker is going away (close 1001)`));
        else if (this.#ws === ws) this.#drop(new LmxError(errc.connection_lost, `close ${ev.code}`));
      };
      ws.onopen = () => {
        opened = true;
        // The hello handshake tells an lmx broker from anything else.
        const uuid = this.#nextId();
        const sentAt = performance.now();
        this.#pending.set(uuid, {
          hello: true,
          sentAt,
          resolve: (reply) => {
            if (reply.type === "error" && reply.code === "unauthenticated") {
              const why = reply.error ?? reply.message ?? "refused";
              fail(errc.unauthenticated, `${why} (${token === null ? "this client has no token: the token option" : "this client's token was refused"})`);
              return;
            }
            // A broker that began to stop before it served the hello: not a lasting failure.
            if (reply.type === "error" && reply.code === "shutting_down") {
              fail(errc.shutting_down, `${url}: the broker is shutting down`);
              return;
            }
            if (reply.type !== "hello" || reply.protocol !== PROTOCOL) {
              fail(errc.broker_incompatible, `answer to hello: ${JSON.stringify(reply).slice(0, 200)}`);
              return;
            }
            if (settled) return;
            settled = true;
            this.#openFail = null;
            timer.cancel();
            this.#rtt = performance.now() - sentAt;
            this.#limits = readLimits(reply.limits);
            this.#setState("connected");
            this.#stableTimer = setTimeout(() => {
              this.#stableTimer = null;
              this.#failures = 0;
            }, stableAfter);
            this.session = reply.session ?? null;
            this.broker = reply.broker ?? null;
            this.role = typeof reply.role === "string" ? reply.role : null;
            this.#watchedKeys = undefined;
            // Watches are renewed before the attempt resolves and "connect" fires, so that what
            // follows a connect (a snapshot, say) misses no event.
            this.#syncWatch().catch(() => {}).then(() => {
              if (this.#ws !== ws) {
                reject(new LmxError(errc.connection_lost, `${url}: dropped while renewing watches`));
                return;
              }
              this.#recheckKept();
              resolve();
              this.dispatchEvent(new Event("connect"));
            });
          },
          reject: (e) => fail(e.code ?? errc.connection_lost, e.message),
        });
        const hello = { type: "hello", uuid, client: "lmx-js", protocol: PROTOCOL };
        if (token !== null) hello.token = token;
        this.#send(hello);
      };
    });
  }

  // Why the WebSocket upgrade failed, from the broker's /v1/origin on the same host (readable
  // from any origin): [code, detail].
  async #diagnose(url) {
    const u = new URL(url);
    const path = u.pathname;
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = "/v1/origin";
    u.search = "";
    u.hash = "";
    if (typeof globalThis.fetch !== "function") return [errc.unreachable, url];
    let res;
    try {
      res = await globalThis.fetch(u.href, { cache: "no-store", credentials: "omit", signal: AbortSignal.timeout(Math.min(this.#opt.connectTimeout, 3000)) });
    } catch {
      return [errc.unreachable, url];
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      /* not JSON: not an lmx broker */
    }
    if (!res.ok || !body || typeof body.allowed !== "boolean") {
      return [errc.wrong_endpoint, `${url}: the server at ${u.host} is not an lmx broker (${u.pathname}: HTTP ${res.status})`];
    }
    if (!body.allowed) {
      return [errc.origin_refused, body.hint ?? `start the broker with --allow-origin ${body.origin || "ORIGIN"}`];
    }
    // The broker answers now and upgrades on this path: it was not listening yet (or was going
    // away) when the WebSocket tried, which the next attempt may cure.
    if (Array.isArray(body.websocketPaths) && body.websocketPaths.includes(path)) {
      return [errc.unreachable, `${url}: the WebSocket did not open, though the broker at ${u.host} answers now`];
    }
    const served = Array.isArray(body.websocketPaths) ? ` (it upgrades on ${body.websocketPaths.join(", ")})` : " (is the path right?)";
    return [errc.wrong_endpoint, `${url}: the broker at ${u.host} has no WebSocket at ${path}${served}`];
  }

  #send(msg) {
    if (this.#ws && this.#ws.readyState === 1) this.#ws.send(typeof msg === "string" ? msg : JSON.stringify(msg));
  }

  // Ends the current connection: pending requests fail (those that are asked again after a
  // reconnect get `dropped`), holds not kept on exit are lost.
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
    if (this.#state !== "closed") this.#setState("disconnected", error);
    if (wasConnected && this.#stableTimer) this.#failures++; // dropped soon after connecting
    clearTimeout(this.#stableTimer);
    this.#stableTimer = null;
    this.#answeredSent = -Infinity;
    const pending = [...this.#pending.entries()];
    this.#pending.clear();
    // A kept-on-exit request cut off here may have been granted: give it back after a reconnect.
    for (const [uuid, p] of pending) if (p.keepKey !== undefined) this.#orphans.set(uuid, p.keepKey);
    for (const [uuid, a] of this.#abandoned) if (a.keep) this.#orphans.set(uuid, a.key);
    this.#abandoned.clear();
    const closed = this.#state === "closed";
    const again = !closed && this.#opt.reconnect;
    for (const [, p] of pending) {
      if (p.again && again) p.resolve(dropped);
      else p.reject(error);
    }
    for (const [id, lock] of this.#holds) {
      if (lock.keepLocksOnExit && !closed) continue;
      this.#holds.delete(id);
      lock._markLost(closed ? "closed" : "disconnected");
    }
    if (wasConnected) {
      this.#moveOn();
      this.dispatchEvent(Object.assign(new Event("disconnect"), { error }));
      this.#scheduleReconnect();
    }
  }

  // Reconnects in the background after a delay (backoff with jitter), so that watches resume;
  // calls made meanwhile wait for that attempt. Runs until a connection succeeds or close().
  #scheduleReconnect() {
    if (this.#state !== "disconnected" || !this.#opt.reconnect || this.#scheduled || this.#ready || this.#refusal !== null) return;
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
    // The broker no longer takes this connection's token (it is about to close it): reconnecting
    // with the same token would be refused too.
    if (m.code === "unauthenticated" && this.#state === "connected") {
      const error = new LmxError(errc.unauthenticated, m.error ?? m.message ?? "the broker no longer accepts the token");
      this.#refusal = error;
      this.#drop(error);
      return;
    }
    // A broker that is stopping says so before it closes (then WebSocket close 1001): nothing
    // more is answered on this connection, so it is dropped now, with its own reason.
    if (m.type === "error" && m.code === "shutting_down" && !m.uuid && this.#state === "connected") {
      this.#drop(new LmxError(errc.shutting_down, m.error ?? "the broker is shutting down"));
      return;
    }
    if (m.type === "lock-lost") {
      const lock = this.#holds.get(m.uuid);
      if (lock) {
        this.#holds.delete(m.uuid);
        lock._markLost(m.reason === "forced" ? "forced" : "ttl");
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
      // The broker handled this request after it was sent, and everything it answers after this
      // reply it handled later still: a lower bound for when a later grant was made.
      const before = this.#answeredSent;
      if (p.sentAt !== undefined) this.#answeredSent = Math.max(before, p.sentAt);
      // A queued notice is progress, not the answer: keep waiting for the grant.
      if ((m.type === "lock" || m.type === "acquire-many") && m.queued && !m.acquired) {
        p.queued?.(m);
        return;
      }
      this.#pending.delete(uuid);
      if (p.timed) this.#rtt = performance.now() - p.sentAt;
      p.resolve(m, before);
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

  // The frame of `msg`, refused here when the broker would refuse it for its size.
  #frame(msg) {
    const text = JSON.stringify(msg);
    const n = text.length > this.#limits.maxMessageSize / 3 ? encoder.encode(text).length : text.length;
    if (n > this.#limits.maxMessageSize) {
      throw bad(`the ${msg.type} message is ${n} bytes, over the broker's limit of ${this.#limits.maxMessageSize}`);
    }
    return text;
  }

  // Sends `msg` with a fresh uuid once connected (waiting for a reconnect within `timeout`) and
  // resolves with {reply, sentAt}; rejects on an error reply, or when no reply comes in time.
  async _request(msg, timeout = this.#opt.requestTimeout) {
    const deadline = performance.now() + timeout;
    await this.#whenConnected(deadline);
    const uuid = this.#nextId();
    const text = this.#frame({ ...msg, uuid });
    const sentAt = performance.now();
    const reply = await new Promise((resolve, reject) => {
      const timer = timerAt(deadline, () => {
        this.#pending.delete(uuid);
        reject(new LmxError(errc.timeout, `no reply to ${msg.type} within ${timeout} ms`));
      });
      this.#pending.set(uuid, {
        sentAt,
        timed: true,
        resolve: (r) => {
          timer.cancel();
          resolve(r);
        },
        reject: (e) => {
          timer.cancel();
          reject(e);
        },
      });
      this.#send(text);
    });
    if (reply.type === "error" || (reply.error && reply.code)) throw wireError(reply);
    return { reply, sentAt };
  }

  // The reply to `msg` (see _request).
  async _call(msg, timeout) {
    return (await this._request(msg, timeout)).reply;
  }

  _forget(id) {
    this.#holds.delete(id);
  }

  /**
   * Acquires `key`; resolves with a Lock. Options: ttl (ms; null or Infinity: never expires),
   * autoRenew (default: on when no ttl is named), max (holders allowed: a semaphore), wait (false:
   * try-lock), timeout (ms to wait in the queue; 0: try-lock; Infinity: no limit), shared (a reader
   * lock), keepLocksOnExit, signal (an AbortSignal that withdraws the request), onqueued.
   */
  acquire(key, options = {}) {
    return this.#acquire(key, null, options);
  }

  /**
   * Acquires every key of `keys` (any iterable of strings) at once, or none: resolves with a
   * MultiLock. Options as in acquire, except max and shared.
   */
  acquireMany(keys, options = {}) {
    if (typeof keys === "string" || typeof keys?.[Symbol.iterator] !== "function") {
      return Promise.reject(bad("acquireMany takes an iterable of keys (an array, a Set, ...)"));
    }
    return this.#acquire(null, [...keys], options);
  }

  // The settings of one acquire, checked against the broker's limits (bad_request otherwise).
  #acquireSettings(key, keys, options) {
    if (options === null || typeof options !== "object") throw bad("acquire options must be an object");
    const limits = this.#limits;
    if (keys === null) checkKey(key, limits);
    else {
      if (keys.length === 0) throw bad("no keys to acquire");
      if (keys.length > limits.maxKeys) throw bad(`${keys.length} keys, over the broker's limit of ${limits.maxKeys}`);
      for (const k of keys) checkKey(k, limits);
    }
    const named = options.ttl !== undefined;
    const ttl = leaseTtl(named ? options.ttl : this.#opt.ttl, limits);
    if (options.autoRenew !== undefined && typeof options.autoRenew !== "boolean") throw bad("autoRenew must be true or false");
    const renew = (options.autoRenew ?? !named) && ttl !== null;
    if (options.max !== undefined && options.max !== null) {
      if (keys !== null) throw bad("acquireMany takes no max");
      if (!Number.isInteger(options.max) || options.max < 1 || options.max > 2 ** 32 - 1) {
        throw bad(`max ${describe(options.max)}: must be a whole number >= 1`);
      }
    }
    if (options.wait !== undefined && typeof options.wait !== "boolean") throw bad("wait must be true or false");
    let budget;
    if (options.timeout !== undefined) budget = waitBudget(options.timeout, limits);
    else {
      const tries = options.maxRetries ?? this.#opt.maxRetries;
      if (!Number.isInteger(tries) || tries < 0) throw bad(`maxRetries ${describe(tries)}: must be a whole number >= 0`);
      budget = this.#opt.lockRequestTimeout === Infinity ? Infinity
        : Math.min(this.#opt.lockRequestTimeout * Math.max(1, tries), limits.maxDurationMs);
    }
    const wait = (options.wait ?? true) && budget !== 0; // a timeout of 0: do not wait
    const keep = options.keepLocksOnExit ?? this.#opt.keepLocksOnExit;
    if (options.onqueued !== undefined && options.onqueued !== null && typeof options.onqueued !== "function") {
      throw bad("onqueued must be a function");
    }
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw bad("signal must be an AbortSignal");
    return { ttl, renew, budget, wait, keep: !!keep, max: options.max ?? undefined, shared: !!options.shared, onqueued: options.onqueued ?? undefined };
  }

  // Sends a lock or acquire-many request and waits for its answer. The request waits for a
  // connection and, should the connection drop before the answer, is asked again after the
  // reconnect, both within its own wait (the place in the queue is lost with the connection, as
  // is anything the old connection held). A timeout or an abort withdraws the request (`cancel`);
  // a grant that crosses the withdrawal is given back.
  async #acquire(key, keys, options) {
    const signal = options?.signal;
    let s = this.#acquireSettings(key, keys, options);
    if (signal?.aborted) throw abortReason(signal);
    const start = performance.now();
    const waitEnd = s.wait ? start + s.budget : start + this.#opt.requestTimeout;
    for (;;) {
      await this.#whenConnected(waitEnd, signal);
      s = this.#acquireSettings(key, keys, options); // against the limits of this broker
      const msg = keys === null ? { type: "lock", key } : { type: "acquire-many", keys };
      if (s.max !== undefined) msg.max = s.max;
      if (s.shared) msg.mode = "shared";
      msg.ttl = s.ttl;
      if (!s.wait) msg.wait = false;
      else if (s.budget !== Infinity) {
        const left = Math.ceil(waitEnd - performance.now());
        if (left < 1) throw new LmxError(errc.timeout, `${key ?? keys.join(", ")}: not granted within ${s.budget} ms`);
        msg.timeout = left;
      }
      if (s.keep) msg.keepLocksOnExit = true;
      const answer = await this.#acquireOnce(msg, s, key, signal);
      if (answer === dropped) continue;
      const { uuid, reply, base } = answer;
      if (!reply.acquired) {
        if (reply.error || reply.type === "error") throw wireError(reply);
        throw new LmxError(errc.would_block, key ?? keys.join(", "));
      }
      const lock = keys === null
        ? new Lock(this, key, uuid, reply.fencingToken ?? 0, s.keep, s.ttl, s.renew)
        : new MultiLock(this, reply.keys ?? [...keys].sort(), uuid, reply.fencingTokens ?? {}, s.keep, s.ttl, s.renew);
      this.#holds.set(uuid, lock);
      lock._lease(base, s.ttl);
      // A grant that came long after its request (it waited in the queue) has a lease this client
      // cannot date from the request: renewed before it is handed out, its lease counts from then.
      if (s.ttl !== null && performance.now() - base > s.ttl / 3) await lock._renew(true);
      if (lock.held) {
        lock._announce();
        return lock;
      }
      if (lock.lostReason === "disconnected" && this.#opt.reconnect && this.#state !== "closed") continue;
      throw lock._lostError();
    }
  }

  // One lock or acquire-many request on the current connection: resolves with {uuid, reply,
  // base} (`base`: the earliest the broker can have granted it), or `dropped`.
  #acquireOnce(msg, s, key, signal) {
    const uuid = this.#nextId();
    msg.uuid = uuid;
    const text = this.#frame(msg);
    const sentAt = performance.now();
    return new Promise((resolve, reject) => {
      let onAbort = null;
      const finish = () => {
        timer.cancel();
        if (onAbort) signal.removeEventListener("abort", onAbort);
      };
      // The broker withdraws the request at its timeout; this deadline only guards against a
      // broker that never answers.
      const limit = !s.wait ? this.#opt.requestTimeout : msg.timeout === undefined ? Infinity : msg.timeout + this.#opt.requestTimeout;
      const timer = timerAt(sentAt + limit, () => {
        finish();
        this.#abandon(uuid, key, s.keep);
        reject(new LmxError(errc.timeout, `no answer to ${msg.type} within ${limit} ms`));
      });
      if (signal) {
        onAbort = () => {
          finish();
          this.#abandon(uuid, key, s.keep);
          reject(abortReason(signal));
        };
        signal.addEventListener("abort", onAbort, { once: true });
      }
      this.#pending.set(uuid, {
        sentAt,
        again: true,
        resolve: (r, before) => {
          finish();
          resolve(r === dropped ? dropped : { uuid, reply: r, base: Math.max(sentAt, before ?? -Infinity) });
        },
        reject: (e) => {
          finish();
          reject(e);
        },
        queued: s.onqueued,
        keepKey: s.keep ? key : undefined,
      });
      this.#send(text);
    });
  }

  /** A try-lock: resolves with a Lock, or rejects with code `would_block` when the key is taken. */
  tryAcquire(key, options = {}) {
    return this.acquire(key, { ...options, wait: false });
  }

  /**
   * Acquires `key`, runs `callback(lock, signal)` and releases the lock when the callback's
   * promise settles, in the spirit of navigator.locks.request. `signal` is the lock's: aborted if
   * the hold is lost meanwhile. Resolves with the callback's result; rejects with the callback's
   * error, or with `lock_lost` if the hold was lost before the callback finished.
   */
  async withLock(key, options, callback) {
    if (typeof options === "function" && callback === undefined) [options, callback] = [{}, options];
    if (typeof callback !== "function") throw bad("withLock needs a callback");
    const lock = await this.acquire(key, options ?? {});
    let result;
    try {
      result = await callback(lock, lock.signal);
    } catch (e) {
      if (lock.held) {
        await lock.release().catch(() => {
          if (lock.held) lock._stopRenewing();
        });
      }
      throw e;
    }
    if (lock.lost) throw lock._lostError();
    try {
      await lock.release();
    } catch (e) {
      if (lock.held) lock._stopRenewing();
      throw e;
    }
    return result;
  }

  /**
   * Releases the hold `id` of `key` (e.g. one kept on exit by another client). Rejects with
   * `not_held` when that id held nothing on the key (it had already ended).
   */
  async release(key, id) {
    checkKey(key, this.#limits);
    checkId(id, this.#limits);
    const reply = await this._call({ type: "unlock", key, _uuid: id });
    if (!reply.unlocked) throw new LmxError(errc.not_holder, reply.error ?? `${id} does not hold ${key}`);
    if (reply.held === false) throw new LmxError(errc.not_held, reply.warning ?? `${id} held nothing on ${key}`);
    const lock = this.#holds.get(id);
    if (lock) {
      this.#holds.delete(id);
      lock._markLost("forced");
    }
  }

  /** Ends every hold of `key`, whoever holds it (each holder is told its lock was lost). */
  async forceRelease(key) {
    checkKey(key, this.#limits);
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
    checkKey(key, this.#limits);
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
    await this.#whenConnected(performance.now() + this.#opt.requestTimeout);
    const t0 = performance.now();
    await this._call({ type: "ping" });
    return performance.now() - t0;
  }

  /**
   * Calls `callback(event)` for every watch event on `keys`: any iterable of key strings (an
   * array, a Set, ...; a string is refused, not split). `watch(callback)` or `watch(null,
   * callback)` watches every key. Resolves once the broker confirmed; survives reconnects.
   * Subscriptions whose keys add up to more than the broker watches at once (its maxKeys) are
   * served by watching every key and passing on only the events each subscription asked for.
   */
  async watch(keys, callback) {
    let list = null;
    if (typeof keys === "function" && callback === undefined) [keys, callback] = [null, keys];
    if (typeof callback !== "function") throw bad("watch needs a callback");
    if (keys !== null) {
      if (typeof keys === "string" || typeof keys?.[Symbol.iterator] !== "function") {
        throw bad("watch takes an iterable of keys (an array, a Set, ...); for one key pass [key], for every key pass null");
      }
      list = [...new Set(keys)];
      if (list.length === 0) throw bad("watch got no keys; to watch every key pass null (or only the callback)");
      for (const k of list) checkKey(k, this.#limits);
    }
    const sub = new Subscription(this, list, callback);
    this.#subscriptions.add(sub);
    try {
      await this.#whenConnected(performance.now() + this.#opt.requestTimeout);
      if (list) for (const k of list) checkKey(k, this.#limits);
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

  // Asks the broker for the union of what the subscriptions want (one watch set per connection;
  // every key when the union is larger than the broker takes). Changes run one after the other,
  // so that each resolves once the broker confirmed a watch set that covers it; after a failure
  // the next change asks again.
  #syncWatch() {
    const run = async () => {
      let want;
      const subs = [...this.#subscriptions];
      if (subs.length === 0) want = undefined;
      else if (subs.some((s) => s.keys === null)) want = null;
      else {
        const union = new Set(subs.flatMap((s) => s.keys));
        want = union.size > this.#limits.maxKeys ? null : [...union].sort();
      }
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
    const wanted = [...this.#subscriptions].filter((sub) => sub.active && sub._wants(m));
    if (wanted.length === 0) return;
    const ev = new CustomEvent("event", { detail: m });
    ev.data = m;
    this.dispatchEvent(ev);
    for (const sub of wanted) {
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
    this.#setState("closed");
    if (this.#scheduled) {
      clearTimeout(this.#scheduled.timer);
      this.#scheduled.reject(new LmxError(errc.closed));
      this.#scheduled = null;
    }
    clearTimeout(this.#stableTimer);
    this.#stableTimer = null;
    this.#subscriptions.clear();
    for (const w of [...this.#connWaiters]) w.reject(new LmxError(errc.closed));
    if (this.#ws) this.#drop(new LmxError(errc.closed));
    for (const lock of [...this.#holds.values()]) lock._markLost("closed"); // kept holds, while disconnected
  }

  async [asyncDispose]() {
    this.close();
  }
}

/**
 * Connects to the broker at `url` (default: the broker that served this module). `url` may list
 * several brokers (an array, or URLs separated by commas): each is tried once, in order. When
 * that fails the client is closed (no background retries) and the promise rejects.
 */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  // Each broker of a list is tried once; a refused token is refused by all of them.
  for (let tried = 1; ; tried++) {
    try {
      await client.connect();
      return client;
    } catch (e) {
      if (tried < client.urls.length && e.code !== errc.unauthenticated && e.code !== errc.closed) continue;
      client.close();
      throw e;
    }
  }
}
