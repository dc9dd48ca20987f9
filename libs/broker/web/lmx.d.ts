// Type declarations of lmx.js, the browser client of the lmx broker (served at /lmx.d.ts).
//
//   import { connect } from "http://127.0.0.1:6971/lmx.js";
//   const client = await connect("ws://127.0.0.1:6971/");
//   await client.withLock("doc:42", async (lock, signal) => {
//     await save(lock.fencingToken, { signal });   // signal aborts if the lease is lost
//   });
//
// To import from the broker's URL in TypeScript, map that URL to a saved copy of this file in
// tsconfig.json: "paths": { "http://127.0.0.1:6971/lmx.js": ["./lmx.d.ts"] } (docs/browser.md).

/** Protocol version spoken in the hello handshake. */
export declare const PROTOCOL: 1;

/** Why an operation failed; the names are those of the C++ client's `lmx::errc`. */
export type ErrorCode =
  /** The lock was not granted within the request's timeout (or a reply did not come in time). */
  | "timeout"
  /** Try-lock: the lock is not free now. */
  | "would_block"
  /** The connection to the broker dropped; calls in flight fail with this. */
  | "connection_lost"
  /** No broker answers at the URL (nothing listens, no route, no answer in time). */
  | "unreachable"
  /** The peer is not an lmx broker speaking this protocol version. */
  | "broker_incompatible"
  /** The request is invalid: the client's checks (made before sending, against the broker's limits) or the broker said so; the message says why. */
  | "bad_request"
  /** The lock id does not hold the key (expired, released or forced). */
  | "not_holder"
  /** The operation was cancelled (e.g. its AbortSignal fired); nothing is left queued or held. */
  | "cancelled"
  /** The broker's waiter limit is reached. */
  | "too_many_waiters"
  /** The request id is in use by another request. */
  | "duplicate_request"
  /** The hold ended (lease, force, disconnect, close) before or during the operation; `cause` says why. */
  | "lock_lost"
  /** The client was closed. */
  | "closed"
  /** The URL cannot be parsed or is not ws:// / wss://. */
  | "invalid_url"
  /** The broker is stopping. */
  | "shutting_down"
  /** The broker grants nothing now (it cannot persist its fencing state); retry later. */
  | "unavailable"
  /** Why a hold was lost (lock.signal.reason): its lease ran out, as the broker said or as this client counts it. */
  | "lease_expired"
  /** Why a hold was lost: another client ended it (a force, or an unlock by its id). */
  | "forced"
  /** The hold ended by its own release (the C++ client's async_wait_lost; lock.signal is not aborted by a release). */
  | "released"
  /** client.release(key, id): that id held nothing on the key (it had already ended). */
  | "not_held"
  /** The broker's address refused the connection (the C++ client; a browser cannot tell this from `unreachable`). */
  | "refused"
  /** The broker's host name did not resolve (the C++ client; a browser cannot tell). */
  | "name_not_resolved"
  /** The peer answered, but not in lmx's protocol (e.g. no lmx WebSocket at that path). */
  | "wrong_endpoint"
  /** The broker refuses WebSocket connections from this page's Origin; the message names the --allow-origin to give it. */
  | "origin_refused"
  /** A bound of the broker is reached: this connection's holds and waiting requests, or keys in total. */
  | "limit_reached"
  /** The broker's operator pinned this key's `max` (--key-max); the request named another. */
  | "max_pinned"
  /**
   * The broker checks tokens (--auth-token-file) and refused this client's: none, or one it does
   * not list. The client then stops reconnecting: calls reject with this at once, without opening
   * a connection, until `setToken()` or `connect()`.
   */
  | "unauthenticated"
  /** The token's role does not permit the request (e.g. `forceRelease` needs an `admin` token); the connection stays. */
  | "forbidden"
  /** The TLS handshake failed (the C++ client; a browser does not tell a page why a wss:// connection failed). */
  | "tls_failed";

/** Every error code, by name (`errc.timeout === "timeout"`). */
export declare const errc: { readonly [K in ErrorCode]: K };

