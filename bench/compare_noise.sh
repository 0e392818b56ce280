#!/usr/bin/env bash
# The nightly-compare check, measured: one base run, then N reruns of the
# same build and N runs with an injected 20% latency slowdown
# (EB_INJECT_SLOWDOWN=0.2, a testing hook of the CPU device), each
# compared against the base with `edgebayes compare` at its defaults.
# A sound compare exits 0 for (nearly) every rerun and 1 for every slowed
# run.
#
#   bench/compare_noise.sh [BUILD_DIR] [N] [SUITE]
# (default build/release, 10 tries, a latency-focused suite of the quick
# suite's methods on 1,000 test images)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
n=${2:-10}
suite=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
eb="$build/edgebayes"
if [ -z "$suite" ]; then
  suite="$work/suite.ini"
  cat > "$suite" <<'INI'
[suite]
name = compare-noise
archs = mlp
facets = quality, latency, throughput
[data]
test_limit = 1000
ood_limit = 1000
[evaluation]
bootstrap = 50
[device]
threads = 1
latency_warmup = 50
latency_min_queries = 400
latency_min_seconds = 1
[method map]
[method ensemble]
samples = 5
[method dropout]
samples = 30
INI
fi
db="$work/r.db"
"$eb" run "$suite" --db "$db" --label base --quiet > /dev/null
same_ok=0 slow_caught=0
for i in $(seq 1 "$n"); do
  "$eb" run "$suite" --db "$db" --label "rerun$i" --quiet > /dev/null
  if "$eb" compare --db "$db" base "rerun$i" > "$work/cmp" 2>&1; then same_ok=$((same_ok + 1));
  else echo "rerun $i flagged:"; grep -E "worse" "$work/cmp" | head -5 || true; fi
  EB_INJECT_SLOWDOWN=0.2 "$eb" run "$suite" --db "$db" --label "slow$i" --quiet > /dev/null
  if ! "$eb" compare --db "$db" base "slow$i" > "$work/cmp" 2>&1; then slow_caught=$((slow_caught + 1));
  else echo "slowed run $i not flagged"; fi
done
echo "reruns of the same build: compare exited 0 in $same_ok of $n"
echo "runs with a 20% slowdown: compare exited 1 in $slow_caught of $n"
