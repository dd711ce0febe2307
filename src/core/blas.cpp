#include "core/blas.hpp"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

namespace bmojo {

namespace {

std::atomic<bool> g_bf16{false};

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Dnnl& dnnl_context() {
  static Dnnl ctx;
  return ctx;
}

// C (M,N) f32 = alpha * A_bf16 (M,K) B_bf16 (K,N) + beta * C, with plain row-major bf16 operands.
dnnl::matmul::primitive_desc bf16_desc(int M, int N, int K, float alpha, float beta, int ldc) {
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  const dnnl::memory::desc a({M, K}, dt::bf16, dims{K, 1});
  const dnnl::memory::desc b({K, N}, dt::bf16, dims{N, 1});
  const dnnl::memory::desc c({M, N}, dt::f32, dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, dnnl_context().engine);
}

// Rounds the (rows, cols) f32 operand stored with the given strides into a plain bf16 buffer (a oneDNN
// reorder: round to nearest even, vectorised, threaded).
dnnl::memory to_bf16(const float* x, int rows, int cols, bool transposed, int ld,
                     std::vector<uint16_t>& buf) {
  using dims = dnnl::memory::dims;
  Dnnl& ctx = dnnl_context();
  const dnnl::memory::desc src({rows, cols}, dnnl::memory::data_type::f32,
                               transposed ? dims{1, ld} : dims{ld, 1});
  const dnnl::memory::desc dst({rows, cols}, dnnl::memory::data_type::bf16, dims{cols, 1});
  buf.resize(static_cast<size_t>(rows) * cols);
  dnnl::memory s(src, ctx.engine, const_cast<float*>(x)), d(dst, ctx.engine, buf.data());
  dnnl::reorder(s, d).execute(ctx.stream, s, d);
  return d;
}

// oneDNN caches primitives by descriptor, so creating them per call costs a lookup after the first.
void matmul_bf16_dnnl(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
  thread_local std::vector<uint16_t> a_buf, b_buf;
  Dnnl& ctx = dnnl_context();
  const dnnl::memory am = to_bf16(A, M, K, trans_a, lda, a_buf);
  const dnnl::memory bm = to_bf16(B, K, N, trans_b, ldb, b_buf);
  const auto pd = bf16_desc(M, N, K, alpha, beta, ldc);
  dnnl::memory cm(pd.dst_desc(), ctx.engine, C);
  dnnl::matmul(pd).execute(ctx.stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  ctx.stream.wait();
}

}  // namespace

void set_matmul_bf16(bool on) {
  g_bf16 = on;
}
bool matmul_bf16() {
  return g_bf16;
}

std::string bf16_matmul_impl(int M, int N, int K) {
  return bf16_desc(M, N, K, 1.0f, 0.0f, N).impl_info_str();
}

void matmul(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (g_bf16 && K > 0 && static_cast<double>(M) * N * K >= kBf16MinFlops && omp_in_parallel() == 0) {
    matmul_bf16_dnnl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
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
