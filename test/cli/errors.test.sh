# Usage errors, unreachable brokers, --help and --version: one clear line and a documented exit code.
source "$(dirname "$0")/lib.sh"
dead=tcp://127.0.0.1:$(free_port)

expect 0 "$LMX" --version
contains "$OUT" "lmx "
expect 0 "$LMX" --help
for sub in broker acquire release run ls info stats ping set get unset; do contains "$OUT" "$sub"; done
expect 0 "$LMX" run --help
for opt in --max --ttl --no-expiry --timeout --no-wait --shared --on-lost --url --uds-path --ensure-broker; do contains "$OUT" "$opt"; done
contains "$OUT" "10000"
contains "$OUT" "LMX_FENCING_TOKEN"
expect 0 "$LMX" acquire --help
contains "$OUT" "--json"
ok "--help and --version"

expect 2 "$LMX"
expect 2 "$LMX" frobnicate
expect 2 "$LMX" acquire
contains "$ERR" "key"
expect 2 "$LMX" acquire k --ttl -5
expect 2 "$LMX" acquire k --ttl 100 --no-expiry
expect 2 "$LMX" acquire k --max 0
expect 2 "$LMX" release k --id x --force
expect 2 "$LMX" run k --on-lost BOGUS -- true
expect 2 "$LMX" ping --url "nonsense://x"
contains "$ERR" "invalid broker URL"
expect 2 "$LMX" broker --key-max nonsense --listen tcp://127.0.0.1:0
contains "$ERR" "PREFIX=N"
expect 2 "$LMX" broker --key-max jobs/=0 --listen tcp://127.0.0.1:0
expect 2 "$LMX" broker --session-ttl 1 --listen tcp://127.0.0.1:0
contains "$ERR" "--session-ttl"
ok "usage errors exit 2"

# A store URL the broker cannot use is a usage error, found with the other flags, saying what is
# wrong; the help names the TLS files without a validator's suffix.
expect 2 "$LMX" broker --listen tcp://127.0.0.1:0 --store redis://127.0.0.1:6379
contains "$ERR" "--store: the store URL must start with etcd://"
expect 2 "$LMX" broker --listen tcp://127.0.0.1:0 --store etcd://127.0.0.1
contains "$ERR" "'127.0.0.1' is not HOST:PORT"
expect 0 "$LMX" broker --help
contains "$OUT" "--store-cacert FILE "
ok "a bad --store URL is refused"


for cmd in "acquire k" "release k --force" "release k --id x" "ls" "info k" "stats" "ping"; do
  # shellcheck disable=SC2086
  expect 3 "$LMX" $cmd --url "$dead"
  contains "$ERR" "no broker at $dead"
  contains "$ERR" "--ensure-broker"
done
expect 3 "$LMX" run k --url "$dead" -- sh -c "touch '$T/ran'"
[[ ! -e $T/ran ]] || fail "run ran its command without a broker"
ok "an unreachable broker exits 3 with what to do"

# Bash completion offers subcommands, the options of a subcommand and setting names.
complete_words() {
  COMP_WORDS=("$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _lmx
  echo "${COMPREPLY[*]}"
}
source "$(dirname "$0")/../../scripts/lmx-completion.bash"
contains "$(complete_words "$LMX" ru)" "run"
contains "$(complete_words "$LMX" run --on)" "--on-lost"
contains "$(complete_words "$LMX" acquire --no)" "--no-wait"
[[ $(complete_words "$LMX" set uds) == uds_path ]] || fail "set completion: $(complete_words "$LMX" set uds)"
ok "bash completion"

# A request the client refuses before sending it says why, the broker's limits included.
start_broker
expect 2 "$LMX" acquire "" --url "$TCP_URL"
contains "$ERR" "invalid request: a key must not be empty"
expect 2 "$LMX" run "$(printf 'k%.0s' $(seq 2000))" --url "$UNIX_URL" -- true
contains "$ERR" "over the broker's limit of 1024"
ok "refused requests say why"
