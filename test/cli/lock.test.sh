# lmx acquire / release / ls / info / stats / ping across processes and transports.
source "$(dirname "$0")/lib.sh"
start_broker --key-max pinned/=2

for url in "$TCP_URL" "$UNIX_URL" "$WS_URL"; do
  export LMX_URL=$url
  key="job-${url%%:*}"

  # Acquired in one process, still held after it exits (keepLocksOnExit), released by id in another.
  expect 0 "$LMX" acquire "$key"
  read -r id token <<<"$OUT"
  [[ -n $id && $token =~ ^[0-9]+$ ]] || fail "acquire printed '$OUT', expected 'ID TOKEN'"
  [[ $(holders "$key") == 1 ]] || fail "$key not held after acquire exited ($url)"
  expect 1 "$LMX" acquire "$key" --no-wait
  contains "$ERR" "held by someone else"
  expect 1 "$LMX" acquire "$key" --timeout 200
  contains "$ERR" "not granted before the timeout"
  expect 0 "$LMX" ls
  contains "$OUT" "$key"
  contains "$OUT" "$id"
  expect 1 "$LMX" release "$key" --id "not-$id"
  contains "$ERR" "holds nothing on the key"
  [[ $(holders "$key") == 1 ]] || fail "a wrong id released $key"
  expect 0 "$LMX" release "$key" --id "$id"
  contains "$OUT" "released $key"
  [[ $(holders "$key") == 0 ]] || fail "$key still held after release by id"
  expect 1 "$LMX" release "$key" --id "$id"
  contains "$ERR" "holds nothing on the key"

  # Without an id a release must be forced, and says so.
  expect 0 "$LMX" acquire "$key" --json
  contains "$OUT" "\"key\":\"$key\""
  contains "$OUT" '"ttl_ms":null'
  token2=$(sed -n 's/.*"fencing_token":\([0-9]*\).*/\1/p' <<<"$OUT")
  ((token2 > token)) || fail "fencing token went from $token to $token2"
  expect 2 "$LMX" release "$key"
  contains "$ERR" "--force"
  [[ $(holders "$key") == 1 ]] || fail "a release without --id or --force ended the hold"
  expect 0 "$LMX" release "$key" --force
  contains "$OUT" "force-released $key"
  [[ $(holders "$key") == 0 ]] || fail "$key still held after force release"
  ok "acquire, release by id and by force over ${url%%:*}"
done
export LMX_URL=$TCP_URL

# A semaphore admits exactly --max holders.
expect 0 "$LMX" acquire pool --max 2
expect 0 "$LMX" acquire pool --max 2
expect 1 "$LMX" acquire pool --max 2 --no-wait
expect 0 "$LMX" info pool --json
contains "$OUT" '"max":2'
[[ $(holders pool) == 2 ]] || fail "pool should have 2 holders"
expect 0 "$LMX" release pool --force
[[ $(holders pool) == 0 ]] || fail "force release left holders on pool"
ok "semaphore --max 2"

# A lease given with --ttl ends at the broker.
expect 0 "$LMX" acquire lease --ttl 5000
[[ $(holders lease) == 1 ]] || fail "lease not held"
wait_for 15 holders_are lease 0
ok "--ttl lease expires"

# Shared holds coexist; an exclusive one waits for them.
expect 0 "$LMX" acquire doc --shared
expect 0 "$LMX" acquire doc --shared
expect 1 "$LMX" acquire doc --no-wait
expect 0 "$LMX" release doc --force
ok "--shared"

# A waiter shows up in ls and info, and is granted when the holder releases.
expect 0 "$LMX" acquire queue
read -r qid _ <<<"$OUT"
"$LMX" acquire queue --json >"$T/waiter.out" 2>"$T/waiter.err" &
waiter=$!
wait_for 5 waiters_are queue 1
expect 0 "$LMX" info queue
contains "$OUT" "waiters             1"
contains "$OUT" "$qid"
expect 0 "$LMX" release queue --id "$qid"
wait "$waiter" || fail "the waiting acquire failed: $(cat "$T/waiter.err")"
contains "$(cat "$T/waiter.out")" '"key":"queue"'
[[ -z $(cat "$T/waiter.err") ]] || fail "a waiting acquire off a terminal printed progress: $(cat "$T/waiter.err")"
ok "waiter granted on release; no progress output off a terminal"

