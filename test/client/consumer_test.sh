#!/usr/bin/env bash
# Packaging check: lmx used the two ways a project can use it.
#  1. `cmake --install` the build, then build docs/examples against it with find_package(lmx) and
#     run them against a real broker over tcp, unix and ws.
#  2. Build test/client/consumer_subdir, which pulls lmx in with add_subdirectory, and run it.
#
#   consumer_test.sh SOURCE_DIR BUILD_DIR WORK_DIR LMX_BINARY CMAKE CXX SANITIZE(1|0)
#
# WORK_DIR is kept between runs on purpose: the consumer builds are then incremental, and ccache
# serves what must be recompiled.
set -euo pipefail
src=$1 build=$2 work=$3 lmx=$4 cmake=$5 cxx=$6 sanitize=$7

mkdir -p "$work"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# The installed libraries of a sanitized build need the sanitizer runtimes in every program that
# links them.
san=()
if [[ $sanitize == 1 ]]; then
  san=(-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined)
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

step() { printf '== %s\n' "$*"; }

step "install into $work/prefix"
rm -rf "$work/prefix"
# As root (as CI runs), the install runs as an unprivileged user, so that anything it would
# write outside the prefix fails it. That user needs to read the build tree; when it cannot
# (a build under a private home), the install runs as root and the manifest check below stands.
nobody=65534
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null &&
   setpriv --reuid=$nobody --regid=$nobody --clear-groups test -r "$build/cmake_install.cmake"; then
  mkdir -p "$work/prefix"
  chown $nobody:$nobody "$work/prefix"
  # CMake writes its manifest into the build tree: an existing file the user owns is enough.
  : >"$build/install_manifest.txt"
  chown $nobody "$build/install_manifest.txt"
  setpriv --reuid=$nobody --regid=$nobody --clear-groups "$cmake" --install "$build" --prefix "$work/prefix" >/dev/null
  echo "installed as uid $nobody"
else
  "$cmake" --install "$build" --prefix "$work/prefix" >/dev/null
  echo "installed as uid $(id -u) (the build tree is not readable by uid $nobody)"
fi
test -f "$work/prefix/lib/cmake/lmx/lmxConfig.cmake" || test -f "$work/prefix/lib64/cmake/lmx/lmxConfig.cmake"
test -f "$work/prefix/include/lmx/client/client.hpp"
test -f "$work/prefix/include/lmx/version.hpp"
test -f "$work/prefix/share/bash-completion/completions/lmx"
# Everything the install wrote lies under the prefix (nothing at the file-system root).
outside=$(grep -v "^$work/prefix/" "$build/install_manifest.txt" || true)
if [[ -n $outside ]]; then echo "installed outside the prefix:"; echo "$outside"; exit 1; fi

step "build docs/examples with find_package(lmx)"
"$cmake" -S "$src/docs/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLMX_EXAMPLES_WERROR=ON "${launcher[@]}" "${san[@]}" >/dev/null
"$cmake" --build "$work/examples" -j2

step "build test/client/consumer_asio (Asio header-only, deprecated names, TLS) with find_package(lmx)"
"$cmake" -S "$src/test/client/consumer_asio" -B "$work/asio" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  "${launcher[@]}" "${san[@]}" >/dev/null
"$cmake" --build "$work/asio" -j2

step "build test/client/consumer_subdir with add_subdirectory(lmx)"
"$cmake" -S "$src/test/client/consumer_subdir" -B "$work/subdir" -DLMX_SOURCE_DIR="$src" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLMX_BUILD_TESTS=OFF -DLMX_BUILD_APPS=OFF -DLMX_BUILD_BENCH=OFF -DLMX_INSTALL=OFF "${launcher[@]}" >/dev/null
"$cmake" --build "$work/subdir" -j2 --target lmx_subdir_consumer

step "start a broker"
rm -f "$work/urls" "$work/lmx.sock"
# Every program runs under `timeout`, so that nothing outlives a run that is killed.
timeout 300 "$lmx" broker --listen tcp://127.0.0.1:0 --listen "unix://$work/lmx.sock" --listen ws://127.0.0.1:0/ \
  --urls-file "$work/urls" >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [[ -s $work/urls ]] && break; sleep 0.05; done
mapfile -t urls <"$work/urls"
[[ ${#urls[@]} -eq 3 ]] || { cat "$work/broker.log"; exit 1; }

for url in "${urls[@]}"; do
  step "basic_guard and the add_subdirectory consumer over $url"
  timeout 60 "$work/examples/basic_guard" "$url"
  timeout 60 "$work/subdir/lmx_subdir_consumer" "$url"
done

step "consumer_asio over ${urls[0]}";           timeout 60 "$work/asio/lmx_asio_consumer" "${urls[0]}"

# The other examples once each, spread over the transports.
step "rate_limiter over ${urls[0]}";           timeout 60 "$work/examples/rate_limiter" "${urls[0]}"
step "callbacks_and_futures over ${urls[1]}";  timeout 60 "$work/examples/callbacks_and_futures" "${urls[1]}"
step "acquire_timeout over ${urls[2]}";        timeout 60 "$work/examples/acquire_timeout" "${urls[2]}"
step "fencing_token over ${urls[0]}";          timeout 60 "$work/examples/fencing_token" "${urls[0]}"
# Also through the environment, as from_env() reads it.
step "basic_guard with LMX_URL";               LMX_URL=${urls[1]} timeout 60 "$work/examples/basic_guard"

step "http_server over ${urls[1]}"
rm -f "$work/http.out"  # the server creates it anew; never read a previous run's port
timeout 60 "$work/examples/http_server" "${urls[1]}" 0 2 >"$work/http.out" 2>&1 &
http_pid=$!
pids+=($http_pid)
port=
for _ in $(seq 200); do
  port=$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$work/http.out" 2>/dev/null || true)
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { cat "$work/http.out"; exit 1; }
# Plain HTTP/1.1 through bash's /dev/tcp, so the test needs no HTTP client installed.
get() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3
  reply=$(timeout 20 cat <&3)
  exec 3<&-
  printf '%s\n' "$reply" | tail -n 1
  [[ $reply == "HTTP/1.1 200"* ]]
}
get /orders/1
get /orders/2
wait "$http_pid"
step "all consumers work"
