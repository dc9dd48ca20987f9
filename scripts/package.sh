#!/usr/bin/env bash
# Builds the Debian packages lmx and liblmx-dev from a release build (the `package` preset:
# prefix /usr, no tests or benchmarks) and prints their paths:
#   scripts/package.sh        ->  build/package/packages/lmx_<version>_<arch>.deb, liblmx-dev_...
# Install them with `apt install ./build/package/packages/*.deb` (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh package
bash scripts/configure.sh package
cmake --build --preset package
rm -rf build/package/packages
(cd build/package && cpack -G DEB >/dev/null)
ls build/package/packages/*.deb
