#!/usr/bin/env bash
# Threads on a shared machine: decode and training speed with --threads 1 and 2, alone and beside one busy
# process (a spinning `yes`), for one or more bmojo binaries (docs/performance.md, "Threads on a shared
# machine").
#   scripts/shared_machine_bench.sh [CONFIG] BINARY...      (default config configs/bench/bmojo_4l_256.json)
set -euo pipefail
cd "$(dirname "$0")/.."
config=configs/bench/bmojo_4l_256.json
if [ $# -gt 0 ] && [[ "$1" == *.json ]]; then config=$1; shift; fi
[ $# -eq 0 ] && set -- build/bmojo
decode() {  # binary threads -> decode tokens/s at context 1024
  "$1" infer-bench --config "$config" --contexts 1024 --decode 64 --repeats 2 --threads "$2" --json 2>/dev/null |
    python3 -c "import json,sys; print(round(json.loads(sys.stdin.readline())['decode_tokens_per_s'], 1))"
}
train() {  # binary threads -> training tokens/s
  "$1" bench --config "$config" --steps 4 --warmup 1 --no-peak --threads "$2" --json 2>/dev/null |
    python3 -c "import json,sys; print(round(json.loads(sys.stdin.readline())['tokens_per_s']))"
}
printf "%-28s %-6s %8s %14s %14s\n" binary load threads "decode tok/s" "train tok/s"
for load in alone busy; do
  busy_pid=""
  if [ "$load" = busy ]; then
    yes >/dev/null &
    busy_pid=$!
    sleep 0.5
  fi
  for bin in "$@"; do
    for t in 1 2; do
      printf "%-28s %-6s %8s %14s %14s\n" "$bin" "$load" "$t" "$(decode "$bin" "$t")" "$(train "$bin" "$t")"
    done
  done
  [ -n "$busy_pid" ] && kill "$busy_pid"
done
