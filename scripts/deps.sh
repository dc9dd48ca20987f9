#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages lmx needs, only when something is missing.
#   scripts/deps.sh [build|test]   (test adds what the test suite drives: node, npm, and the
#                                   headless Chromium of the browser tests)
set -euo pipefail

want=(g++ cmake make ccache libboost1.81-dev libboost-json1.81-dev libboost-test1.81-dev libcli11-dev)
if [[ "${1:-build}" == test ]]; then
  # fonts-liberation: chromium only recommends it, and dashboard screenshots want real fonts.
  want+=(nodejs npm chromium chromium-driver fonts-liberation)
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
fi
