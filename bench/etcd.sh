#!/usr/bin/env bash
# lmx over etcd beside the in-memory broker: W1, W2, W3 and the uncontended cycle through
# lmx-bench, against one broker with --store (a one-member etcd on tmpfs) and one without, in
# interleaved rounds; prints the median of each figure and the ratio.
#
#   bash bench/etcd.sh [ROUNDS] [CYCLES]        # defaults: 3 rounds of 3000 cycles
#
# Needs the release build (build/release: lmx, lmx-bench), /usr/bin/etcd (scripts/deps.sh test) and curl.
set -euo pipefail
rounds=${1:-3}
cycles=${2:-3000}
root=$(cd "$(dirname "$0")/.." && pwd)
lmx=$root/build/release/apps/lmx/lmx
bench=$root/build/release/bench/lmx-bench
etcd=${LMX_ETCD:-/usr/bin/etcd}
for f in "$lmx" "$bench" "$etcd"; do
  [[ -x $f ]] || { echo "bench/etcd.sh: $f is missing (cmake --build build/release; scripts/deps.sh test)" >&2; exit 3; }
done

base=/tmp
[[ -d /dev/shm ]] && base=/dev/shm
dir=$(mktemp -d "$base/lmx-bench-etcd.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port() {  # a free loopback port below the ephemeral range
  local p
  while :; do
    p=$((10000 + RANDOM % 20000))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
client=$(port) peer=$(port) over=$(port) mem=$(port)
"$etcd" --name m --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$client" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "m=http://127.0.0.1:$peer" \
  --logger zap --log-level warn >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"health":"true"' && break
  sleep 0.1
done
"$lmx" broker --listen "tcp://127.0.0.1:$over" --store "etcd://127.0.0.1:$client" >"$dir/over.log" 2>&1 &
pids+=($!)
"$lmx" broker --listen "tcp://127.0.0.1:$mem" >"$dir/mem.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$lmx" acquire bench-ready --url "tcp://127.0.0.1:$over" --no-wait --ttl 100 >/dev/null 2>&1 && break
  sleep 0.1
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
figure() {  # URL WORKLOAD -> cycles per ms
  "$bench" run --url "$1" -w "$2" -n "$cycles" 2>&1 | sed -n 's/.* = \([0-9.]*\) cycles\/ms.*/\1/p' | head -1
}
printf '%-5s %14s %14s %8s\n' workload "over etcd /ms" "in memory /ms" ratio
for w in w1 w2 w3 lat; do
  o=() m=()
  for _ in $(seq "$rounds"); do
    o+=("$(figure "tcp://127.0.0.1:$over" "$w")")
    m+=("$(figure "tcp://127.0.0.1:$mem" "$w")")
  done
  om=$(printf '%s\n' "${o[@]}" | median)
  mm=$(printf '%s\n' "${m[@]}" | median)
  printf '%-5s %14.2f %14.2f %8.3f\n' "$w" "$om" "$mm" "$(awk -v a="$om" -v b="$mm" 'BEGIN {print (b > 0 ? a / b : 0)}')"
done
