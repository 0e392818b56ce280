#!/usr/bin/env bash
# The main job on its built-in default: installs any missing dependency,
# builds edgebayes, and runs `edgebayes run` (trains the default models,
# writes their bundles to out/bundles, prints their evaluation). Extra
# arguments go to `edgebayes run` (see `edgebayes run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DEB_WERROR=ON >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" --target edgebayes
exec build/release/edgebayes run "$@"
