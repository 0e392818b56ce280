#!/usr/bin/env bash
# Runtime of an S-member posterior, side by side: single-input latency of
# edgebayes's execution strategies (bench_runtime) and of PyTorch's
# (bench/runtime_torch.py: a per-member loop, all members at once with
# baddbmm or grouped convolutions, functorch.vmap; when python3-torch is
# installed: scripts/install-deps.sh --bench) on the same weights and input,
# in the same run, with the ratio.
#
# `bench_runtime --setup` writes the posteriors (mlp and cnn, several S)
# once; each side then runs under each OpenBLAS build Debian offers
# (pthread and OpenMP variants of libopenblas0, chosen with
# LD_LIBRARY_PATH) and is reported at its fastest, with the library it ran.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset here only, so both sides
# use the CPU's widest kernels. PyTorch verifies every variant against the
# probabilities edgebayes computed before timing it.
#
#   bench/runtime.sh [BUILD_DIR]      (default build/release)
# Results: a table on stdout; every measurement as JSON lines in
# $EB_BENCH_OUT (default out/bench/runtime.jsonl), ingested into
# $EB_BENCH_DB (default out/results.db). $EB_BENCH_THREADS (default 2)
# sets the thread count of both sides; $EB_RUNTIME_DIR (default
# out/bench/runtime) where the posteriors are written; $EB_RUNTIME_TORCH_ARGS
# extra options for runtime_torch.py and $EB_RUNTIME_ARGS for bench_runtime
# --dir (e.g. "--min-seconds 1"; a quick smoke run of the peer:
# "--min-seconds 0.2 --min-queries 20 --throughput-seconds 0.2 --load-runs 1").
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
build=${1:-build/release}
out=${EB_BENCH_OUT:-out/bench/runtime.jsonl}
dir=${EB_RUNTIME_DIR:-out/bench/runtime}
threads=${EB_BENCH_THREADS:-2}
db=${EB_BENCH_DB:-out/results.db}
cases=(mlp-s1 mlp-s10 mlp-s30 mlp-s100 cnn-s1 cnn-s10 cnn-s30)
bin=$build/bench/bench_runtime
mkdir -p "$(dirname "$out")" "$dir"
: > "$out"

have_c=1
if [ ! -x "$bin" ]; then
  have_c=0
  if [ ! -f "$dir/input.f32" ]; then
    echo "bench/runtime.sh: $bin is missing; build first (scripts/test.sh or cmake --build $build)" >&2
    exit 1
  fi
  echo "bench/runtime.sh: $bin is missing; running the PyTorch side alone on the posteriors" \
       "already in $dir (no edgebayes timings, nothing ingested)" >&2
fi
libdir=/usr/lib/x86_64-linux-gnu
variants=()
for v in pthread openmp; do
  [ -e "$libdir/openblas-$v/libopenblas.so.0" ] && variants+=("$v")
done
[ "${#variants[@]}" -gt 0 ] || variants=(default)
have_torch=0
if /usr/bin/python3 -c 'import torch, functorch' 2>/dev/null; then have_torch=1; else
  echo "bench/runtime.sh: /usr/bin/python3 has no torch (scripts/install-deps.sh --bench); edgebayes side only" >&2
fi
[ "$have_c" = 1 ] || [ "$have_torch" = 1 ] || exit 1

if [ "$have_c" = 1 ]; then
  echo "bench: bench_runtime --setup $dir" >&2
  "$bin" --setup "$dir" >&2
fi

# JSON lines from stdout go to $out, tagged with the OpenBLAS variant; any
# other output goes to stderr.
tag() { # variant
  while IFS= read -r line; do
    case "$line" in
      '{}') echo "{\"variant_blas\": \"$1\"}" >> "$out" ;;
      '{'*) echo "{\"variant_blas\": \"$1\", ${line#\{}" >> "$out" ;;
      ?*) echo "$line" >&2 ;;
    esac
  done
}

