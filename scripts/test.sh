#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test; then build the tests with
# AddressSanitizer + UndefinedBehaviorSanitizer and run them again (the long learning tests excepted).
# Tests run one at a time: each uses every core, and OpenMP teams oversubscribed by parallel ctest jobs
# slow the learning tests down many times over.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900)

cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBMOJO_SANITIZE=ON -DBMOJO_BENCHMARKS=OFF >/dev/null
cmake --build build-sanitize -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 900 -E "^Training\.(AttentionLearnsMqar|MambaLearnsMqar|BmojoLearnsMqar)")
