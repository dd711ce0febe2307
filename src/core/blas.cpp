#include "core/blas.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <compare>
#include <cstdint>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "core/bf16.hpp"
#include "core/cpu_features.hpp"
#include "core/error.hpp"
#include "core/profile.hpp"
#include "kernels/packed_matmul.hpp"
#include "kernels/skinny_matmul.hpp"

namespace bmojo {

namespace {

std::atomic<bool> g_bf16{false};

const PackedWeights*& packed_weights_in_use() {
  thread_local const PackedWeights* weights = nullptr;
  return weights;
}

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Dnnl& dnnl_context() {
  static Dnnl ctx;
  return ctx;
}

// C (M,N) f32 = alpha * op(A_bf16) (M,K) op(B_bf16) (K,N) + beta * C. The bf16 operands are dense copies of
// the f32 ones in their stored layout, so a transposed operand is described by its strides (the brgemm
// kernels take either layout) instead of being transposed while it is converted, which is several times
// slower than the plain conversion (docs/performance.md, session 5).
dnnl::matmul::primitive_desc bf16_desc(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                                       float beta, int ldc) {
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  const dnnl::memory::desc a({M, K}, dt::bf16, trans_a ? dims{1, M} : dims{K, 1});
  const dnnl::memory::desc b({K, N}, dt::bf16, trans_b ? dims{1, K} : dims{N, 1});
  const dnnl::memory::desc c({M, N}, dt::f32, dims{ldc, 1});
  dnnl::primitive_attr attr;
  // Our own kept scratchpad (matmul_bf16_dnnl) instead of one the library allocates per execution.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, dnnl_context().engine);
}

// (layouts, M, N, K, ldc, alpha, beta) of a bf16 product.
struct MatmulKey {
  bool trans_a, trans_b;
  int M, N, K, ldc;
  float alpha, beta;
  auto operator<=>(const MatmulKey&) const = default;
};

// Primitives are created once per shape and kept: building a primitive descriptor costs far more than
// oneDNN's own cache lookup suggests (about 5% of a training step when done per call). A model uses a
// handful of shapes; the cache is cleared if a caller cycles through many.
constexpr size_t kMaxCachedPrimitives = 512;

struct CachedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

CachedMatmul& bf16_matmul(const MatmulKey& key) {
  thread_local std::map<MatmulKey, CachedMatmul> cache;
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= kMaxCachedPrimitives) cache.clear();
  auto pd = bf16_desc(key.trans_a, key.trans_b, key.M, key.N, key.K, key.alpha, key.beta, key.ldc);
  dnnl::matmul primitive(pd);
  return cache.emplace(key, CachedMatmul{std::move(pd), std::move(primitive)}).first->second;
}

// Rounds the stored (rows, cols) f32 matrix at x, leading dimension ld, into a dense bf16 copy in the same
// layout.
void to_bf16(const float* x, int rows, int cols, int ld, std::vector<uint16_t>& buf) {
  if (buf.size() < static_cast<size_t>(rows) * cols) buf.resize(static_cast<size_t>(rows) * cols);
  convert_to_bf16(buf.data(), x, rows, cols, ld);
}

// Operands kept for reuse while a Bf16OperandReuse lives: three cover a linear layer's backward pass (output
// gradient, weight, input).
struct KeptOperand {
  const float* src = nullptr;
  int rows = 0, cols = 0, ld = 0;
  std::vector<uint16_t> bf16;
};
struct Bf16Operands {
  int reuse_depth = 0;
  int64_t conversions = 0;
  KeptOperand kept[3];
  int next = 0;
  std::vector<uint16_t> a, b;  // outside a reuse scope
};
Bf16Operands& bf16_operands() {
  thread_local Bf16Operands ops;
  return ops;
}

// The bf16 copy of operand x (rows, cols, ld): converted into `fresh`, or, inside a reuse scope, found among
// the kept ones or converted into the oldest slot. `avoid` is a copy the same product is already using.
const uint16_t* operand_bf16(const float* x, int rows, int cols, int ld, std::vector<uint16_t>& fresh,
                             const uint16_t* avoid) {
  Bf16Operands& ops = bf16_operands();
  if (ops.reuse_depth == 0) {
    ++ops.conversions;
    to_bf16(x, rows, cols, ld, fresh);
    return fresh.data();
  }
  for (KeptOperand& k : ops.kept)
    if (k.src == x && k.rows == rows && k.cols == cols && k.ld == ld) return k.bf16.data();
  KeptOperand* slot = &ops.kept[ops.next];
  if (slot->bf16.data() == avoid && avoid != nullptr) {
    ops.next = (ops.next + 1) % 3;
    slot = &ops.kept[ops.next];
  }
  ops.next = (ops.next + 1) % 3;
  ++ops.conversions;
  to_bf16(x, rows, cols, ld, slot->bf16);
  slot->src = x;
  slot->rows = rows, slot->cols = cols, slot->ld = ld;
  return slot->bf16.data();
}

void matmul_bf16_dnnl(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
  thread_local std::vector<uint8_t> scratch;
  Dnnl& ctx = dnnl_context();
  Bf16Operands& ops = bf16_operands();
  const uint16_t *a_bf16, *b_bf16;
  {
    const profile::Scope scope("matmul_bf16_convert");
    // op(A) = A^T is stored (K, M); op(B) = B^T is stored (N, K).
    a_bf16 = operand_bf16(A, trans_a ? K : M, trans_a ? M : K, lda, ops.a, nullptr);
    b_bf16 = operand_bf16(B, trans_b ? N : K, trans_b ? K : N, ldb, ops.b, a_bf16);
  }
  CachedMatmul& mm = bf16_matmul({trans_a, trans_b, M, N, K, ldc, alpha, beta});
  dnnl::memory am(mm.pd.src_desc(), ctx.engine, const_cast<uint16_t*>(a_bf16)),
      bm(mm.pd.weights_desc(), ctx.engine, const_cast<uint16_t*>(b_bf16));
  dnnl::memory cm(mm.pd.dst_desc(), ctx.engine, C);
  const dnnl::memory::desc scratch_desc = mm.pd.scratchpad_desc();
  if (scratch.size() < scratch_desc.get_size()) scratch.resize(scratch_desc.get_size());
  dnnl::memory sm(scratch_desc, ctx.engine, scratch.data());
  mm.primitive.execute(
      ctx.stream,
      {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
  ctx.stream.wait();
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void matmul_split(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc, int threads) {
  const bool split_m = M >= N;
  const int extent = split_m ? M : N;
  // Slice boundaries on multiples of 16 rows or columns (the kernels' register tiles). The team may be
  // smaller than asked for (nested inside another region, for one), so the slices follow its actual size.
  const int tiles = extent / 16;
#pragma omp parallel num_threads(std::min(threads, std::max(1, tiles)))
  {
    const int parts = omp_get_num_threads(), p = omp_get_thread_num();
    const int lo = static_cast<int>(static_cast<int64_t>(tiles) * p / parts) * 16;
    const int hi =
        p + 1 == parts ? extent : static_cast<int>(static_cast<int64_t>(tiles) * (p + 1) / parts) * 16;
    if (hi > lo) {
      if (split_m) {
        // Rows [lo, hi) of op(A): A stored (M, K) -> row offset; A^T stored (K, M) -> column offset.
        const float* a = trans_a ? A + lo : A + static_cast<int64_t>(lo) * lda;
        sgemm(trans_a, trans_b, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
              C + static_cast<int64_t>(lo) * ldc, ldc);
      } else {
        // Columns [lo, hi) of op(B): B stored (K, N) -> column offset; B^T stored (N, K) -> row offset.
        const float* b = trans_b ? B + static_cast<int64_t>(lo) * ldb : B + lo;
        sgemm(trans_a, trans_b, M, hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
      }
    }
  }
}

}  // namespace

void set_matmul_bf16(bool on) {
  if (on) {
    const std::string why = bf16_matmul_unavailable_reason();
    check(why.empty(), why);
  }
  g_bf16 = on;
}
bool matmul_bf16() {
  return g_bf16;
}

Bf16OperandReuse::Bf16OperandReuse() {
  ++bf16_operands().reuse_depth;
}

Bf16OperandReuse::~Bf16OperandReuse() {
  Bf16Operands& ops = bf16_operands();
  if (--ops.reuse_depth == 0)
    for (KeptOperand& k : ops.kept) k.src = nullptr;  // buffers kept for the next scope
}

UsePackedWeights::UsePackedWeights(const PackedWeights* weights) : previous_(packed_weights_in_use()) {
  packed_weights_in_use() = weights;
}

UsePackedWeights::~UsePackedWeights() {
  packed_weights_in_use() = previous_;
}

int64_t bf16_conversions() {
  return bf16_operands().conversions;
}

std::string bf16_matmul_impl(bool trans_a, bool trans_b, int M, int N, int K) {
  return bf16_desc(trans_a, trans_b, M, N, K, 1.0f, 0.0f, N).impl_info_str();
}

void matmul(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  const double flops = 2.0 * M * N * K;
  if (g_bf16 && K > 0 && static_cast<double>(M) * N * K >= kBf16MinFlops && omp_in_parallel() == 0) {
    const profile::Scope scope("matmul_bf16", flops);
    matmul_bf16_dnnl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (const PackedWeights* packed = packed_weights_in_use();
      packed != nullptr && !trans_a && M >= kPackedMinRows && M <= kPackedMaxRows) {
    if (const PackedMatrix* b = packed->find(B, trans_b, N, K, ldb)) {
      const profile::Scope scope("matmul_packed", flops);
      packed_matmul(M, alpha, A, lda, *b, beta, C, ldc);
      return;
    }
  }
  if (skinny_matmul_worth(trans_a, M, N, K)) {
    const profile::Scope scope("matmul_skinny", flops);
    skinny_matmul(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const profile::Scope scope("matmul_fp32", flops);
  const int threads = omp_in_parallel() == 0 ? omp_get_max_threads() : 1;
  if (threads > 1 && static_cast<double>(M) * N * K >= kSplitMinFlops) {
    matmul_split(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
    return;
  }
  sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? std::string(name) : std::string("unknown");
}

void set_num_threads(int threads) {
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int num_threads() {
  return omp_get_max_threads();
}

int num_cores() {
  return omp_get_num_procs();
}

}  // namespace bmojo
