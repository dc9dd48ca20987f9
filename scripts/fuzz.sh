#!/usr/bin/env bash
# Builds the libFuzzer targets of test/fuzz (preset "fuzz": clang, ASan+UBSan, only core and
# transport besides the fuzzers) and runs each on its corpus, --jobs targets at a time.
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [--merge] [--no-build] [target...]
#     --time SECONDS  fuzzing time per target (default 60)
#     --jobs N        targets fuzzed at once (default 2)
#     --merge         afterwards, add the new inputs that gain coverage to test/fuzz/corpus/<target>
#                     (otherwise they stay in the scratch corpus build/fuzz/corpus/<target>)
#     --no-build      run what is built
#     targets         request reply line_buffer websocket lock_table rw_locks (default: all)
# Exits non-zero on any crash, leak, timeout, out-of-memory or broken property, naming the target,
# its log and the reproducer (rerun it with build/fuzz/test/fuzz/fuzz_<target> <reproducer>).
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(websocket lock_table rw_locks request reply line_buffer)
seconds=60
jobs=2
merge=0
build=1
targets=()
while (($#)); do
  case "$1" in
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    --time) seconds=${2:?--time needs a number of seconds}; shift ;;
    --time=*) seconds=${1#*=} ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    --jobs=*) jobs=${1#*=} ;;
    --merge) merge=1 ;;
    --no-build) build=0 ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if [[ " ${all_targets[*]} " != *" $1 "* ]]; then
        echo "fuzz: unknown target $1 (targets: ${all_targets[*]})" >&2
        exit 2
      fi
      targets+=("$1")
      ;;
  esac
  shift
done
((${#targets[@]})) || targets=("${all_targets[@]}")
if ! [[ $seconds =~ ^[1-9][0-9]*$ && $jobs =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: --time and --jobs take positive integers" >&2
  exit 2
fi

start=$SECONDS
if ((build)); then
  bash scripts/deps.sh fuzz
  bash scripts/configure.sh fuzz
  cmake --build --preset fuzz
  echo "fuzz: built in $((SECONDS - start)) s" >&2
fi

out=build/fuzz
bin=$out/test/fuzz

# Inputs stay small: frames and op sequences that matter are short, and short inputs run fast.
max_len() {
  case "$1" in
    lock_table) echo 1024 ;;
    websocket) echo 8192 ;;
    *) echo 4096 ;;
  esac
}
dict() {
  case "$1" in
    request | reply) echo test/fuzz/json.dict ;;
    websocket) echo test/fuzz/websocket.dict ;;
  esac
}

# One target: new inputs go to the scratch corpus (listed first), the committed one is only read.
run_target() {
  local t=$1 d
  local scratch=$out/corpus/$t artifacts=$out/artifacts/$t/
  mkdir -p "$scratch" "$artifacts"
  local args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
    -artifact_prefix="$artifacts" -print_final_stats=1)
  d=$(dict "$t")
  [[ -n $d ]] && args+=(-dict="$d")
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin/fuzz_$t" "${args[@]}" "$scratch" "test/fuzz/corpus/$t" >"$out/logs/$t.log" 2>&1
}

mkdir -p "$out/logs"
stamp=$out/logs/.started
touch "$stamp"
declare -A running=()
failed=()
# An interrupted run takes its fuzzers down with it.
trap 'for p in "${!running[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

finish() {
  local t=$1 status=$2 found
  if ((status == 0)); then
    echo "fuzz: $t ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$out/logs/$t.log" | grep -o '[0-9]*$' || echo '?') runs)" >&2
    return
  fi
  failed+=("$t")
  found=$(find "$out/artifacts/$t" -type f -newer "$stamp" 2>/dev/null | head -1)
  {
    echo "fuzz: $t FAILED (exit $status); log: $out/logs/$t.log"
    grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|fuzz property broken|SUMMARY:|std::logic_error|terminate called' \
      "$out/logs/$t.log" | head -5 | sed 's/^/fuzz:   /' || true
    if [[ -n $found ]]; then
      echo "fuzz:   reproducer: $found"
      echo "fuzz:   rerun: $bin/fuzz_$t $found"
    fi
  } >&2
}

echo "fuzz: ${targets[*]}: ${seconds} s each, $jobs at a time" >&2
for t in "${targets[@]}"; do
  while ((${#running[@]} >= jobs)); do
    status=0
    wait -n -p done_pid "${!running[@]}" || status=$?
    finish "${running[$done_pid]}" "$status"
    unset "running[$done_pid]"
  done
  run_target "$t" &
  running[$!]=$t
done
while ((${#running[@]})); do
  status=0
  wait -n -p done_pid "${!running[@]}" || status=$?
  finish "${running[$done_pid]}" "$status"
  unset "running[$done_pid]"
done

if ((merge)); then
  for t in "${targets[@]}"; do
    if [[ " ${failed[*]} " == *" $t "* ]]; then continue; fi
    before=$(find "test/fuzz/corpus/$t" -type f | wc -l)
    "$bin/fuzz_$t" -merge=1 -max_len="$(max_len "$t")" -rss_limit_mb=2048 "test/fuzz/corpus/$t" "$out/corpus/$t" \
      >"$out/logs/$t.merge.log" 2>&1
    echo "fuzz: $t: merged $(($(find "test/fuzz/corpus/$t" -type f | wc -l) - before)) new inputs into test/fuzz/corpus/$t" >&2
  done
fi

echo "fuzz: done in $((SECONDS - start)) s" >&2
if ((${#failed[@]})); then
  echo "fuzz: failures in: ${failed[*]}" >&2
  exit 1
fi
