#!/usr/bin/env bash
# lmx over etcd beside etcd's own lock service and the in-memory broker: W1, W2, W3 and the
# uncontended cycle, in interleaved rounds, over one etcd member on tmpfs:
#   over etcd   lmx-bench against one broker with --store
#   2 brokers   two lmx-bench processes at once, one per broker, each with half the workers and
#               cycles (W1: the same key through both brokers); their rates added
#   etcd lock   bench/etcd/v3lock.mjs: /v3/lock/lock + /v3/lock/unlock through etcd's gateway
#   in memory   lmx-bench against a broker without --store
# Prints the median of each figure and the ratios to etcd's lock service and to memory.
#
#   bash bench/etcd.sh [ROUNDS] [CYCLES]        # defaults: 3 rounds of 3000 cycles
#
# Needs the release build (build/release: lmx, lmx-bench), /usr/bin/etcd (scripts/deps.sh test),
# node and curl.
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
client=$(port) peer=$(port) over=$(port) over2=$(port) mem=$(port)
"$etcd" --name m --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$client" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "m=http://127.0.0.1:$peer" \
  --logger zap --log-level warn >"$dir/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"health":"true"' && break
  sleep 0.1
done
for p in "$over" "$over2"; do
  "$lmx" broker --listen "tcp://127.0.0.1:$p" --store "etcd://127.0.0.1:$client" >"$dir/over-$p.log" 2>&1 &
  pids+=($!)
done
"$lmx" broker --listen "tcp://127.0.0.1:$mem" >"$dir/mem.log" 2>&1 &
pids+=($!)
for p in "$over" "$over2"; do
  for _ in $(seq 100); do
    "$lmx" acquire bench-ready --url "tcp://127.0.0.1:$p" --no-wait --ttl 100 >/dev/null 2>&1 && break
    sleep 0.1
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
rate() { sed -n 's/.* = \([0-9.]*\) cycles\/ms.*/\1/p' | head -1; }
figure() {  # URL WORKLOAD -> cycles per ms
  "$bench" run --url "$1" -w "$2" -n "$cycles" 2>&1 | rate
}
# Both brokers at once, half the workers and cycles each; W1's one key is shared by both.
two() {  # WORKLOAD -> cycles per ms
  local w=$1 half=$((cycles / 2)) in_flight shared=()
  case $w in w1 | w2) in_flight=10 ;; w3) in_flight=5 ;; lat) echo 0; return ;; esac
  [[ $w == w1 ]] && shared=(--prefix "bench-two-$RANDOM-")
  local args=(-w "$w" -n "$half" --in-flight "$in_flight")
  [[ $w == w3 ]] && args+=(--procs 2)
  "$bench" run --url "tcp://127.0.0.1:$over" "${args[@]}" "${shared[@]}" >"$dir/two-a" 2>&1 &
  local a=$!
  "$bench" run --url "tcp://127.0.0.1:$over2" "${args[@]}" "${shared[@]}" >"$dir/two-b" 2>&1
  wait "$a"
  awk -v x="$(rate <"$dir/two-a")" -v y="$(rate <"$dir/two-b")" 'BEGIN {print x + y}'
}
v3lock() {  # WORKLOAD -> cycles per ms
  node "$root/bench/etcd/v3lock.mjs" --endpoint "http://127.0.0.1:$client" --workload "$1" --cycles "$cycles" 2>&1 | rate
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > 0 ? a / b : 0)}'; }
printf '%-5s %11s %11s %11s %11s %10s %10s\n' workload "over etcd" "2 brokers" "etcd lock" "in memory" "/etcd lock" "/memory"
for w in w1 w2 w3 lat; do
  o=() t=() e=() m=()
  for _ in $(seq "$rounds"); do
    o+=("$(figure "tcp://127.0.0.1:$over" "$w")")
    t+=("$(two "$w")")
    e+=("$(v3lock "$w")")
    m+=("$(figure "tcp://127.0.0.1:$mem" "$w")")
  done
  om=$(printf '%s\n' "${o[@]}" | median)
  tm=$(printf '%s\n' "${t[@]}" | median)
  em=$(printf '%s\n' "${e[@]}" | median)
  mm=$(printf '%s\n' "${m[@]}" | median)
  printf '%-5s %11.2f %11.2f %11.2f %11.2f %10.3f %10.3f\n' "$w" "$om" "$tm" "$em" "$mm" "$(ratio "$om" "$em")" "$(ratio "$om" "$mm")"
done
echo "cycles/ms, medians of $rounds round(s) of $cycles cycles; ratios are of 'over etcd' (one broker)"
