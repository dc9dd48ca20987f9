# lmx run: mutual exclusion between processes, semaphores, exit status, environment, signals,
# lease renewal, loss of the lock.
source "$(dirname "$0")/lib.sh"
start_broker

# max_overlap LOG: the most "begin"s open at once in a log of "begin ID" / "end ID" lines.
max_overlap() { awk '$1=="begin"{n++; if(n>m)m=n} $1=="end"{n--} END{print m+0}' "$1"; }

# Four concurrent runs on one key never overlap: every begin is followed by its own end.
log=$T/mutex.log
for i in 1 2 3 4; do
  spawn "$LMX" run critical -- sh -c "echo begin $i >>'$log'; sleep 0.2; echo end $i >>'$log'"
done
wait_jobs
[[ $(wc -l <"$log") == 8 ]] || fail "expected 8 lines in the mutex log: $(cat "$log")"
awk 'NR%2==1{if($1!="begin")bad=1; id=$2} NR%2==0{if($1!="end"||$2!=id)bad=1} END{exit bad}' "$log" ||
  fail "runs overlapped:
$(cat "$log")"
ok "concurrent runs on one key do not overlap"

# --max 2: exactly two at once; the third waits until a slot frees.
log=$T/sem.log
for i in 1 2 3; do
  spawn "$LMX" run pool --max 2 -- sh -c "echo begin $i >>'$log'; until [ -e '$T/go-pool' ]; do sleep 0.05; done; echo end $i >>'$log'"
done
wait_for 10 holders_are pool 2
wait_for 10 waiters_are pool 1
[[ $(grep -c begin "$log") == 2 ]] || fail "--max 2 started $(grep -c begin "$log") commands"
touch "$T/go-pool"
wait_jobs
[[ $(max_overlap "$log") == 2 && $(wc -l <"$log") == 6 ]] || fail "--max 2 log:
$(cat "$log")"
ok "--max 2 runs exactly two at once"

# --shared runs together; an exclusive run waits for all of them.
log=$T/shared.log
for i in 1 2 3; do
  spawn "$LMX" run doc --shared -- sh -c "echo begin r$i >>'$log'; until [ -e '$T/go-doc' ]; do sleep 0.05; done; echo end r$i >>'$log'"
done
wait_for 10 holders_are doc 3
spawn "$LMX" run doc -- sh -c "echo begin w >>'$log'; echo end w >>'$log'"
wait_for 10 waiters_are doc 1
touch "$T/go-doc"
wait_jobs
[[ $(max_overlap "$log") == 3 ]] || fail "shared runs did not overlap: $(cat "$log")"
[[ $(tail -2 "$log" | head -1) == "begin w" ]] || fail "the exclusive run did not wait for the shared ones: $(cat "$log")"
ok "--shared runs together, exclusive waits"

# Exit status, environment, release afterwards.
expect 7 "$LMX" run st -- sh -c 'echo "$LMX_LOCK_KEY|$LMX_LOCK_ID|$LMX_FENCING_TOKEN"; exit 7'
IFS='|' read -r k id tok <<<"$OUT"
[[ $k == st && -n $id && $tok =~ ^[0-9]+$ ]] || fail "environment was '$OUT'"
[[ $(holders st) == 0 ]] || fail "the lock outlived the command"
expect 0 "$LMX" run st -- true
expect 1 "$LMX" run st -- false
expect 127 "$LMX" run st -- /nonexistent/cmd
contains "$ERR" "cannot run '/nonexistent/cmd'"
[[ $(holders st) == 0 ]] || fail "the lock outlived a command that could not start"
expect 2 "$LMX" run st
contains "$ERR" "no COMMAND"
expect 137 "$LMX" run st -- sh -c 'kill -KILL $$'
ok "exit status, LMX_LOCK_ID/LMX_FENCING_TOKEN, release after exit"

# --no-wait and --timeout while another run holds the key; nothing is run then.
"$LMX" run busy -- sh -c "until [ -e '$T/stop-busy' ]; do sleep 0.05; done" &
holder=$!
wait_for 5 holders_are busy 1
expect 1 "$LMX" run busy --no-wait -- sh -c "touch '$T/ran'"
expect 1 "$LMX" run busy --timeout 200 -- sh -c "touch '$T/ran'"
contains "$ERR" "not granted before the timeout"
[[ ! -e $T/ran ]] || fail "a command ran without the lock"
ok "--no-wait and --timeout exit 1 without running"

# SIGTERM while waiting: nothing is run and the request leaves the queue. (A script's background
# job starts with SIGINT ignored, and lmx leaves ignored signals alone.)
"$LMX" run busy -- sh -c "touch '$T/ran'" &
waiting=$!
wait_for 5 waiters_are busy 1
kill -TERM $waiting
rc=0
wait $waiting || rc=$?
((rc == 143)) || fail "interrupted wait exited $rc, expected 143"
[[ ! -e $T/ran ]] || fail "an interrupted run ran its command"
[[ $(waiters busy) == 0 ]] || fail "the interrupted request is still queued"
ok "SIGTERM while waiting withdraws the request"

