#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages lmx needs, only when something is missing.
#   scripts/deps.sh [build|package|test|fuzz]
#     package  adds what cpack needs for the Debian packages: dpkg-shlibdeps and file(1)
#     test     adds what the test suite drives: node, npm, the headless Chromium of the browser
#              tests, etcd for the etcd client's tests, clang with its libFuzzer/sanitizer
#              runtimes, promtool and lintian, and the package's needs
#     fuzz     adds only clang's part
set -euo pipefail

# ninja-build: the CMake presets generate Ninja builds.
# libssl-dev: tls:// and wss:// (Asio over OpenSSL); openssl: the TLS tests make their certificates with it.
want=(g++ cmake make ninja-build ccache libboost1.81-dev libboost-json1.81-dev libboost-test1.81-dev libcli11-dev libssl-dev openssl)
if [[ "${1:-build}" == test ]]; then
  # fonts-liberation: chromium only recommends it, and dashboard screenshots want real fonts.
  # clang-format: CTest lint.format checks the layout of the sources.
  # etcd-server: the etcd client's tests start real etcd members (the store of the HA mode).
  # prometheus: its promtool checks the broker's /metrics; lintian checks the Debian packages.
  want+=(nodejs npm chromium chromium-driver fonts-liberation clang-format etcd-server prometheus lintian)
fi
if [[ "${1:-build}" == package || "${1:-build}" == test ]]; then
  # dpkg-dev: dpkg-shlibdeps computes the lmx package's Depends; file: cpack finds the ELF files
  # with it.
  want+=(dpkg-dev file)
  # procps: the package test checks the broker's user with ps and the unit's kill(1).
  [[ "${1:-build}" == test ]] && want+=(procps)
fi
if [[ "${1:-build}" == fuzz || "${1:-build}" == test ]]; then
  # clang 14 is Debian 12's; libclang-rt-14-dev holds libclang_rt.fuzzer, asan and ubsan. The
  # test suite runs the fuzzers too, so one apt-get run installs everything it needs.
  want+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # node and npm may come from outside Debian (e.g. NodeSource); a working command is enough.
    case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "lmx: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts an etcd service of its own; the tests start their members themselves, so a
  # service installed here for them is stopped and disabled again.
  # The same for the Prometheus server and its node exporter: the tests need only promtool.
  if [[ -d /run/systemd/system ]]; then
    if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
      $sudo systemctl disable --now etcd.service >/dev/null 2>&1 || true
    fi
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
      $sudo systemctl disable --now prometheus.service prometheus-node-exporter.service >/dev/null 2>&1 || true
    fi
  fi
fi
