#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/blas.hpp"

namespace bmojo {

namespace {

constexpr int kQueryBlock = 64;

inline int first_key(int t, int window) { return window > 0 ? std::max(0, t - window + 1) : 0; }

inline int64_t row(int b, int t, int T) { return static_cast<int64_t>(b) * T + t; }

}  // namespace

void attention_forward_reference(float* out, int64_t ldo, float* lse, const float* q, int64_t ldq,
                                 const float* k, const float* v, int64_t ldkv, const AttentionDims& d) {
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  std::vector<double> p(d.T);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      for (int t = 0; t < d.T; ++t) {
        const int g = h / group;
        const float* qt = q + row(b, t, d.T) * ldq + h * d.Dh;
        const int lo = first_key(t, d.window);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = lo; j <= t; ++j) {
          const float* kj = k + row(b, j, d.T) * ldkv + g * d.Dh;
          double s = 0.0;
          for (int c = 0; c < d.Dh; ++c) s += static_cast<double>(qt[c]) * kj[c];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int j = lo; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
        float* o = out + row(b, t, d.T) * ldo + h * d.Dh;
        for (int c = 0; c < d.Dh; ++c) {
          double acc = 0.0;
          for (int j = lo; j <= t; ++j) acc += p[j] * v[row(b, j, d.T) * ldkv + g * d.Dh + c];
          o[c] = static_cast<float>(acc / sum);
        }
        lse[(static_cast<int64_t>(b) * d.H + h) * d.T + t] = static_cast<float>(mx + std::log(sum));
      }
}

void attention_backward_reference(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                  int64_t ldo, const float* lse, const float* q, int64_t ldq, const float* k,
                                  const float* v, int64_t ldkv, const AttentionDims& d) {
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  for (int b = 0; b < d.B; ++b)
    for (int t = 0; t < d.T; ++t) {
      for (int h = 0; h < d.H; ++h)
        for (int c = 0; c < d.Dh; ++c) dq[row(b, t, d.T) * ldq + h * d.Dh + c] = 0.0f;
      for (int g = 0; g < d.Hk; ++g)
        for (int c = 0; c < d.Dh; ++c) {
          dk[row(b, t, d.T) * ldkv + g * d.Dh + c] = 0.0f;
          dv[row(b, t, d.T) * ldkv + g * d.Dh + c] = 0.0f;
        }
    }
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      for (int t = 0; t < d.T; ++t) {
        const int g = h / group;
        const float* qt = q + row(b, t, d.T) * ldq + h * d.Dh;
        const float* ot = out + row(b, t, d.T) * ldo + h * d.Dh;
        const float* got = dout + row(b, t, d.T) * ldo + h * d.Dh;
        float* dqt = dq + row(b, t, d.T) * ldq + h * d.Dh;
        const double l = lse[(static_cast<int64_t>(b) * d.H + h) * d.T + t];
        double delta = 0.0;
        for (int c = 0; c < d.Dh; ++c) delta += static_cast<double>(got[c]) * ot[c];
        for (int j = first_key(t, d.window); j <= t; ++j) {
          const float* kj = k + row(b, j, d.T) * ldkv + g * d.Dh;
          const float* vj = v + row(b, j, d.T) * ldkv + g * d.Dh;
          double s = 0.0, dp = 0.0;
          for (int c = 0; c < d.Dh; ++c) {
            s += static_cast<double>(qt[c]) * kj[c];
            dp += static_cast<double>(got[c]) * vj[c];
          }
          const double p = std::exp(s * scale - l);
          const double ds = p * (dp - delta) * scale;
          float* dkj = dk + row(b, j, d.T) * ldkv + g * d.Dh;
          float* dvj = dv + row(b, j, d.T) * ldkv + g * d.Dh;
          for (int c = 0; c < d.Dh; ++c) {
            dqt[c] += static_cast<float>(ds * kj[c]);
            dkj[c] += static_cast<float>(ds * qt[c]);
            dvj[c] += static_cast<float>(p * got[c]);
          }
        }
      }
}

void attention_forward(float* out, int64_t ldo, float* lse, const float* q, int64_t ldq, const float* k,
                       const float* v, int64_t ldkv, const AttentionDims& d) {
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  const int blocks = (d.T + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < d.B; ++b)
      for (int h = 0; h < d.H; ++h)
        for (int blk = 0; blk < blocks; ++blk) {
          const int g = h / group;
          const int t0 = blk * kQueryBlock, t1 = std::min(d.T, t0 + kQueryBlock), nq = t1 - t0;
          const int lo = first_key(t0, d.window), nk = t1 - lo;
          scores.resize(static_cast<size_t>(nq) * nk);
          float* S = scores.data();
          matmul(false, true, nq, nk, d.Dh, scale, q + row(b, t0, d.T) * ldq + h * d.Dh, static_cast<int>(ldq),
                 k + row(b, lo, d.T) * ldkv + g * d.Dh, static_cast<int>(ldkv), 0.0f, S, nk);
          float* lse_row = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
          for (int i = 0; i < nq; ++i) {
            const int t = t0 + i;
            const int j0 = first_key(t, d.window) - lo, j1 = t - lo;  // valid columns [j0, j1]
            float* s = S + static_cast<int64_t>(i) * nk;
            float mx = -std::numeric_limits<float>::infinity();
            for (int j = j0; j <= j1; ++j) mx = std::max(mx, s[j]);
            float sum = 0.0f;
            for (int j = 0; j < j0; ++j) s[j] = 0.0f;
            for (int j = j0; j <= j1; ++j) sum += (s[j] = std::exp(s[j] - mx));
            for (int j = j1 + 1; j < nk; ++j) s[j] = 0.0f;
            const float inv = 1.0f / sum;
            for (int j = j0; j <= j1; ++j) s[j] *= inv;
            lse_row[t] = mx + std::log(sum);
          }
          matmul(false, false, nq, d.Dh, nk, 1.0f, S, nk, v + row(b, lo, d.T) * ldkv + g * d.Dh,
                 static_cast<int>(ldkv), 0.0f, out + row(b, t0, d.T) * ldo + h * d.Dh, static_cast<int>(ldo));
        }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, int64_t ldo,
                        const float* lse, const float* q, int64_t ldq, const float* k, const float* v,
                        int64_t ldkv, const AttentionDims& d) {
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  const int blocks = (d.T + kQueryBlock - 1) / kQueryBlock;
  // One task per (b, KV head): every write to that head's dk, dv happens in one thread, in a fixed order.
#pragma omp parallel
  {
    std::vector<float> probs, dprobs;
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < d.B; ++b)
      for (int g = 0; g < d.Hk; ++g) {
        for (int t = 0; t < d.T; ++t)
          for (int c = 0; c < d.Dh; ++c) {
            dk[row(b, t, d.T) * ldkv + g * d.Dh + c] = 0.0f;
            dv[row(b, t, d.T) * ldkv + g * d.Dh + c] = 0.0f;
          }
        for (int h = g * group; h < (g + 1) * group; ++h)
          for (int blk = 0; blk < blocks; ++blk) {
            const int t0 = blk * kQueryBlock, t1 = std::min(d.T, t0 + kQueryBlock), nq = t1 - t0;
            const int lo = first_key(t0, d.window), nk = t1 - lo;
            probs.resize(static_cast<size_t>(nq) * nk);
            dprobs.resize(static_cast<size_t>(nq) * nk);
            float* P = probs.data();
            float* dP = dprobs.data();
            const float* qb = q + row(b, t0, d.T) * ldq + h * d.Dh;
            const float* kb = k + row(b, lo, d.T) * ldkv + g * d.Dh;
            const float* vb = v + row(b, lo, d.T) * ldkv + g * d.Dh;
            const float* dob = dout + row(b, t0, d.T) * ldo + h * d.Dh;
            const float* ob = out + row(b, t0, d.T) * ldo + h * d.Dh;
            matmul(false, true, nq, nk, d.Dh, scale, qb, static_cast<int>(ldq), kb, static_cast<int>(ldkv), 0.0f, P,
                   nk);
            matmul(false, true, nq, nk, d.Dh, 1.0f, dob, static_cast<int>(ldo), vb, static_cast<int>(ldkv), 0.0f,
                   dP, nk);
            const float* lse_row = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
            for (int i = 0; i < nq; ++i) {
              const int t = t0 + i;
              const int j0 = first_key(t, d.window) - lo, j1 = t - lo;
              float* p = P + static_cast<int64_t>(i) * nk;
              float* dp = dP + static_cast<int64_t>(i) * nk;
              float delta = 0.0f;
              for (int c = 0; c < d.Dh; ++c) delta += dob[i * ldo + c] * ob[i * ldo + c];
              const float l = lse_row[t];
              for (int j = 0; j < nk; ++j) {
                if (j < j0 || j > j1) {
                  p[j] = 0.0f;
                  dp[j] = 0.0f;
                } else {
                  p[j] = std::exp(p[j] - l);
                  dp[j] = p[j] * (dp[j] - delta) * scale;
                }
              }
            }
            matmul(false, false, nq, d.Dh, nk, 1.0f, dP, nk, kb, static_cast<int>(ldkv), 0.0f,
                   dq + row(b, t0, d.T) * ldq + h * d.Dh, static_cast<int>(ldq));
            matmul(true, false, nk, d.Dh, nq, 1.0f, dP, nk, qb, static_cast<int>(ldq), 1.0f,
                   dk + row(b, lo, d.T) * ldkv + g * d.Dh, static_cast<int>(ldkv));
            matmul(true, false, nk, d.Dh, nq, 1.0f, P, nk, dob, static_cast<int>(ldo), 1.0f,
                   dv + row(b, lo, d.T) * ldkv + g * d.Dh, static_cast<int>(ldkv));
          }
      }
  }
}

}  // namespace bmojo
