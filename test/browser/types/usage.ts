// Compiled by types.test.mjs with tsc --strict against the lmx.d.ts a broker serves; never run.
// The @ts-expect-error lines must stay errors: they show the event types are not `any`.

import { connect, Client, LmxError, errc, type Lock, type WatchEvent, type LostEvent, type StateEvent } from "http://127.0.0.1:6971/lmx.js";

const client: Client = await connect(new URL("ws://127.0.0.1:6971/"), { ttl: 5000 });
const other = new Client(new URL("ws://127.0.0.1:6971/"));
other.close();

const onLost = (e: LostEvent) => console.log(e.reason, e.error.code, e.lock.key);
client.addEventListener("lost", onLost);
client.removeEventListener("lost", onLost);
const onState = (e: StateEvent) => console.log(e.state, e.error?.code);
client.addEventListener("state", onState);
client.removeEventListener("state", onState);
client.addEventListener("event", (e) => {
  const w: WatchEvent = e.detail;
  if (w.event === "connections") console.log(w.connections);
  else console.log(w.key, e.data.event);
});
client.addEventListener("disconnect", (e) => console.log(e.error.code));

{
  await using lock = await client.acquire("doc:42", { timeout: Infinity });
  lock.signal.addEventListener("abort", () => console.log((lock.signal.reason as LmxError).code));
  const left: number | null = lock.expiresAt;
  console.log(left, lock.autoRenew);
}

const n: number = await client.withLock("doc:42", { ttl: 10000 }, async (lock: Lock, signal: AbortSignal) => {
  console.log(lock.fencingToken, signal.aborted);
  return 1;
});
const s: string = await client.withLock("doc:42", () => "x");
console.log(n, s);

await using sub = await client.watch(new Set(["a", "b"]), (e) => console.log(e.event));
await client.watch((e) => console.log(e.event));

try {
  await client.release("doc:42", "id");
} catch (e) {
  if (e instanceof LmxError && e.code === errc.not_held) console.log("nothing held");
}

// A broker started with --auth-token-file: the token, the role it was given, a new token.
const authed = new Client("ws://127.0.0.1:6971/", { token: "s3cret-token-for-tests" });
const role: "admin" | "client" | null = authed.role;
authed.setToken(null);
try {
  await authed.connect();
} catch (e) {
  if (e instanceof LmxError && (e.code === errc.unauthenticated || e.code === "forbidden")) console.log(role, e.message);
}
authed.close();
// @ts-expect-error: a token is a string
new Client("ws://127.0.0.1:6971/", { token: 42 });

// @ts-expect-error: a connect event has no reason
client.addEventListener("connect", (e) => console.log(e.reason));
// @ts-expect-error: a lost listener gets a LostEvent, not a StateEvent
client.addEventListener("lost", (e: StateEvent) => console.log(e.state));
// @ts-expect-error: the state is one of four names
const wrong: "open" = client.state;
