# tls:// and wss:// end to end: a broker with a throwaway CA's certificate, the `lmx` command (the
# C++ client) verifying it, and each way the check fails; then mutual TLS.
source "$(dirname "$0")/lib.sh"
P=$T/pki
mkdir -p "$P"
cp "$(dirname "$0")/../support/openssl.cnf" "$P/openssl.cnf"
cd "$P"
: >index.txt
echo 1000 >serial
quiet() { "$@" >>openssl.log 2>&1 || fail "$* failed: $(cat openssl.log)"; }
ca() { quiet openssl req -x509 -config openssl.cnf -extensions v3_ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=lmx test $1"; }
request() {
  printf 'basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = %s\n' "$2" >"$1.ext"
  quiet openssl req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
}
leaf() { request "$1" "$3"; quiet openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem"; }
ca ca
ca other_ca
leaf server ca "DNS:localhost,IP:127.0.0.1"
leaf wrong_host ca "DNS:other.example"
leaf foreign other_ca "DNS:localhost,IP:127.0.0.1"
leaf client ca "DNS:client.example"
# openssl 3.0's x509 cannot date a certificate in the past; its ca command can.
request expired "DNS:localhost,IP:127.0.0.1"
quiet openssl ca -config openssl.cnf -batch -notext -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200102000000Z -extfile expired.ext
cd - >/dev/null

# tls_broker NAME [ARGS...]: a broker on tls:// and wss:// serving certificate NAME; sets TLS_URL, WSS_URL.
tls_broker() {
  local name=$1
  shift
  [[ -n $BROKER_PID ]] && { kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; }
  rm -f "$T/urls"
  "$LMX" broker --listen tls://127.0.0.1:0 --listen wss://127.0.0.1:0/ --urls-file "$T/urls" \
    --tls-cert "$P/$name.pem" --tls-key "$P/$name.key" --log-level warn "$@" 2>>"$T/broker.log" &
  BROKER_PID=$!
  for _ in $(seq 200); do [[ -s $T/urls ]] && break; sleep 0.05; done
  [[ -s $T/urls ]] || fail "broker did not start: $(cat "$T/broker.log")"
  TLS_URL=$(grep '^tls://' "$T/urls")
  WSS_URL=$(grep '^wss://' "$T/urls")
}

# A good certificate: the C++ client verifies chain and address, over both schemes.
tls_broker server
for url in "$TLS_URL" "$WSS_URL"; do
  expect 0 "$LMX" acquire "tls-${url%%:*}" --url "$url" --tls-ca "$P/ca.pem"
  read -r id _ <<<"$OUT"
  LMX_TLS_CA=$P/ca.pem expect 0 "$LMX" release "tls-${url%%:*}" --id "$id" --url "$url"
  # The system's CAs do not know ours.
  expect 3 "$LMX" ping --url "$url"
  contains "$ERR" "TLS with the broker at $url failed"
  contains "$ERR" "not signed by a trusted"
  # A plain client at a TLS port is not mistaken for a broker.
  expect 3 "$LMX" ping --url "${url/tls:/tcp:}" --connect-timeout 1000
done
ok "good certificate over tls:// and wss://, unknown CA refused"

# Each certificate failure, with its reason.
tls_broker wrong_host
expect 3 "$LMX" ping --url "$TLS_URL" --tls-ca "$P/ca.pem"
contains "$ERR" "another host"
expect 3 "$LMX" ping --url "$WSS_URL" --tls-ca "$P/ca.pem"
contains "$ERR" "another host"
tls_broker expired
expect 3 "$LMX" ping --url "$TLS_URL" --tls-ca "$P/ca.pem"
contains "$ERR" "expired"
tls_broker foreign
expect 3 "$LMX" ping --url "$TLS_URL" --tls-ca "$P/ca.pem"
contains "$ERR" "not signed by a trusted"
ok "wrong host, expired and foreign certificates are refused, each with its reason"

# Mutual TLS: the broker requires a client certificate.
tls_broker server --tls-client-ca "$P/ca.pem"
expect 3 "$LMX" ping --url "$TLS_URL" --tls-ca "$P/ca.pem"
contains "$ERR" "TLS with the broker at $TLS_URL failed"
expect 0 "$LMX" ping --url "$TLS_URL" --tls-ca "$P/ca.pem" --tls-cert "$P/client.pem" --tls-key "$P/client.key"
LMX_TLS_CERT=$P/client.pem LMX_TLS_KEY=$P/client.key expect 0 "$LMX" ping --url "$WSS_URL" --tls-ca "$P/ca.pem"
ok "mutual TLS: no client certificate refused, ours accepted"

# Start-up errors name the file.
expect 1 "$LMX" broker --listen tls://127.0.0.1:0 --tls-cert "$P/server.pem" --tls-key "$P/missing.key"
contains "$ERR" "$P/missing.key"
expect 1 "$LMX" broker --listen tls://127.0.0.1:0
contains "$ERR" "--tls-cert"
expect 2 "$LMX" broker --listen tls://127.0.0.1:0 --tls-cert "$P/server.pem"
contains "$ERR" "--tls-cert and --tls-key go together"
ok "bad TLS files stop the start with the file named"
