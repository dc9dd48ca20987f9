#!/usr/bin/env bash
# Builds the test configuration (-Werror, ASan+UBSan) and runs the whole suite.
#   scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
cmake --preset test >/dev/null
cmake --build --preset test
ctest --preset test "$@"
