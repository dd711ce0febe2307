#include "kernels/causal_conv.hpp"

#include <algorithm>
#include <vector>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

namespace {

// dst (cols, rows) = the transpose of src (rows, cols).
void transpose(const float* src, int rows, int cols, float* dst) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      dst[static_cast<int64_t>(c) * rows + r] = src[static_cast<int64_t>(r) * cols + c];
}

// The weights tap-major, wt[k * C + c] = w[c * K + k]: a tap's weights contiguous over the channels, so the
// channel loops vectorise (the (C, K) layout is read at a stride of K). The calling thread's buffer, reused;
// the threads of a parallel region read it.
const float* taps_by_row(const float* w, int C, int K) {
  thread_local std::vector<float> wt;
  wt.resize(static_cast<size_t>(C) * K);
  transpose(w, C, K, wt.data());
  return wt.data();
}

}  // namespace

// The fast forms below compute the same sums in the same order as the references (bit for bit, tested):
// bias first, then the taps in order; dw and dbias accumulated token by token.
void causal_conv_forward(float* out, const float* x, int64_t ldx, const float* w, const float* bias, int B,
                         int T, int C, int K) {
  const profile::Scope scope("causal_conv_forward");
  const float* wt = taps_by_row(w, C, K);
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(static_cast <double>(B) * T * C * K))
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      float* o = out + (static_cast<int64_t>(b) * T + t) * C;
      std::copy_n(bias, C, o);
      for (int k = std::max(0, K - 1 - t); k < K; ++k) {
        const float* xs = x + (static_cast<int64_t>(b) * T + t - (K - 1) + k) * ldx;
        const float* wk = wt + static_cast<int64_t>(k) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c) o[c] += wk[c] * xs[c];
      }
    }
}

void causal_conv_step(float* out, const float* x, int64_t ldx, const float* w, const float* bias,
                      float* const* states, int64_t count, int C, int K) {
  const profile::Scope scope("causal_conv_step");
  const int P = K - 1;
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(count) * C * K))
  for (int64_t i = 0; i < count; ++i) {
    float* o = out + i * C;
    float* st = states[i];
    const float* xi = x + i * ldx;
    // The taps in causal_conv_forward's order (the same sums, bit for bit).
    for (int c = 0; c < C; ++c) o[c] = bias[c];
    for (int k = 0; k < P; ++k) {
      const float* row = st + static_cast<int64_t>(k) * C;
      for (int c = 0; c < C; ++c) o[c] += w[c * K + k] * row[c];
    }
    for (int c = 0; c < C; ++c) o[c] += w[c * K + P] * xi[c];
    for (int k = 0; k + 1 < P; ++k)
      std::copy_n(st + static_cast<int64_t>(k + 1) * C, C, st + static_cast<int64_t>(k) * C);
    if (P > 0) std::copy_n(xi, C, st + static_cast<int64_t>(P - 1) * C);
  }
}

void causal_conv_backward(float* dx, int64_t lddx, float* dw, float* dbias, const float* dout, const float* x,
                          int64_t ldx, const float* w, int B, int T, int C, int K) {
  const profile::Scope scope("causal_conv_backward");
  const float* wt = taps_by_row(w, C, K);
  // dw tap-major too, starting from its values (the same sums as the reference's), copied back at the end.
  thread_local std::vector<float> dwt_buffer;
  dwt_buffer.resize(static_cast<size_t>(C) * K);
  float* dwt = dwt_buffer.data();
  transpose(dw, C, K, dwt);
#pragma omp parallel if (parallel_worth(static_cast <double>(B) * T * C * K))
  {
    // Threads own channel ranges: dw and dbias need no reduction and the order is fixed.
    int64_t c0, c1;
    split_range(C, omp_get_thread_num(), omp_get_num_threads(), c0, c1);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        float* d = dx + (static_cast<int64_t>(b) * T + t) * lddx;
        std::fill(d + c0, d + c1, 0.0f);
        for (int k = std::max(0, t + K - T); k < K; ++k) {  // output positions t + K - 1 - k < T
          const float* g = dout + (static_cast<int64_t>(b) * T + t + (K - 1) - k) * C;  // read x[t] via tap k
          const float* wk = wt + static_cast<int64_t>(k) * C;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) d[c] += wk[c] * g[c];
        }
        const float* g = dout + (static_cast<int64_t>(b) * T + t) * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) dbias[c] += g[c];
        for (int k = std::max(0, K - 1 - t); k < K; ++k) {
          const float* xs = x + (static_cast<int64_t>(b) * T + t - (K - 1) + k) * ldx;
          float* dwk = dwt + static_cast<int64_t>(k) * C;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) dwk[c] += g[c] * xs[c];
        }
      }
  }
  transpose(dwt, K, C, dw);
}

void causal_conv_forward_reference(float* out, const float* x, int64_t ldx, const float* w, const float* bias,
                                   int B, int T, int C, int K) {
  const profile::Scope scope("causal_conv_forward_reference");
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(static_cast <double>(B) * T * C * K))
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      float* o = out + (static_cast<int64_t>(b) * T + t) * C;
      for (int c = 0; c < C; ++c) o[c] = bias[c];
      for (int k = 0; k < K; ++k) {
        const int src = t - (K - 1) + k;
        if (src < 0) continue;
        const float* xs = x + (static_cast<int64_t>(b) * T + src) * ldx;
        for (int c = 0; c < C; ++c) o[c] += w[c * K + k] * xs[c];
      }
    }
}

void causal_conv_backward_reference(float* dx, int64_t lddx, float* dw, float* dbias, const float* dout,
                                    const float* x, int64_t ldx, const float* w, int B, int T, int C, int K) {
  const profile::Scope scope("causal_conv_backward_reference");
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        // x[t] fed output t + (K - 1) - k through tap k.
        float d = 0.0f;
        for (int k = 0; k < K; ++k)
          if (t + (K - 1) - k < T)
            d += w[c * K + k] * dout[(static_cast<int64_t>(b) * T + t + (K - 1) - k) * C + c];
        dx[(static_cast<int64_t>(b) * T + t) * lddx + c] = d;
        const float g = dout[(static_cast<int64_t>(b) * T + t) * C + c];
        dbias[c] += g;
        for (int k = 0; k < K; ++k)
          if (t - (K - 1) + k >= 0)
            dw[c * K + k] += g * x[(static_cast<int64_t>(b) * T + t - (K - 1) + k) * ldx + c];
      }
}

}  // namespace bmojo