/** A failed lmx operation: every rejected promise of this module carries one. */
export declare class LmxError extends Error {
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown });
  readonly name: "LmxError";
  readonly code: ErrorCode;
}

/** Client settings; every field is optional. */
export interface ClientOptions {
  /**
   * Lease in ms of a lock that names none; such a lease is renewed while the lock is held
   * (AcquireOptions.autoRenew). null or Infinity: never expires. Default 5000.
   */
  ttl?: number | null;
  /** One try of a waiting acquire, in ms; the default wait is lockRequestTimeout × maxRetries. Default 3000. */
  lockRequestTimeout?: number;
  /** Tries of a waiting acquire (0 counts as 1). Default 3. */
  maxRetries?: number;
  /** Holds survive this client's connection dropping (they end by ttl or an unlock by id). Default false. */
  keepLocksOnExit?: boolean;
  /** Time to open the WebSocket and finish the hello handshake, in ms. Default 5000. */
  connectTimeout?: number;
  /**
   * Deadline of any call other than an acquire's wait, in ms: a call made while disconnected waits
   * for a reconnect within it, then for its reply. Default 10000.
   */
  requestTimeout?: number;
  /**
   * Reconnect in the background after the connection drops or an attempt fails (backoff from
   * minBackoff doubling to maxBackoff, with jitter), until a connection succeeds or close(). Default true.
   */
  reconnect?: boolean;
  /** First reconnect delay, in ms. Default 50. */
  minBackoff?: number;
  /** Longest reconnect delay, in ms. Default 2000. */
  maxBackoff?: number;
  /** The WebSocket constructor to use (default: globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
  /**
   * The token for a broker started with --auth-token-file: offered at the WebSocket upgrade as the
   * subprotocol `lmx.token.<base64url of its UTF-8>` beside `lmx`, and sent in the hello; never in
   * the URL. Non-empty, without whitespace or control characters. A broker that refuses it fails
   * the connection with `unauthenticated`, and the client does not reconnect until `setToken()` or
   * `connect()`. Default null: no token.
   */
  token?: string | null;
}

/** Options of one acquire. Every value is checked before anything is sent (`bad_request`). */
export interface AcquireOptions {
  /**
   * Lease in ms, a whole number > 0 up to the broker's maxDurationMs (the broker ends the hold
   * after it and tells this client); null or Infinity: never expires. Default: the client's ttl.
   */
  ttl?: number | null;
  /** Renew the lease a third of the way through while the lock is held. Default: true when no ttl is named. */
  autoRenew?: boolean;
  /** Holders allowed on the key at once (a whole number >= 1): a counting semaphore. */
  max?: number;
  /** false: a try-lock that rejects with `would_block` instead of queueing. Default true. */
  wait?: boolean;
  /**
   * How long to wait, in whole ms, before rejecting with `timeout`: in the broker's queue, and
   * for a connection while the broker cannot be reached. 0: a try-lock. Infinity: no limit.
   * Default lockRequestTimeout × maxRetries.
   */
  timeout?: number;
  /** A shared (reader) lock: coexists with other shared holders, never with an exclusive one. */
  shared?: boolean;
  /** This hold survives the connection dropping. Default: the client's setting. */
  keepLocksOnExit?: boolean;
  /** Tries of lockRequestTimeout when no timeout is given. Default: the client's setting. */
  maxRetries?: number;
  /** Withdraws the request when aborted (rejects with `cancelled`); a grant that crosses the abort is given back. */
  signal?: AbortSignal;
  /** Called each time the broker queues the request behind other holders, with its queued notice. */
  onqueued?: (notice: { key: string; uuid: string; position?: number; lockRequestCount?: number }) => void;
}

/** Why a hold ended without this client's release (the lost event's `reason`). */
export type LostReason = "ttl" | "forced" | "disconnected" | "closed";

