#!/usr/bin/env bash
# Configures a CMake preset: scripts/configure.sh PRESET (test, release, fuzz, tsan). The presets
# generate Ninja builds; a build directory left configured for another generator is reset first,
# since CMake refuses to switch generators in place (its objects are rebuilt, from ccache when
# it has them).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:?usage: scripts/configure.sh PRESET}
dir=build/$preset
if [[ -f $dir/CMakeCache.txt ]] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
  echo "lmx: $dir was configured for another generator; reconfiguring it for Ninja" >&2
  rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
fi
cmake --preset "$preset" >/dev/null
