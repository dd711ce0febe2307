#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test; then build the tests with
# AddressSanitizer + UndefinedBehaviorSanitizer and run them again (the long learning tests excepted); then
# the kernel tests of a portable AVX2 build (-march=x86-64-v3), so the generic paths of the hand-vectorised
# kernels are tested whatever this CPU is, and (on an AVX2-only CPU) an AVX-512 build of them compiled, so both
# paths stay warning-clean; then every fuzzing harness for a short fixed time (scripts/fuzz.sh).
# Tests run one at a time: each uses every core, and OpenMP teams oversubscribed by parallel ctest jobs
# slow the learning tests down many times over.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
(cd build && ctest --output-on-failure --timeout 1800)

cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBMOJO_SANITIZE=ON -DBMOJO_BENCHMARKS=OFF >/dev/null
cmake --build build-sanitize -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 1800 -E "^Training\.(AttentionLearnsMqar|MambaLearnsMqar|BmojoLearnsMqar)")

# Portable AVX2 build of the kernel tests.
cmake -S . -B build-avx2 -DCMAKE_BUILD_TYPE=Release -DBMOJO_MARCH=x86-64-v3 -DBMOJO_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS=-Werror >/dev/null
cmake --build build-avx2 -j "$(nproc)" --target bmojo_tests
build-avx2/bmojo_tests --gtest_filter='RmsNorm.*:Linear.*:SwiGlu.*:Embedding.*:Rope.*:Attention.*:CausalConv.*:Scan.*:CrossEntropy.*:FastExp.*:FastLog1p.*:FastSoftplus.*:SumLanes16.*:SoftmaxRowHelpers.*:Bf16Convert.*:Bf16Matmul.*:Matmul.*:Shapes/*:Patterns/KernelPaths.*'
if ! grep -q avx512f /proc/cpuinfo; then
  cmake -S . -B build-avx512 -DCMAKE_BUILD_TYPE=Release -DBMOJO_MARCH=x86-64-v4 -DBMOJO_BENCHMARKS=OFF \
    -DCMAKE_CXX_FLAGS="-Werror -mavx512bf16" >/dev/null
  cmake --build build-avx512 -j "$(nproc)" --target bmojo_lib
  echo "AVX-512 build compiled (this CPU cannot run it)"
fi

scripts/fuzz.sh "${BMOJO_FUZZ_SECONDS:-20}"
