# Shared by the shell-level tests of the `lmx` command: a private temp folder, settings and state
# folders of its own, a real broker on ephemeral ports, and small assertion helpers.
#   LMX_BINARY=build/test/apps/lmx/lmx bash test/cli/run.test.sh
set -euo pipefail

LMX=${LMX_BINARY:?set LMX_BINARY to the lmx executable}
T=$(mktemp -d /tmp/lmx-cli-XXXXXX)
export XDG_CONFIG_HOME=$T/config XDG_STATE_HOME=$T/state
unset LMX_URL LMX_HOST LMX_PORT LMX_UDS_PATH LMX_TOKEN_FILE
BROKER_PID=

cleanup() {
  local rc=$?
  [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  # Brokers started by --ensure-broker run in their own session; they are found by their state folder.
  pkill -f -- "--state-dir $T/" 2>/dev/null || true
  if ((rc != 0)) && [[ -s $T/broker.log ]]; then echo "--- broker log" >&2; cat "$T/broker.log" >&2; fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok - $*"; }

# Starts a broker listening on tcp, unix and ws; sets TCP_URL, UNIX_URL, WS_URL and LMX_URL (tcp).
start_broker() {
  "$LMX" broker --listen tcp://127.0.0.1:0 --listen "unix://$T/lmx.sock" --listen ws://127.0.0.1:0/ \
    --urls-file "$T/urls" --log-level warn "$@" 2>>"$T/broker.log" &
  BROKER_PID=$!
  for _ in $(seq 200); do [[ -s $T/urls ]] && break; sleep 0.05; done
  [[ -s $T/urls ]] || fail "broker did not start"
  TCP_URL=$(grep '^tcp://' "$T/urls")
  UNIX_URL=$(grep '^unix://' "$T/urls")
  WS_URL=$(grep '^ws://' "$T/urls")
  export LMX_URL=$TCP_URL
}

# expect CODE COMMAND...: runs COMMAND, keeps its output in $OUT and $ERR, checks its exit code.
expect() {
  local want=$1 rc=0
  shift
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  OUT=$(cat "$T/out")
  ERR=$(cat "$T/err")
  ((rc == want)) || fail "'$*' exited $rc, expected $want
stdout: $OUT
stderr: $ERR"
}

# contains TEXT PART: TEXT has PART in it.
contains() { [[ $1 == *"$2"* ]] || fail "expected '$2' in: $1"; }
lacks() { [[ $1 != *"$2"* ]] || fail "did not expect '$2' in: $1"; }

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

# A TCP port nothing listens on, below the kernel's ephemeral range: a port from that range can
# be taken at any moment as the local port of some other test's outgoing connection, and then a
# broker cannot listen on it.
free_port() {
  local low _ p
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  ((low > 11024)) || low=32768
  while :; do
    p=$((10000 + RANDOM % (low - 10000)))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# holders KEY: how many hold KEY now (from `lmx info --json`).
holders() { "$LMX" info "$1" --json | sed -n 's/.*"holders":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | grep -c . || true; }
waiters() { "$LMX" info "$1" --json | sed -n 's/.*"waiters":\([0-9]*\).*/\1/p'; }
# holders_are KEY N / waiters_are KEY N: for wait_for.
holders_are() { [[ $(holders "$1") == "$2" ]]; }
waiters_are() { [[ $(waiters "$1") == "$2" ]]; }
# Background jobs of a test, waited for together (a bare `wait` would wait for the broker too).
JOBS=()
spawn() { "$@" & JOBS+=($!); }
wait_jobs() {
  local p rc=0
  for p in "${JOBS[@]}"; do wait "$p" || rc=$?; done
  JOBS=()
  return $rc
}
