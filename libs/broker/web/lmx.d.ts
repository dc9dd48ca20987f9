// Type declarations of lmx.js, the browser client of the lmx broker (served at /lmx.d.ts).
//
//   import { connect } from "http://127.0.0.1:6971/lmx.js";
//   const client = await connect("ws://127.0.0.1:6971/");
//   {
//     await using lock = await client.acquire("doc:42", { ttl: 10000 });  // released on scope exit
//     console.log(lock.fencingToken);
//   }

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
  /** No broker answers at the URL, or it refused this page's Origin (see --allow-origin). */
  | "unreachable"
  /** The peer is not an lmx broker speaking this protocol version. */
  | "broker_incompatible"
  /** The broker (or the client) refused the request as invalid. */
  | "bad_request"
  /** The lock id does not hold the key (expired, released or forced). */
  | "not_holder"
  /** The operation was cancelled (e.g. its AbortSignal fired); nothing is left queued or held. */
  | "cancelled"
  /** The broker's waiter limit is reached. */
  | "too_many_waiters"
  /** The request id is in use by another request. */
  | "duplicate_request"
  /** The hold ended (ttl, force, disconnect) before the operation. */
  | "lock_lost"
  /** The client was closed. */
  | "closed"
  /** The URL cannot be parsed or is not ws:// / wss://. */
  | "invalid_url"
  /** The broker is stopping. */
  | "shutting_down"
  /** The broker grants nothing now (it cannot persist its fencing state); retry later. */
  | "unavailable"
  /** The hold's lease ran out. */
  | "lease_expired"
  /** Another client ended the hold (a force, or an unlock by its id). */
  | "forced"
  /** The hold ended by its own release. */
  | "released"
  /** A release by id: that id held nothing on the key. */
  | "not_held"
  /** The broker's address refused the connection. */
  | "refused"
  /** The broker's host name did not resolve. */
  | "name_not_resolved"
  /** The peer answered, but not in lmx's protocol. */
  | "wrong_endpoint"
  /** The broker refuses WebSocket connections from this page's Origin (its --allow-origin). */
  | "origin_refused";

/** Every error code, by name (`errc.timeout === "timeout"`). */
export declare const errc: { readonly [K in ErrorCode]: K };

/** A failed lmx operation: every rejected promise of this module carries one. */
export declare class LmxError extends Error {
  readonly name: "LmxError";
  readonly code: ErrorCode;
}

/** Client settings; every field is optional. */
export interface ClientOptions {
  /** Lease of a lock that names none, in ms. Default 4000. */
  ttl?: number | null;
  /** One try of a waiting acquire, in ms; the default wait is lockRequestTimeout × maxRetries. Default 3000. */
  lockRequestTimeout?: number;
  /** Tries of a waiting acquire. Default 3. */
  maxRetries?: number;
  /** Holds survive this client's connection dropping (they end by ttl or an unlock by id). Default false. */
  keepLocksOnExit?: boolean;
  /** Time to open the WebSocket and finish the hello handshake, in ms. Default 5000. */
  connectTimeout?: number;
  /** Time to wait for the reply to a non-lock request, in ms. Default 10000. */
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
}

/** Options of one acquire. */
export interface AcquireOptions {
  /** Lease in ms (the broker ends the hold after it and tells this client); null or Infinity: never expires. */
  ttl?: number | null;
  /** Holders allowed on the key at once: a counting semaphore. */
  max?: number;
  /** false: a try-lock that rejects with `would_block` instead of queueing. Default true. */
  wait?: boolean;
  /** How long to wait in the queue, in ms, before rejecting with `timeout`; the request keeps its place for the whole wait. */
  timeout?: number;
  /** A shared (reader) lock: coexists with other shared holders, never with an exclusive one. */
  shared?: boolean;
  /** This hold survives the connection dropping. Default: the client's setting. */
  keepLocksOnExit?: boolean;
  /** Tries of lockRequestTimeout when no timeout is given. Default: the client's setting. */
  maxRetries?: number;
  /** Withdraws the request when aborted (rejects with `cancelled`); a grant that crosses the abort is given back. */
  signal?: AbortSignal;
  /** Called when the broker queues the request behind other holders, with its queued notice. */
  onqueued?: (notice: { key: string; position?: number; lockRequestCount?: number }) => void;
}

/** Why a hold ended without this client's release. */
export type LostReason = "ttl" | "forced" | "disconnected" | "closed";

