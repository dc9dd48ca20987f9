#!/usr/bin/env bash
# Builds the release configuration and runs the broker with its defaults
# (tcp://127.0.0.1:6970 and ws://127.0.0.1:6971). Extra arguments go to `lmx broker`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
bash scripts/configure.sh release
cmake --build --preset release --target lmx
exec build/release/apps/lmx/lmx broker "$@"
