#!/usr/bin/env bash
# Fuzzes every parser of outside input (tests/fuzz/fuzz_*.cpp) with libFuzzer, AddressSanitizer and UBSan:
#   scripts/fuzz.sh [SECONDS_PER_HARNESS] [HARNESS...]     (default 20 s each, all seven harnesses)
# CI runs it for a short fixed time; for hours: scripts/fuzz.sh 3600. Seeds: tests/fuzz/corpus/<harness>
# (committed) plus fresh ones from bmojo_fuzz_seeds; new inputs go to <build>/work/<harness>, crashes to
# <build>/work/crash-* (turn each into a regression test). Prints executions per harness; exits non-zero
# on any crash, leak, timeout or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
seconds="${1:-20}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=(config checkpoint state token_file tokenizer store request)
# The build: build-fuzz/ by default; BMOJO_FUZZ_BUILD=DIR uses a tree already configured with
# -DBMOJO_FUZZ=ON (scripts/test.sh passes its sanitizer build, which has the harnesses too).
build="${BMOJO_FUZZ_BUILD:-build-fuzz}"
if ! grep -qs '^BMOJO_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -DBMOJO_FUZZ=ON -DBMOJO_TESTS=OFF -DBMOJO_BENCHMARKS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
targets=(bmojo_fuzz_seeds)
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >/dev/null
work="$build/work"
rm -rf "$work/seeds"
mkdir -p "$work"
"$build/bmojo_fuzz_seeds" "$work/seeds" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1
status=0
for h in "${harnesses[@]}"; do
  mkdir -p "$work/$h" "tests/fuzz/corpus/$h" "$work/seeds/$h"
  log="$work/$h.log"
  if (cd "$work" && ../fuzz_"$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "$h" "$root/tests/fuzz/corpus/$h" "seeds/$h") >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz_$h: $runs executions in ${seconds} s, no crash"
  else
    echo "fuzz_$h: FAILED (see $log)"
    tail -30 "$log"
    status=1
  fi
done
exit $status
