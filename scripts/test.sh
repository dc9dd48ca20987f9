#!/usr/bin/env bash
# Builds the test configuration (-Werror, ASan+UBSan) and runs the whole suite: CTest (unit,
# integration, client, interop, cli, browser, check), then the ThreadSanitizer suite of the client
# (scripts/tsan.sh), each libFuzzer target for a bounded time (scripts/fuzz.sh), and the Debian
# packages built from a release build and checked (scripts/package.sh,
# test/package/package_test.sh: as root it installs and purges them).
#   scripts/test.sh                   everything (what CI runs)
#   scripts/test.sh [ctest args...]   CTest only, e.g. scripts/test.sh -L unit
# LMX_FUZZ_SECONDS sets the fuzzing time per target (default 45).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
bash scripts/configure.sh test
cmake --build --preset test
if (($#)); then
  exec ctest --preset test "$@"
fi
status=0
ctest --preset test || status=1
bash scripts/tsan.sh || status=1
bash scripts/fuzz.sh --time "${LMX_FUZZ_SECONDS:-45}" || status=1
if bash scripts/package.sh; then
  bash test/package/package_test.sh || status=1
else
  status=1
fi
exit "$status"