# Inspection.
expect 0 "$LMX" ls --json
contains "$OUT" '"locks":['
contains "$OUT" '"key":"queue"'
expect 0 "$LMX" ls nomatch-
contains "$OUT" "no locks held"
expect 0 "$LMX" info never-used --json
contains "$OUT" '"locked":false'
expect 0 "$LMX" stats
contains "$OUT" "connections"
expect 0 "$LMX" stats --json
contains "$OUT" '"waiters":0'
expect 0 "$LMX" ping -c 3 -i 10
contains "$OUT" "3 replies"
expect 0 "$LMX" ping --json
contains "$OUT" '"median_us":'
ok "ls, info, stats, ping"

# A lock id that cannot be written anywhere is not left held forever.
rc=0
"$LMX" acquire unseen >/dev/full 2>"$T/full.err" || rc=$?
((rc == 1)) || fail "acquire to a full stdout exited $rc"
contains "$(cat "$T/full.err")" "released the lock"
[[ $(holders unseen) == 0 ]] || fail "a lock whose id was never printed is still held"
ok "an unprintable lock id is released"

# On a terminal: a wait longer than a second says so (key and place in line); the result is a
# readable block.
if command -v script >/dev/null; then
  expect 0 "$LMX" acquire tty-key
  read -r tid _ <<<"$OUT"
  "$LMX" acquire tty-key >/dev/null 2>&1 &  # second in line
  JOBS+=($!)
  wait_for 5 waiters_are tty-key 1
  expect 1 script -qefc "'$LMX' acquire tty-key --timeout 2500" /dev/null
  contains "$OUT" "waiting for 'tty-key', queued at position 2"
  expect 0 "$LMX" release tty-key --id "$tid"
  wait_jobs
  expect 0 "$LMX" release tty-key --force
  expect 0 script -qefc "'$LMX' acquire tty-key" /dev/null
  contains "$OUT" "fencing token"
  contains "$OUT" "release with   lmx release tty-key --id"
  ok "terminal: waiting notice and readable output"
fi

# ls over more keys than it asks about at once (64): every one is listed.
for i in $(seq 70); do
  "$LMX" acquire "many-$i" >/dev/null &
  JOBS+=($!)
  ((i % 10)) || wait_jobs
done
wait_jobs
expect 0 "$LMX" ls many-
[[ $(grep -c '^many-' <<<"$OUT") == 70 ]] || fail "ls listed $(grep -c '^many-' <<<"$OUT") of 70 keys"
expect 0 "$LMX" ls many- --json
[[ $(grep -o '"key":"many-' <<<"$OUT" | wc -l) == 70 ]] || fail "ls --json did not list 70 keys"
ok "ls of 70 keys"

# An operator-pinned max: acquires naming none get it, one naming another is refused and says so.
expect 0 "$LMX" acquire pinned/a
expect 0 "$LMX" acquire pinned/a
expect 1 "$LMX" acquire pinned/a --no-wait
expect 2 "$LMX" acquire pinned/a --max 5 --no-wait
contains "$ERR" "pins the key's --max"
expect 0 "$LMX" info pinned/a --json
contains "$OUT" '"max":2'
ok "--key-max pins a key's max"

# Several brokers in LMX_URL (or --url): the first that answers is used.
dead_url=tcp://127.0.0.1:$(free_port)
LMX_URL="$dead_url,$TCP_URL" expect 0 "$LMX" acquire listed-first-dead
LMX_URL="$dead_url,$TCP_URL" expect 0 "$LMX" release listed-first-dead --force
expect 0 "$LMX" ping --url "$dead_url, $UNIX_URL"
expect 3 "$LMX" ping --url "$dead_url,$dead_url"
contains "$ERR" "no broker at $dead_url,$dead_url"
ok "a list of broker URLs: the first that answers"
