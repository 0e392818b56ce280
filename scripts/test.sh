#!/usr/bin/env bash
# Builds everything and runs every test, twice: a release build with
# warnings as errors, and an address/undefined-sanitizer build (which also
# replays the committed fuzz corpora under the sanitizers). Installs any
# missing dependency first.
#
#   scripts/test.sh            both builds
#   EB_TEST_BUILDS=release scripts/test.sh   only one of: release, sanitize
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
builds=${EB_TEST_BUILDS:-"release sanitize"}

for b in $builds; do
  case "$b" in
    release)  flags=(-DCMAKE_BUILD_TYPE=Release -DEB_WERROR=ON) ;;
    sanitize) flags=(-DCMAKE_BUILD_TYPE=Debug -DEB_WERROR=ON -DEB_SANITIZE=address,undefined) ;;
    *) echo "test.sh: unknown build '$b'" >&2; exit 2 ;;
  esac
  echo "== $b build =="
  cmake -S . -B "build/$b" "${flags[@]}" >/dev/null
  cmake --build "build/$b" -j "$jobs"
  echo "== $b tests =="
  ctest --test-dir "build/$b" --output-on-failure -j "$jobs"
done
echo "test.sh: all tests passed ($builds)"
