#!/usr/bin/env bash
# The main job on its built-in default: installs any missing dependency,
# builds edgebayes, runs the `quick` suite (every method on mlp, every
# facet, into out/results.db; bundles cached, a rerun resumes) and renders
# the report (out/report/index.html). Extra arguments go to
# `edgebayes run` (see `edgebayes run --help`), e.g. `scripts/run.sh paper`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DEB_WERROR=ON >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" --target edgebayes
status=0
build/release/edgebayes run "$@" || status=$?
build/release/edgebayes report --db out/results.db -o out/report
exit "$status"
