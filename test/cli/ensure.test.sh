# --ensure-broker: starts one broker in the background when none answers, exactly one when
# several commands race, and reuses it afterwards.
source "$(dirname "$0")/lib.sh"
port=$(free_port)
url=tcp://127.0.0.1:$port

expect 3 "$LMX" ping --url "$url"
contains "$ERR" "no broker at $url — start one with \`lmx broker\` or pass --ensure-broker"

# Three commands race to start a broker on the same URL (under a umask that would leave the state
# folder group-writable, which the broker refuses: the folder is made the user's alone).
umask 002
for i in 1 2 3; do
  "$LMX" acquire "race-$i" --url "$url" --ensure-broker >/dev/null 2>"$T/race-$i.err" &
  JOBS+=($!)
done
wait_jobs || fail "a racing --ensure-broker command failed: $(cat "$T"/race-*.err; cat "$XDG_STATE_HOME"/lmx/*/broker.log)"
brokers=$(pgrep -fc -- "--state-dir $T/" || true)
[[ $brokers == 1 ]] || fail "expected exactly one broker, found $brokers: $(pgrep -fa -- "--state-dir $T/")"
pid=$(pgrep -f -- "--state-dir $T/")
log=$(ls "$XDG_STATE_HOME"/lmx/*/broker.log)
grep -q "listening on $url" "$log" || fail "broker log $log: $(cat "$log")"
expect 0 "$LMX" ls --url "$url"
for i in 1 2 3; do contains "$OUT" "race-$i"; done
[[ $(stat -c %a "$(dirname "$log")") == 700 ]] || fail "state folder mode $(stat -c %a "$(dirname "$log")")"
umask 022
ok "racing --ensure-broker commands start exactly one broker"

# Later calls use the running broker; it outlives the commands that started it.
expect 0 "$LMX" ping --url "$url" --ensure-broker
[[ $(pgrep -f -- "--state-dir $T/") == "$pid" ]] || fail "a second broker was started"
ok "an answering broker is reused"

# The broker keeps its fencing state in the state folder: a restart never goes backwards.
expect 0 "$LMX" acquire fence --url "$url" --json
before=$(sed -n 's/.*"fencing_token":\([0-9]*\).*/\1/p' <<<"$OUT")
kill "$pid"
wait_for 5 bash -c "! kill -0 $pid"
expect 0 "$LMX" acquire fence --url "$url" --ensure-broker --json
after=$(sed -n 's/.*"fencing_token":\([0-9]*\).*/\1/p' <<<"$OUT")
((after > before)) || fail "fencing token went from $before to $after across an ensured restart"
ok "restarted broker continues the fencing tokens"

# A remote address is never started, and a broken executable is reported with its log.
expect 3 "$LMX" ping --url tcp://192.0.2.1:6970 --ensure-broker --connect-timeout 300
contains "$ERR" "not a local address"
port2=$(free_port)
LMX_BROKER_PATH=/bin/false expect 3 "$LMX" ping --url "tcp://127.0.0.1:$port2" --ensure-broker
contains "$ERR" "exited"
contains "$ERR" "broker.log"
ok "remote URLs are not started; a broker that fails to start is reported"
