#!/usr/bin/env bash
# Builds the client under ThreadSanitizer (preset "tsan": core, transport, client and the TSan
# tests only) and runs test/tsan: clients used from many threads at once, against a real broker.
# The broker is the ASan test build's `lmx` (built here when missing), or $LMX_BINARY.
#   scripts/tsan.sh [ctest args...]    e.g. scripts/tsan.sh -R lifecycle --verbose
# Exits non-zero on a test failure or on any ThreadSanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h | --help)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

start=$SECONDS
bash scripts/deps.sh build
bash scripts/configure.sh tsan
cmake --build --preset tsan

# Absolute, since the tests run in their build directory.
broker=$(readlink -m -- "${LMX_BINARY:-$(sed -n 's/^LMX_BROKER_BINARY:[A-Z]*=//p' build/tsan/CMakeCache.txt)}")
if [[ ! -x $broker ]]; then
  if [[ -n ${LMX_BINARY:-} || $broker != "$(readlink -m build/test/apps/lmx/lmx)" ]]; then
    echo "tsan: no broker executable at $broker" >&2
    exit 1
  fi
  # Only the broker app of the test build, not the whole ASan suite.
  bash scripts/configure.sh test
  cmake --build --preset test --target lmx
fi
export LMX_BINARY=$broker

# The preset sets TSAN_OPTIONS (halt_on_error=1:second_deadlock_stack=1, and test/tsan/tsan.supp
# for what is proven to be Boost's): the first report ends the test process with a failure. The
# log is searched as well, for a report in a process whose exit status hides it.
status=0
ctest --preset tsan "$@" || status=$?
log=build/tsan/Testing/Temporary/LastTest.log
if [[ -f $log ]] && grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "tsan: ThreadSanitizer reports in $log" >&2
  status=1
fi
echo "tsan: done in $((SECONDS - start)) s" >&2
exit "$status"
