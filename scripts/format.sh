#!/usr/bin/env bash
# Formats the C++ sources with clang-format and the repository's .clang-format.
#   scripts/format.sh           rewrite every .cpp/.hpp git knows of (tracked or not ignored) in place
#   scripts/format.sh --check   change nothing; list the files that differ and exit 1 if any
# (CTest runs the check as lint.format.)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h | --help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "format: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null || { echo "format: clang-format is missing (bash scripts/deps.sh test installs it)" >&2; exit 2; }
# Files not added yet count too: a new file is formatted before its first commit.
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cpp' '*.hpp' | grep -v '/node_modules/')
if ((check)); then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf 'format: not formatted (run bash scripts/format.sh): %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files formatted"
else
  clang-format -i "${files[@]}"
fi