# -E tells "not obtained" from the command's own exit codes.
expect 75 "$LMX" run busy --no-wait -E 75 -- true
touch "$T/stop-busy"
wait $holder
ok "--conflict-exit-code"

# COMMAND inherits no descriptor of lmx (the broker connection above all): only 0-2, and the
# directory ls itself opens.
expect 0 "$LMX" run fds -- ls /proc/self/fd
[[ $(echo $OUT) == "0 1 2 3" ]] || fail "COMMAND inherited descriptors: $OUT"
ok "no descriptor leaks into COMMAND"

# SIGTERM and SIGUSR1 sent to lmx reach COMMAND.
"$LMX" run sig -- sh -c "trap 'echo USR1 >>\"$T/sig\"' USR1; trap 'echo TERM >>\"$T/sig\"; exit 9' TERM; echo up >\"$T/up\"; while :; do sleep 0.05; done" &
runner=$!
wait_for 5 test -e "$T/up"
kill -USR1 $runner
wait_for 5 grep -q USR1 "$T/sig"
kill -TERM $runner
rc=0
wait $runner || rc=$?
((rc == 9)) || fail "lmx run exited $rc after forwarding SIGTERM, expected the command's 9"
grep -q TERM "$T/sig" || fail "SIGTERM did not reach the command"
[[ $(holders sig) == 0 ]] || fail "the lock outlived the signalled command"
ok "signals are forwarded"

# A command running for several leases keeps its lock: the lease is renewed.
"$LMX" run long --ttl 1500 -- sh -c "until [ -e '$T/stop-long' ]; do sleep 0.05; done" &
runner=$!
wait_for 5 holders_are long 1
sleep 4.5
expect 1 "$LMX" acquire long --no-wait
[[ $(holders long) == 1 ]] || fail "the lease was not renewed"
touch "$T/stop-long"
wait $runner
[[ $(holders long) == 0 ]] || fail "the lock outlived the long command"
ok "lease renewed past its ttl"

# A lost lock is reported on stderr and, with --on-lost, signalled to COMMAND.
"$LMX" run lost --on-lost TERM -- sleep 10 2>"$T/lost.err" &
runner=$!
wait_for 5 holders_are lost 1
expect 0 "$LMX" release lost --force
rc=0
wait $runner || rc=$?
((rc == 143)) || fail "the command was not ended with SIGTERM after the loss (exit $rc)"
contains "$(cat "$T/lost.err")" "lost the lock on 'lost'"
contains "$(cat "$T/lost.err")" "sending SIGTERM"
"$LMX" run lost2 -- sh -c "until [ -e '$T/go-lost2' ]; do sleep 0.05; done; echo finished >'$T/finished'" 2>"$T/lost2.err" &
runner=$!
wait_for 5 holders_are lost2 1
expect 0 "$LMX" release lost2 --force
wait_for 10 grep -q "keeps running" "$T/lost2.err"
touch "$T/go-lost2"
wait $runner
contains "$(cat "$T/lost2.err")" "keeps running without it"
[[ -e $T/finished ]] || fail "without --on-lost the command should run to its end"
ok "loss reported; --on-lost TERM ends the command"

# A broker that stops answering (SIGSTOP) ends the lease at the broker's expiry; lmx run
# calls the lock lost by then instead of waiting for the connection to time out.
"$LMX" run frozen --ttl 1000 --on-lost TERM -- sleep 30 2>"$T/frozen.err" &
runner=$!
wait_for 5 holders_are frozen 1
kill -STOP "$BROKER_PID"
start=$SECONDS
rc=0
wait $runner || rc=$?
kill -CONT "$BROKER_PID"
((rc == 143)) || fail "the command was not ended after the lease ran out (exit $rc): $(cat "$T/frozen.err")"
((SECONDS - start <= 4)) || fail "the loss was noticed after $((SECONDS - start)) s with a 1 s lease"
contains "$(cat "$T/frozen.err")" "lost the lock on 'frozen'"
ok "an unrenewable lease is a loss by its end"

# When lmx itself dies, the broker frees the lock at once, and --on-lost signals COMMAND.
"$LMX" run orphan --no-expiry --on-lost TERM -- sh -c "echo \$\$ >'$T/orphan.pid'; exec sleep 30" &
runner=$!
wait_for 5 test -s "$T/orphan.pid"
wait_for 5 holders_are orphan 1
kill -KILL $runner
wait $runner 2>/dev/null || true
wait_for 5 holders_are orphan 0
wait_for 5 bash -c "! kill -0 $(cat "$T/orphan.pid") 2>/dev/null"
ok "lmx killed: lock freed, COMMAND signalled"