status=0
for v in "${variants[@]}"; do
  env=(env OMP_NUM_THREADS="$threads" EB_OPENBLAS_VARIANT="$v")
  [ "$v" != default ] && env+=(LD_LIBRARY_PATH="$libdir/openblas-$v")
  if [ "$have_c" = 1 ]; then
    echo "bench: edgebayes threads=$threads openblas-$v" >&2
    # shellcheck disable=SC2086
    "${env[@]}" "$bin" --dir "$dir" --threads "$threads" --json ${EB_RUNTIME_ARGS:-} | tag "$v"
  fi
  if [ "$have_torch" = 1 ]; then
    for c in "${cases[@]}"; do
      if [ ! -f "$dir/$c.json" ]; then
        echo "bench: pytorch $c: $dir/$c.json is missing; skipped" >&2
        continue
      fi
      echo "bench: pytorch $c threads=$threads openblas-$v" >&2
      # A case that fails verification prints no timing and fails the run
      # at the end; the other cases still run.
      "${env[@]}" /usr/bin/python3 bench/runtime_torch.py --dir "$dir" --case "$c" \
        --threads "$threads" ${EB_RUNTIME_TORCH_ARGS:-} | tag "$v" || { status=1; echo "bench: pytorch $c FAILED (openblas-$v)" >&2; }
    done
  fi
done

# Cold load plus the first prediction, each bundle in a fresh process
# (bench_runtime --load-probe: the disk's time for the bytes, the load, the
# process's peak RSS), under the first OpenBLAS variant (a load does not
# use BLAS).
if [ "$have_c" = 1 ]; then
  v=${variants[0]}
  env=(env OMP_NUM_THREADS="$threads")
  [ "$v" != default ] && env+=(LD_LIBRARY_PATH="$libdir/openblas-$v")
  for f in "$dir"/*.ebb; do
    echo "bench: load probe $(basename "$f")" >&2
    "${env[@]}" "$bin" --load-probe "$f" --threads "$threads" | tag "$v" || status=1
  done
fi

# Summary per case: each edgebayes strategy at its fastest OpenBLAS variant,
# PyTorch's fastest variant (over its variants and the OpenBLAS builds), and
# the ratio of medians PyTorch/edgebayes (above 1: edgebayes is faster).
awk '
  function field(name,   m) {
    if (match($0, "\"" name "\"[ \t]*:[ \t]*\"[^\"]*\"")) {
      m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*"/, "", m); sub(/"$/, "", m); return m }
    if (match($0, "\"" name "\"[ \t]*:[ \t]*-?[0-9.eE+-]+")) {
      m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:[ \t]*/, "", m); return m }
    return ""
  }
  {
    c = field("case"); side = field("side"); med = field("latency_median_s")
    if (c == "" || med == "") next
    if (side == "edgebayes") { who = field("strategy") }
    else if (side == "pytorch") { who = field("variant"); if (who == "fastest") next }
    else next
    med += 0
    if (!(c in seen)) { seen[c] = 1; order[++nc] = c }
    if (side == "edgebayes") {
      k = c SUBSEP who
      if (!(k in eb) || med < eb[k]) { eb[k] = med; ebv[k] = field("variant_blas"); ebp[k] = field("latency_p99_s") }
      if (!((c, who) in have)) { have[c, who] = 1; strat[c, ++ns[c]] = who }
    } else if (!(c in pt) || med < pt[c]) {
      pt[c] = med; ptw[c] = who; ptv[c] = field("variant_blas"); ptp[c] = field("latency_p99_s")
    }
  }
  function ms(s) { return s == "" ? "-" : sprintf("%.3f", s * 1000) }
  END {
    printf "%-9s %-22s %11s %11s %-9s %9s\n", "case", "side/strategy", "median_ms", "p99_ms", "openblas", "pt/eb"
    for (i = 1; i <= nc; i++) { c = order[i]
      for (j = 1; j <= ns[c]; j++) { s = strat[c, j]; k = c SUBSEP s
        printf "%-9s %-22s %11s %11s %-9s %9s\n", c, "edgebayes/" s, ms(eb[k]), ms(ebp[k]), ebv[k],
               ((c in pt) && eb[k] > 0) ? sprintf("%.2f", pt[c] / eb[k]) : "-"
      }
      if (c in pt)
        printf "%-9s %-22s %11s %11s %-9s %9s\n", c, "pytorch/" ptw[c], ms(pt[c]), ms(ptp[c]), ptv[c], "1.00"
      else
        printf "%-9s %-22s %11s %11s %-9s %9s\n", c, "pytorch", "-", "-", "", "(none)"
    }
    print "pt/eb: PyTorch fastest median / edgebayes median (above 1: edgebayes is faster)"
  }' "$out"
echo "measurements: $out" >&2

# ... and into the results database, beside the other facets
if [ "$have_c" = 1 ]; then
  mkdir -p "$(dirname "$db")"
  "$bin" --ingest "$out" --db "$db" >&2
fi
exit "$status"
