#!/bin/bash
# A/B timing of bmojo binaries on this machine, whose speed drifts by 10-20% within minutes: runs
# `bmojo bench ARGS` with each binary in turn, ROUNDS times, and prints each binary's median and minimum
# ms/step. To compare with an older commit: git worktree add /tmp/old REV && cmake -S /tmp/old -B
# /tmp/old/build -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/old/build -j2, then
#   scripts/ab_bench.sh 3 "--config configs/bench/attention_4l_256.json --steps 8 --warmup 2" /tmp/old/build/bmojo build/bmojo
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 ROUNDS \"BENCH ARGS\" BINARY [BINARY ...]" >&2
  exit 2
fi
rounds=$1
args=$2
shift 2
for r in $(seq "$rounds"); do
  for b in "$@"; do
    # shellcheck disable=SC2086
    ms=$("$b" bench $args --json | python3 -c "import json, sys; print(json.load(sys.stdin)['ms_per_step_median'])")
    echo "$b $ms"
  done
done | python3 -c "
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in sys.stdin:
    b, ms = line.split()
    runs[b].append(float(ms))
for b, v in runs.items():
    print(f'{b:32s} median {statistics.median(v):7.1f} ms/step  min {min(v):7.1f}  runs {[round(x) for x in v]}')
"
