// Matrix products with few rows: C (M, N) = alpha A (M, K) op(B) + beta C for M up to a few dozen, the
// shape of decode (one row per sequence in the batch) against a weight matrix B. Such a product is bound
// by reading B from memory, and OpenBLAS's sgemm first copies ("packs") all of B, reading it twice and
// writing it once: on a 106M-parameter model the packing alone took 40% of a decode step
// (docs/inference.md). These kernels read B once, in place: each thread owns a slice of B's columns
// (op(B) = B) or rows (op(B) = B^T) and computes every row of C for it, so B crosses the memory bus once
// whatever M is, and A (a few rows) stays in cache.
//
// Two versions with one signature: the reference (plain loops, the definition) and the fast one (register
// tiles of rows x 16/8-lane vectors, one per ISA level the build targets). matmul() in core/blas.cpp sends
// products here when skinny_matmul_worth() says so.
#pragma once
#include <cstdint>

namespace bmojo {

// Largest M the kernels take; above it sgemm's packing is amortised over enough rows
// (`bmojo_kernel_bench --benchmark_filter=skinny`).
inline constexpr int kSkinnyMaxRows = 16;

// True when this product should use the skinny kernels: few rows, no transposed A, and a B large enough
// that reading it dominates.
inline bool skinny_matmul_worth(bool trans_a, int M, int N, int K) {
  return !trans_a && M >= 1 && M <= kSkinnyMaxRows && static_cast<int64_t>(N) * K >= 32 * 1024;
}

// trans_b = false: B stored (K, N); true: B stored (N, K). Threads: OpenMP over B's slices when called
// outside a parallel region.
void skinny_matmul(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                   int ldb, float beta, float* C, int ldc);
void skinny_matmul_reference(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                             const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace bmojo