/** The event dispatched on a Lock (and on its Client) when the hold is lost. */
export interface LostEvent extends Event {
  readonly reason: LostReason;
  readonly lock: Lock;
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
  /** True after the hold ended without this client's release (ttl, force, disconnect). */
  readonly lost: boolean;
  /** True once release() was confirmed by the broker. */
  readonly released: boolean;
  /** True while neither released nor lost, as far as this client knows. */
  readonly held: boolean;
  /** Why the hold was lost; null while it is not. */
  readonly lostReason: LostReason | null;
  /** Called with the "lost" event. */
  onlost: ((event: LostEvent) => void) | null;
  /**
   * Confirmed release; rejects with `lock_lost` when the hold had already ended. Without an answer
   * (`connection_lost`, `timeout`) the lock is left as it was, and release() may be called again.
   */
  release(): Promise<void>;
  /** Renews the lease: it ends `ttl` ms from now (null: never). Resolves to the ms left (null: no expiry). */
  extend(ttl: number | null): Promise<number | null>;
  /**
   * Releases at the end of an `await using` scope. A hold that is already gone is not an error;
   * other failures (the hold may still be in place) are thrown.
   */
  [Symbol.asyncDispose](): Promise<void>;
  addEventListener(type: "lost", listener: (event: LostEvent) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

/** A hold of several keys taken at once by acquireMany; released, extended and lost as a whole. */
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
  topContendedKeys: Array<{ key: string; waiters: number; holders: number }>;
  [name: string]: unknown;
}

/**
 * A connection to one broker. It connects on first use, and after the connection drops it
 * reconnects in the background with backoff: calls in flight then fail with `connection_lost`
 * and holds not kept on exit are lost (reason "disconnected"); watches resume. Calls made while
 * a reconnect is scheduled wait for that attempt (and reject with `unreachable` if it fails).
 *
 * Events: "connect", "disconnect" (`error`: the LmxError), "lost" (a LostEvent), "event"
 * (`data`: every WatchEvent).
 */
export declare class Client extends EventTarget {
  constructor(url?: string, options?: ClientOptions);
  /** The broker's ws:// or wss:// URL. */
  readonly url: string;
  readonly state: "disconnected" | "connecting" | "connected" | "closed";
  /** The session name the broker gave this connection. */
  readonly session: string | null;
  /** The broker's name and version (e.g. "lmx/1.2.0"), from the hello handshake. */
  readonly broker: string | null;
  /** Connects, or waits for the attempt in progress or the next scheduled one. */
  connect(): Promise<void>;
  /** Waits for `key` (or a slot of it, with `max`); rejects with `timeout`, `would_block`, `cancelled`, ... */
  acquire(key: string, options?: AcquireOptions): Promise<Lock>;
  /**
   * All of `keys` at once or none (fair and deadlock-free at the broker); options as in acquire,
   * except max and shared.
   */
  acquireMany(keys: Iterable<string>, options?: Omit<AcquireOptions, "max" | "shared">): Promise<MultiLock>;
  /** A try-lock: rejects with `would_block` when the key is taken. */
  tryAcquire(key: string, options?: Omit<AcquireOptions, "wait">): Promise<Lock>;
  /** Releases the hold `id` of `key`, e.g. one kept on exit by another client; rejects with `not_holder`. */
  release(key: string, id: string): Promise<void>;
  /** Ends every hold of `key`, whoever holds it (each holder is told it lost the lock). */
  forceRelease(key: string): Promise<void>;
  /** Keys with holders or waiters. */
  ls(): Promise<string[]>;
  info(key: string): Promise<LockInfo>;
  stats(): Promise<BrokerStats>;
  /** Round trip time to the broker, in ms. */
  ping(): Promise<number>;
  /** Calls `callback` for each event on `keys` (null: every key); resolves once the broker confirmed. */
  watch(keys: string[] | null, callback: (event: WatchEvent) => void): Promise<Subscription>;
  watch(callback: (event: WatchEvent) => void): Promise<Subscription>;
  /**
   * Closes the connection: calls in flight fail with `closed`, holds end at the broker except those
   * kept on exit (they stay until their ttl ends or someone releases them); every Lock reports lost.
   */
  close(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Connects to the broker at `url` (default: the broker that served lmx.js); when that fails the client is closed. */
export declare function connect(url?: string, options?: ClientOptions): Promise<Client>;
