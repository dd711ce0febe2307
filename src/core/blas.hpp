// Matrix products go through BLAS (OpenBLAS, CBLAS interface). Row-major throughout.
#pragma once
#include <cstdint>
#include <string>

namespace bmojo {

// C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C, row-major with leading dimensions.
void matmul(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc);
// Large fp32 products are split into one slice of C per thread along the longer of M and N, and each slice
// is one single-threaded OpenBLAS call (OpenBLAS runs single-threaded inside a parallel region). OpenBLAS's
// own threading synchronises its threads by spinning on sched_yield, a system call, which this virtual
// machine makes expensive on some days: 2048x1024x256 at 284 GFLOP/s with OpenBLAS's 2 threads and 314
// split this way (`bmojo_kernel_bench --benchmark_filter=matmul`, same run). Each element of C is still
// computed by one call over the whole of K. Below about a million multiply-adds (tens of microseconds) a
// product stays on the calling thread: a region that short gains little alone and, beside another busy
// process, waits far longer for the second thread than it saves (decode, docs/performance.md).
inline constexpr double kSplitMinFlops = 128.0 * 128 * 64;

// Matrix products with bf16 inputs and fp32 accumulation (oneDNN, fpmath mode bf16; about twice the fp32
// rate on CPUs with AVX-512 BF16). Off by default; when on, matmul() uses it for products of at least
// kBf16MinFlops multiply-adds and OpenBLAS fp32 for the small ones. Parameters, gradients, optimizer state
// and every other kernel stay fp32.
void set_matmul_bf16(bool on);
bool matmul_bf16();
inline constexpr double kBf16MinFlops = 32.0 * 32 * 32;
// While one lives on the calling thread, bf16 products reuse the rounded copy of an operand already
// converted in its lifetime (same address, shape and leading dimension) instead of rounding it again: a
// linear layer's backward pass reads its output gradient in both of its products. The caller promises that
// no operand is written while it lives. No effect on fp32 products.
class Bf16OperandReuse {
 public:
  Bf16OperandReuse();
  ~Bf16OperandReuse();
  Bf16OperandReuse(const Bf16OperandReuse&) = delete;
  Bf16OperandReuse& operator=(const Bf16OperandReuse&) = delete;
};
class PackedWeights;
// While one lives on the calling thread, fp32 products whose B is one of `weights`' matrices (same address,
// layout, shape and leading dimension) and whose row count is in [kPackedMinRows, kPackedMaxRows] read its
// packed copy (kernels/packed_matmul.hpp). The caller promises those matrices do not change while it lives.
// Null turns it off for the scope. Scopes nest.
class UsePackedWeights {
 public:
  explicit UsePackedWeights(const PackedWeights* weights);
  ~UsePackedWeights();
  UsePackedWeights(const UsePackedWeights&) = delete;
  UsePackedWeights& operator=(const UsePackedWeights&) = delete;

 private:
  const PackedWeights* previous_;
};

// Operand conversions done by bf16 products on this thread so far (for tests).
int64_t bf16_conversions();

// The oneDNN implementation chosen for a bf16 product of this layout and shape (e.g.
// "brg:avx512_core_bf16", or "brg:avx512_core_amx_bf16" on CPUs with AMX): for tests.
std::string bf16_matmul_impl(bool trans_a, bool trans_b, int M, int N, int K);

// The CPU kernel family OpenBLAS picked (e.g. "Cooperlake", "Haswell").
std::string blas_core_name();

// Sets the thread count for our OpenMP kernels and for OpenBLAS.
void set_num_threads(int threads);
int num_threads();
int num_cores();

}  // namespace bmojo
