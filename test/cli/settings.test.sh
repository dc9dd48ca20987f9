# lmx set / get / unset and where client commands look for the broker:
# flags > environment > settings file > defaults; uds_path wins over host/port.
source "$(dirname "$0")/lib.sh"
start_broker
unset LMX_URL
port=${TCP_URL##*:}
sock=${UNIX_URL#unix://}
dead=$(free_port)
file=$XDG_CONFIG_HOME/lmx/config.json

# Nothing set: the default URL.
expect 0 "$LMX" get
contains "$OUT" "tcp://127.0.0.1:6970 (from the default)"
expect 1 "$LMX" get port
[[ -z $OUT ]] || fail "an unset name printed '$OUT'"

# The settings file.
expect 0 "$LMX" set port "$port"
contains "$OUT" "saved in $file"
[[ -f $file ]] || fail "no settings file at $file"
expect 0 "$LMX" get port
[[ $OUT == "$port" ]] || fail "get port printed '$OUT'"
expect 0 "$LMX" ping
contains "$OUT" "tcp://127.0.0.1:$port"
expect 0 "$LMX" get --json
contains "$OUT" "\"url\":\"tcp://127.0.0.1:$port\""
contains "$OUT" '"url_from":"settings file"'
ok "set port is used by client commands"

# The environment wins over the file; flags win over both.
LMX_PORT=$dead expect 3 "$LMX" ping
contains "$ERR" "no broker at tcp://127.0.0.1:$dead"
LMX_PORT=$dead expect 0 "$LMX" ping --port "$port"
LMX_URL=tcp://127.0.0.1:$dead expect 0 "$LMX" ping --url "$TCP_URL"
LMX_HOST=localhost expect 0 "$LMX" ping
contains "$OUT" "tcp://localhost:$port"
ok "flags > environment > settings file"

# uds_path wins over host and port in the same layer.
expect 0 "$LMX" set uds_path "$sock"
expect 0 "$LMX" ping
contains "$OUT" "$UNIX_URL"
expect 0 "$LMX" set host 127.0.0.2
expect 0 "$LMX" ping
contains "$OUT" "$UNIX_URL"
LMX_UDS_PATH=$T/nowhere.sock expect 3 "$LMX" ping
contains "$ERR" "no broker at unix://$T/nowhere.sock"
expect 0 "$LMX" unset uds_path
expect 0 "$LMX" unset host
expect 0 "$LMX" ping
contains "$OUT" "tcp://127.0.0.1:$port"
ok "uds_path wins over host/port; unset"

# url wins over the rest; the client library's from_env reads the same file.
expect 0 "$LMX" set url "$WS_URL"
expect 0 "$LMX" ping
contains "$OUT" "$WS_URL"
expect 0 "$LMX" unset url
expect 0 "$LMX" unset port
expect 0 "$LMX" get
contains "$OUT" "(from the default)"
ok "url setting"

# Bad values and a damaged file: a clear error, exit 2, nothing lost.
expect 2 "$LMX" set port 70000
contains "$ERR" "port must be a number from 1 to 65535"
expect 2 "$LMX" set colour blue
expect 2 "$LMX" set host ""
contains "$ERR" "cannot be empty"
LMX_PORT=abc expect 2 "$LMX" ping
contains "$ERR" "LMX_PORT must be a number"
echo '{"port": ' >"$file"
expect 2 "$LMX" ping
contains "$ERR" "$file"
expect 2 "$LMX" set port "$port"
[[ $(cat "$file") == '{"port": ' ]] || fail "a failed set rewrote a damaged file"
ok "bad settings are refused with a message"
