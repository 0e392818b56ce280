#!/usr/bin/env bash
# Training throughput, side by side: one epoch of Fashion-MNIST for `mlp`
# and `cnn` at 1 and 2 threads, in edgebayes and (when python3-torch is
# installed: scripts/install-deps.sh --bench) in PyTorch on the same data,
# in the same run, with the ratio.
#
# Each side runs under each OpenBLAS build Debian offers (pthread and
# OpenMP variants of libopenblas0, chosen with LD_LIBRARY_PATH) and is
# reported at its fastest, with the library and core type it ran.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset here only, so both sides
# use the CPU's widest kernels.
#
#   bench/train.sh [BUILD_DIR]      (default build/release)
# Results: a table on stdout; every measurement as JSON lines in
# $EB_BENCH_OUT (default out/bench/train.jsonl), and the fastest per side
# stored as a run of suite 'bench-train' in $EB_BENCH_DB (default
# out/results.db).
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
build=${1:-build/release}
out=${EB_BENCH_OUT:-out/bench/train.jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
[ -x "$build/bench/bench_train" ] || {
  echo "bench/train.sh: $build/bench/bench_train is missing; build first (scripts/test.sh or cmake --build $build)" >&2
  exit 1
}
libdir=/usr/lib/x86_64-linux-gnu
variants=()
for v in pthread openmp; do
  [ -e "$libdir/openblas-$v/libopenblas.so.0" ] && variants+=("$v")
done
[ "${#variants[@]}" -gt 0 ] || variants=(default)
have_torch=0
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then have_torch=1; fi

run_side() { # side variant arch threads epochs
  local side=$1 v=$2 arch=$3 t=$4 ep=$5 env=(env OMP_NUM_THREADS="$t")
  [ "$v" != default ] && env+=(LD_LIBRARY_PATH="$libdir/openblas-$v")
  if [ "$side" = edgebayes ]; then
    "${env[@]}" "$build/bench/bench_train" --arch "$arch" --threads "$t" --epochs "$ep" --json
  else
    "${env[@]}" /usr/bin/python3 bench/train_torch.py --arch "$arch" --threads "$t" --epochs "$ep"
  fi | sed "s/^{/{\"variant\": \"$v\", /" >> "$out"
}

for arch in mlp cnn; do
  ep=5; [ "$arch" = cnn ] && ep=2
  for t in 1 2; do
    for v in "${variants[@]}"; do
      echo "bench: edgebayes $arch threads=$t openblas-$v" >&2
      run_side edgebayes "$v" "$arch" "$t" "$ep"
      if [ "$have_torch" = 1 ]; then
        echo "bench: pytorch $arch threads=$t openblas-$v" >&2
        run_side pytorch "$v" "$arch" "$t" "$ep"
      fi
    done
  done
done

# Summary: each side at its fastest OpenBLAS variant.
awk '
  function field(name,   m) {
    if (match($0, "\"" name "\": \"[^\"]*\"")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*: "/, "", m); sub(/"$/, "", m); return m }
    if (match($0, "\"" name "\": [0-9.]+")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*: /, "", m); return m }
    return ""
  }
  { key = field("arch") " " field("threads"); side = field("side"); ips = field("images_per_sec") + 0
    if (ips > best[side, key]) { best[side, key] = ips; how[side, key] = field("variant") (field("core") != "" ? "/" field("core") : "") }
    keys[key] = 1 }
  END {
    printf "%-4s %7s %14s %-22s %14s %-22s %7s\n", "arch", "threads", "edgebayes", "(openblas)", "pytorch", "(openblas/core)", "ratio"
    n = split("mlp 1,mlp 2,cnn 1,cnn 2", order, ",")
    for (i = 1; i <= n; i++) { k = order[i]; if (!(k in keys)) continue
      split(k, p, " ")
      e = best["edgebayes", k]; t = best["pytorch", k]
      printf "%-4s %7s %14.0f %-22s %14s %-22s %7s\n", p[1], p[2], e, how["edgebayes", k],
             t ? sprintf("%.0f", t) : "-", t ? how["pytorch", k] : "(no python3-torch)", t ? sprintf("%.2f", e / t) : "-"
    }
  }' "$out"
echo "measurements: $out" >&2
# ... and into the results database, beside the other facets
db=${EB_BENCH_DB:-out/results.db}
mkdir -p "$(dirname "$db")"
"$build/bench/bench_train" --ingest "$out" --db "$db" --label bench-train >&2
