#!/usr/bin/env bash
# `lmx broker --config FILE` and `--print-config`: every option is a key and every key an option,
# the file round-trips, the command line wins, bad files are refused naming the file and the key,
# and a broker started from a file runs with its settings.
source "$(dirname "$0")/lib.sh"

keys_of_json() { node -e 'for (const k of Object.keys(JSON.parse(require("fs").readFileSync(0, "utf8")))) console.log(k)'; }
value_of() { node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8"))[process.argv[1]]; console.log(JSON.stringify(v))' "$1"; }

# Every option of `lmx broker --help` has its key, and every key is an option.
expect 0 "$LMX" broker --help
help_keys=$(grep -oE '^ +(-[a-zA-Z], ?)?--[a-z0-9-]+' <<<"$OUT" | sed -E 's/.*--//' | grep -vxE 'help|config|print-config' | sort -u)
expect 0 "$LMX" broker --print-config
config_keys=$(keys_of_json <<<"$OUT" | sort)
[[ -n $help_keys && $(wc -l <<<"$help_keys") -ge 30 ]] || fail "read too few options from --help: $help_keys"
[[ $help_keys == "$config_keys" ]] || fail "options and config keys differ:
$(diff <(echo "$help_keys") <(echo "$config_keys"))"
ok "every broker option is a config key and back ($(wc -l <<<"$help_keys") of them)"

# Defaults as numbers, a file mode as a string, flags as booleans, lists as lists.
defaults=$OUT
[[ $(value_of ttl <<<"$defaults") == 5000 ]] || fail "ttl: $(value_of ttl <<<"$defaults")"
[[ $(value_of unix-mode <<<"$defaults") == '"0660"' ]] || fail "unix-mode: $(value_of unix-mode <<<"$defaults")"
[[ $(value_of auth-http <<<"$defaults") == false ]] || fail "auth-http: $(value_of auth-http <<<"$defaults")"
[[ $(value_of key-max <<<"$defaults") == '[]' ]] || fail "key-max: $(value_of key-max <<<"$defaults")"
[[ $(value_of listen <<<"$defaults") == '["tcp://127.0.0.1:6970","ws://127.0.0.1:6971"]' ]] ||
  fail "listen: $(value_of listen <<<"$defaults")"
[[ $(value_of max-connections <<<"$defaults") == null ]] || fail "max-connections: $(value_of max-connections <<<"$defaults")"
ok "print-config types"

# The printed settings are a config file that reads back to the same settings.
printf '%s\n' "$defaults" >"$T/defaults.json"
expect 0 "$LMX" broker --config "$T/defaults.json" --print-config
[[ $OUT == "$defaults" ]] || fail "round trip changed the settings:
$(diff <(echo "$defaults") <(echo "$OUT"))"
cat >"$T/some.json" <<'JSON'
{
  "ttl": 1234,
  "listen": ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/"],
  "key-max": ["pinned/=3"],
  "auth-http": true,
  "unix-mode": "0600",
  "tls-cert": null
}
JSON
expect 0 "$LMX" broker --config "$T/some.json" --print-config
some=$OUT
[[ $(value_of ttl <<<"$some") == 1234 ]] || fail "ttl from the file: $(value_of ttl <<<"$some")"
[[ $(value_of listen <<<"$some") == '["tcp://127.0.0.1:0","ws://127.0.0.1:0/"]' ]] || fail "listen: $(value_of listen <<<"$some")"
[[ $(value_of auth-http <<<"$some") == true ]] || fail "auth-http from the file"
[[ $(value_of unix-mode <<<"$some") == '"0600"' ]] || fail "unix-mode from the file"
printf '%s\n' "$some" >"$T/some-printed.json"
expect 0 "$LMX" broker --config "$T/some-printed.json" --print-config
[[ $OUT == "$some" ]] || fail "round trip of a file's settings changed them"
ok "a printed config reads back to the same settings"

# The command line wins over the file, list options included.
expect 0 "$LMX" broker --config "$T/some.json" --ttl 99 --listen tcp://127.0.0.1:7 --print-config
[[ $(value_of ttl <<<"$OUT") == 99 ]] || fail "--ttl did not win: $(value_of ttl <<<"$OUT")"
[[ $(value_of listen <<<"$OUT") == '["tcp://127.0.0.1:7"]' ]] || fail "--listen did not win: $(value_of listen <<<"$OUT")"
[[ $(value_of key-max <<<"$OUT") == '["pinned/=3"]' ]] || fail "key-max from the file was lost"
ok "options on the command line win"

# Bad files are refused, naming the file and the key; nothing starts.
bad() {
  local name=$1 body=$2 want=$3
  printf '%s\n' "$body" >"$T/$name.json"
  expect 2 "$LMX" broker --config "$T/$name.json" --listen tcp://127.0.0.1:0
  contains "$ERR" "$T/$name.json"
  contains "$ERR" "$want"
}
bad unknown '{"ttl": 100, "tll": 5}' "unknown key 'tll' (did you mean 'ttl'?)"
bad stranger '{"colour": "blue"}' "unknown key 'colour' (lmx broker --help lists the settings)"
bad skipped '{"print-config": true}' "unknown key 'print-config'"
bad range '{"ttl": 0}' "key 'ttl'"
bad word '{"max-keys": "many"}' "key 'max-keys'"
bad flag '{"auth-http": 1}' "key 'auth-http': true or false"
bad nested '{"ttl": {"ms": 5}}' "key 'ttl'"
bad choice '{"log-level": "loud"}' "key 'log-level'"
bad syntax $'{\n  "ttl": 100,\n  "listen": [\n}' "$T/syntax.json:4:"
bad array '[1, 2]' "a JSON object"
expect 2 "$LMX" broker --config "$T/missing.json"
contains "$ERR" "$T/missing.json: cannot read it"
ok "bad config files are refused with the file and the key"

# A broker started from a file runs with its settings: the listeners and the pinned max.
cat >"$T/run.json" <<JSON
{
  "listen": ["tcp://127.0.0.1:0"],
  "urls-file": "$T/urls",
  "key-max": ["pinned/=3"],
  "log-level": "warn"
}
JSON
"$LMX" broker --config "$T/run.json" 2>>"$T/broker.log" &
BROKER_PID=$!
for _ in $(seq 200); do [[ -s $T/urls ]] && break; sleep 0.05; done
[[ -s $T/urls ]] || fail "the broker started from a file did not listen"
export LMX_URL=$(head -1 "$T/urls")
[[ $LMX_URL == tcp://127.0.0.1:* ]] || fail "listens on $LMX_URL"
expect 2 "$LMX" acquire pinned/a --max 5 --no-wait
contains "$ERR" "pins the key's --max"
ok "a broker started from a config file runs with its settings"
