# The `lmx` command against a broker that requires a token: --token-file, LMX_TOKEN_FILE and
# `lmx set token_file`, the messages for a missing or wrong token, and --force needing admin.
source "$(dirname "$0")/lib.sh"
printf '%s\n' "client-token-0123456789abcdef" "admin-token-0123456789abcdef admin" >"$T/tokens"
chmod 600 "$T/tokens"
echo "client-token-0123456789abcdef" >"$T/client"
echo "admin-token-0123456789abcdef" >"$T/admin"
echo "wrong-token-0123456789abcdef" >"$T/wrong"
start_broker --auth-token-file "$T/tokens"

# No token: a clear message, usage exit code, nothing locked.
expect 2 "$LMX" acquire no-token
contains "$ERR" "requires a valid token"
contains "$ERR" "--token-file"
expect 2 "$LMX" ping --token-file "$T/wrong"
contains "$ERR" "requires a valid token"
expect 2 "$LMX" ping --token-file "$T/missing"
contains "$ERR" "cannot read the token file $T/missing"
ok "no token, a wrong token and a missing token file are told apart"

# The flag, the environment and the settings file, over every transport.
for url in "$TCP_URL" "$UNIX_URL" "$WS_URL"; do
  expect 0 "$LMX" acquire "flag-${url%%:*}" --url "$url" --token-file "$T/client"
  read -r id _ <<<"$OUT"
  LMX_TOKEN_FILE=$T/client expect 0 "$LMX" release "flag-${url%%:*}" --id "$id" --url "$url"
done
ok "--token-file and LMX_TOKEN_FILE on tcp, unix and ws"
expect 2 "$LMX" set token_file "$T/missing"
contains "$ERR" "cannot read the token file"
expect 0 "$LMX" set token_file "$T/client"
expect 0 "$LMX" get token_file
[[ $OUT == "$T/client" ]] || fail "get token_file printed '$OUT'"
expect 0 "$LMX" acquire settings-key
read -r id _ <<<"$OUT"
ok "lmx set token_file"

# A client token may release by id but not force every holder; an admin token may.
expect 1 "$LMX" release settings-key --force
contains "$ERR" "admin role"
[[ $(LMX_TOKEN_FILE=$T/admin holders settings-key) == 1 ]] || fail "a client token forced a release"
expect 0 "$LMX" release settings-key --force --token-file "$T/admin"
contains "$OUT" "force-released settings-key"
ok "release --force needs the admin role"

# Pins at run time: the admin's.
expect 1 "$LMX" pin jobs/ 2
contains "$ERR" "admin role"
expect 0 "$LMX" pin jobs/ 2 --token-file "$T/admin"
contains "$OUT" "pinned max 2 for keys starting with 'jobs/'"
expect 2 "$LMX" acquire jobs/a --max 3 --no-wait
contains "$ERR" "pins the key's --max"
expect 0 "$LMX" acquire jobs/a --no-wait --json
contains "$OUT" '"key":"jobs/a"'
expect 2 "$LMX" pin jobs/ --token-file "$T/admin"
contains "$ERR" "--remove"
expect 0 "$LMX" pin jobs/ --remove --token-file "$T/admin" --json
contains "$OUT" '"pinned":false'
expect 0 "$LMX" acquire jobs/b --max 3 --no-wait
ok "lmx pin needs the admin role, and pins and unpins"