/** An LmxError that says why a hold was lost: lock.signal.reason, and `error` of the lost event. */
export interface LossError extends LmxError {
  readonly code: "lease_expired" | "forced" | "connection_lost" | "closed" | "lock_lost";
}

/** The event dispatched on a Lock (and on its Client) when the hold is lost. */
export interface LostEvent extends Event {
  readonly type: "lost";
  /** "ttl": the lease ran out; "forced": another client ended it; "disconnected": the connection dropped; "closed": close(). */
  readonly reason: LostReason;
  /** The same, as an error code: lease_expired, forced, connection_lost or closed. */
  readonly error: LossError;
  readonly lock: Lock;
}

/** The events of a Lock. */
export interface LockEventMap {
  lost: LostEvent;
}

/** One hold of one key. */
export declare class Lock extends EventTarget {
  /** The key held. */
  readonly key: string;
  /** The lock id: the uuid of the request that obtained it. */
  readonly id: string;
  /** Strictly increasing across every grant of the broker; pass it to storage that rejects stale writers. */
  readonly fencingToken: number;
  /** Whether the hold survives this client's connection dropping. */
  readonly keepLocksOnExit: boolean;
  /** True after the hold ended without this client's release (lease, force, disconnect, close). */
  readonly lost: boolean;
  /** True once release() was confirmed by the broker. */
  readonly released: boolean;
  /** True while neither released nor lost and the lease (expiresAt) has not run out, whether or not the broker can be reached. */
  readonly held: boolean;
  /** Why the hold was lost; null while it is not. */
  readonly lostReason: LostReason | null;
  /** Aborted when the hold is lost (not on release); `signal.reason` is an LmxError saying why. */
  readonly signal: AbortSignal;
  /**
   * When the lease ends as this client counts it, a performance.now() time: from when the request
   * (or the last answered renewal) was sent, plus the ttl, less max(5% of the ttl, twice the last
   * round trip). null: no expiry, or no longer held.
   */
  readonly expiresAt: number | null;
  /** The lease in ms; null: never expires. */
  readonly ttl: number | null;
  /** Whether the client renews the lease while the lock is held. */
  readonly autoRenew: boolean;
  /** Called with the "lost" event. */
  onlost: ((event: LostEvent) => void) | null;
  /**
   * Confirmed release; rejects with `lock_lost` when the hold had already ended. Without an answer
   * (`connection_lost`, `timeout`) the lock is left as it was, and release() may be called again.
   */
  release(): Promise<void>;
  /** Renews the lease: it ends `ttl` ms from now (null or Infinity: never). Resolves to the ms left (null: no expiry). */
  extend(ttl: number | null): Promise<number | null>;
  /**
   * Releases at the end of an `await using` scope. Throws `lock_lost` (once) when the hold was lost
   * in scope, and any failure of the release (the lease is then no longer renewed).
   */
  [Symbol.asyncDispose](): Promise<void>;
  addEventListener<K extends keyof LockEventMap>(type: K, listener: (this: Lock, event: LockEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof LockEventMap>(type: K, listener: (this: Lock, event: LockEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** A hold of several keys taken at once by acquireMany; released, renewed and lost as a whole. */
export declare class MultiLock extends Lock {
  /** The keys held, sorted. `key` is the first of them. */
  readonly keys: string[];
  /** The fencing token of each key; `fencingToken` is the highest of them. */
  readonly fencingTokens: Record<string, number>;
}

/** One key's state at the broker. */
export interface LockInfo {
  key: string;
  /** Whether anyone holds it. */
  locked: boolean;
  /** Lock ids of the holders. */
  holders: string[];
  /** Requests queued for it. */
  waiters: number;
  /** Holders allowed at once. */
  max: number;
  /** The last fencing token granted on the key. */
  fencingToken: number;
  /** Per holder: lock id, fencing token, ms held, ms until the lease ends (null: never), mode. */
  holderDetails?: Array<{ uuid: string; fencingToken: number; heldMs: number; expiresInMs: number | null; mode: "exclusive" | "shared" }>;
}

/** A watch event about one key (docs/protocol.md). */
export interface KeyWatchEvent {
  type: "event";
  event: "granted" | "released" | "expired" | "queued" | "cancelled" | "timeout" | "forced";
  key: string;
  /** The lock id or request id the event is about. */
  uuid?: string;
  fencingToken?: number;
  /** Requests still queued on the key. */
  lockRequestCount?: number;
}

/** Sent to watchers of every key whenever a connection to the broker opens or closes. */
export interface ConnectionsWatchEvent {
  type: "event";
  event: "connections";
  /** Open connections. */
  connections: number;
}

/** A watch event; `event` tells the variants apart. */
export type WatchEvent = KeyWatchEvent | ConnectionsWatchEvent;

/** A watch subscription. */
export declare class Subscription {
  /** The keys watched; null: every key. */
  readonly keys: string[] | null;
  readonly active: boolean;
  /** Stops the callbacks; the broker stops sending events once no subscription of the client wants them. */
  unsubscribe(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  [Symbol.dispose](): void;
}

/** Broker figures (system-stats-response). */
export interface BrokerStats {
  uptimeMs: number;
  connections: number;
  keys: number;
  holders: number;
  waiters: number;
  grants: number;
  releases: number;
  expirations: number;
  timeouts: number;
  messagesIn: number;
  messagesOut: number;
  /** Connections refused at the broker's connection limits. */
  connectionsRefused: number;
  /** Connections refused for want of a valid token. */
  authRefused: number;
  /** Clients disconnected for not reading their replies. */
  clientsCutOff: number;
  topContendedKeys: Array<{ key: string; waiters: number; holders: number }>;
  [name: string]: unknown;
}

/** What the broker accepts (its hello; its defaults until the first connection). */
export interface BrokerLimits {
  /** Bytes of one message. */
  readonly maxMessageSize: number;
  /** Bytes of UTF-8 of one key. */
  readonly maxKeyLength: number;
  /** Keys of one acquireMany, and of one watch request. */
  readonly maxKeys: number;
  /** Bytes of a lock id. */
  readonly maxIdLength: number;
  /** Longest ttl or timeout, in ms. */
  readonly maxDurationMs: number;
}

export type ClientState = "disconnected" | "connecting" | "connected" | "closed";

/** "state": the client's state changed. */
export interface StateEvent extends Event {
  readonly type: "state";
  readonly state: ClientState;
  /** Why the connection ended, for "disconnected" after a drop or a failed attempt; else null. */
  readonly error: LmxError | null;
}

/** "disconnect": an open connection dropped. */
export interface DisconnectEvent extends Event {
  readonly type: "disconnect";
  readonly error: LmxError;
}

/** "event": a watch event that a subscription of the client asked for. */
export interface WatchEventEvent extends CustomEvent<WatchEvent> {
  readonly type: "event";
  /** The same as `detail`. */
  readonly data: WatchEvent;
}

/** The events of a Client. */
export interface ClientEventMap {
  state: StateEvent;
  connect: Event;
  disconnect: DisconnectEvent;
  lost: LostEvent;
  event: WatchEventEvent;
}

/**
 * A connection to one broker. It connects on first use, and after the connection drops it
 * reconnects in the background with backoff: holds not kept on exit are lost (reason
 * "disconnected"), calls in flight fail with `connection_lost` except acquires, which are asked
 * again on the next connection within their timeout; watches resume. Calls made while
 * disconnected wait for a connection within their own deadline.
 *
 * `url` may name several brokers that share their lock state (an array, or URLs separated by
 * commas): the client keeps the first that answers, and tries the next when a connection
 * attempt fails or the connection drops.
 */
export declare class Client extends EventTarget {
  constructor(url?: string | URL | readonly (string | URL)[], options?: ClientOptions);
  /** The ws:// or wss:// URL of the broker connected to (or tried next). */
  readonly url: string;
  /** Every broker URL the client was given, in the order they are tried. */
  readonly urls: string[];
  readonly state: ClientState;
  /** The session name the broker gave this connection. */
  readonly session: string | null;
  /** The broker's name and version (e.g. "lmx/1.2.0"), from the hello handshake. */
  readonly broker: string | null;
  /** The role the broker gave the token, from the hello; null when the broker checks no tokens. */
  readonly role: "admin" | "client" | null;
  /** What the broker accepts; requests are checked against it before they are sent. */
  readonly limits: BrokerLimits;
  /**
   * Connects, or waits for the attempt in progress or the next scheduled one. After the broker
   * refused the token (`unauthenticated`), this is what tries again.
   */
  connect(): Promise<void>;
  /**
   * The token for the next connection attempts (null: none); an open connection stays as it is.
   * Lifts the stop after an `unauthenticated` refusal: the next call connects with it.
   * Throws `bad_request` at once for a token that cannot be one (empty, whitespace, ...).
   */
  setToken(token: string | null): void;
  /** Waits for `key` (or a slot of it, with `max`); rejects with `timeout`, `would_block`, `cancelled`, `bad_request`, ... */
  acquire(key: string, options?: AcquireOptions): Promise<Lock>;
  /**
   * All of `keys` at once or none (fair and deadlock-free at the broker); options as in acquire,
   * except max and shared.
   */
  acquireMany(keys: Iterable<string>, options?: Omit<AcquireOptions, "max" | "shared">): Promise<MultiLock>;
  /** A try-lock: rejects with `would_block` when the key is taken. */
  tryAcquire(key: string, options?: Omit<AcquireOptions, "wait">): Promise<Lock>;
  /**
   * Acquires `key`, runs `callback(lock, signal)` and releases the lock when it settles.
   * `signal` (the lock's) aborts if the hold is lost meanwhile. Resolves with the callback's
   * result; rejects with its error, or with `lock_lost` if the hold was lost before it finished.
   */
  withLock<T>(key: string, options: AcquireOptions, callback: (lock: Lock, signal: AbortSignal) => T | PromiseLike<T>): Promise<Awaited<T>>;
  withLock<T>(key: string, callback: (lock: Lock, signal: AbortSignal) => T | PromiseLike<T>): Promise<Awaited<T>>;
  /** Releases the hold `id` of `key`, e.g. one kept on exit by another client; rejects with `not_held` when that id held nothing. */
  release(key: string, id: string): Promise<void>;
  /**
   * Ends every hold of `key`, whoever holds it (each holder is told it lost the lock). A broker
   * that checks tokens permits this to `admin` tokens only: others get `forbidden`.
   */
  forceRelease(key: string): Promise<void>;
  /** Keys with holders or waiters. */
  ls(): Promise<string[]>;
  info(key: string): Promise<LockInfo>;
  stats(): Promise<BrokerStats>;
  /** Round trip time to the broker, in ms. */
  ping(): Promise<number>;
  /**
   * Calls `callback` for each event on `keys`: any iterable of keys, at least one (a string is
   * refused, not split into characters); null: every key. Resolves once the broker confirmed.
   */
  watch(keys: Iterable<string> | null, callback: (event: WatchEvent) => void): Promise<Subscription>;
  /** Calls `callback` for each event on every key. */
  watch(callback: (event: WatchEvent) => void): Promise<Subscription>;
  /**
   * Closes the connection: calls in flight fail with `closed`, holds end at the broker except those
   * kept on exit (they stay until their ttl ends or someone releases them); every Lock reports lost.
   */
  close(): void;
  [Symbol.asyncDispose](): Promise<void>;
  addEventListener<K extends keyof ClientEventMap>(type: K, listener: (this: Client, event: ClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof ClientEventMap>(type: K, listener: (this: Client, event: ClientEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/**
 * Connects to the broker at `url` (default: the broker that served lmx.js), or to the first of
 * several that answers (each tried once); when that fails the client is closed.
 */
export declare function connect(url?: string | URL | readonly (string | URL)[], options?: ClientOptions): Promise<Client>;
