#!/usr/bin/env bash
# The README's second command (and CI's): install, build, run every test; then build the tests with
# AddressSanitizer + UndefinedBehaviorSanitizer (clang) and run them again (the long learning tests
# excepted); then the other vector path of the hand-vectorised kernels (AVX-512 machines: an AVX2 build and
# its kernel tests; AVX2 machines: the AVX-512 branches compiled), so both paths are compiled and the AVX2
# one tested on any CI machine, warning-clean; then every fuzzing harness for a short fixed time
# (scripts/fuzz.sh, from the sanitizer build).
# Tests run one at a time: each uses every core, and OpenMP teams oversubscribed by parallel ctest jobs
# slow the learning tests down many times over.
set -euo pipefail
cd "$(dirname "$0")/.."
# The distributed tests start mpirun; these machines run as root, which OpenMPI refuses unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Each phase's start and the time so far, so a CI log shows where the minutes go.
phase() { echo "== scripts/test.sh: $* ($(date -u +%T), ${SECONDS} s so far)"; }
phase "dependencies and release build"
scripts/install-deps.sh
scripts/build.sh
phase "tests"
(cd build && ctest --output-on-failure --timeout 1800)

# The sanitizer build is clang's, with the fuzzing harnesses in it (their coverage instrumentation is
# inert in the tests): one build serves both, and clang compiles with the sanitizers several times faster
# than gcc (2 Zen 3 cores: gcc 32 minutes, partly beside another build; clang, with the
# harnesses, 6.6 minutes).
phase "sanitizer build"
CC=clang CXX=clang++ cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBMOJO_SANITIZE=ON \
  -DBMOJO_FUZZ=ON -DBMOJO_BENCHMARKS=OFF >/dev/null
cmake --build build-sanitize -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
phase "tests under the sanitizers"
# Not under the sanitizers: the three learning tests (minutes of training) and the suites' end-to-end
# scripts (7 minutes there; they drive the commands the Cli tests run under the sanitizers too).
(cd build-sanitize && ctest --output-on-failure --timeout 1800 \
  -E "^Training\.(AttentionLearnsMqar|MambaLearnsMqarWellAboveChance|BmojoLearnsMqar)$|^Scripts\.(LmSuite|MqarSuite)EndToEnd$")

# The kernels' other vector path. On an AVX-512 machine: a portable AVX2 build (-march=x86-64-v3), its
# kernel tests and the data-parallel runs (whose agreement with one process depends on that path's sums).
# On an AVX2-only machine the native build above already ran the AVX2 path, and the AVX-512 path is
# compiled (x86-64-v4: the files that have one, target bmojo_isa_check) so it stays warning-clean, though
# this CPU cannot run it.
phase "the other vector ISA"
if grep -q avx512f /proc/cpuinfo; then
  cmake -S . -B build-avx2 -DCMAKE_BUILD_TYPE=Release -DBMOJO_MARCH=x86-64-v3 -DBMOJO_BENCHMARKS=OFF \
    -DCMAKE_CXX_FLAGS=-Werror >/dev/null
  cmake --build build-avx2 -j "$(nproc)" --target bmojo_tests bmojo
  build-avx2/bmojo_tests --gtest_filter='RmsNorm.*:Linear.*:SwiGlu.*:Embedding.*:Rope.*:Attention.*:CausalConv.*:Scan.*:CrossEntropy.*:FastExp.*:FastLog1p.*:FastSoftplus.*:SumLanes.*:SoftmaxRowHelpers.*:Bf16Convert.*:Bf16Matmul.*:Matmul.*:SkinnyMatmul.*:PackedMatmul.*:AttentionStep.*:Shapes/*:Patterns/KernelPaths.*:Batch.*:Letters/BatchEqualsParallel.*:Distributed.*'
else
  cmake -S . -B build-avx512 -DCMAKE_BUILD_TYPE=Release -DBMOJO_MARCH=x86-64-v4 -DBMOJO_BENCHMARKS=OFF \
    -DBMOJO_TESTS=OFF -DCMAKE_CXX_FLAGS="-Werror -mavx512bf16" >/dev/null
  cmake --build build-avx512 -j "$(nproc)" --target bmojo_isa_check
  echo "AVX-512 branches of the vectorised files compiled (this CPU cannot run them)"
fi

phase "fuzzing"
BMOJO_FUZZ_BUILD=build-sanitize scripts/fuzz.sh "${BMOJO_FUZZ_SECONDS:-20}"
phase "done"
