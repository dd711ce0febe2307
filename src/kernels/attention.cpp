#include "kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/bf16.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/vector_math.hpp"

namespace bmojo {

namespace {

constexpr int kQueryBlock = 64;

inline int64_t row(int b, int t, int T) {
  return static_cast<int64_t>(b) * T + t;
}

// The key sets of query t (SPEC section 3): in-context [ctx_lo(t), t], fading [fade_lo(t), fade_hi(t)].
inline int ctx_lo(int t, int W) {
  return W > 0 ? std::max(0, t - W + 1) : 0;
}
inline int fade_lo(int t, int W) {
  return std::max(0, t - 2 * W + 1);
}
inline int fade_hi(int t, int W) {
  return t - W;
}  // < fade_lo when t < W: no fading keys

bool has_fading(const AttentionInputs& in, const AttentionDims& d) {
  return in.kf != nullptr && d.window > 0;
}
bool has_eidetic(const AttentionInputs& in, const AttentionDims& d) {
  return in.eidetic != nullptr && !in.eidetic->empty() && d.window > 0;
}

void check_inputs(const AttentionInputs& in, const AttentionDims& d) {
  check(d.H % d.Hk == 0, "attention: H must be a multiple of Hk");
  if (in.kf != nullptr)
    check(d.window > 0 && in.vf != nullptr, "attention: fading keys need a window and values");
  if (has_eidetic(in, d)) {
    check(in.q_raw != nullptr && in.k_raw != nullptr, "attention: eidetic entries need unrotated q and k");
    check(static_cast<int>(in.eidetic->positions.size()) == d.B,
          "attention: eidetic plan has the wrong batch");
    const int chunks = (d.T + d.window - 1) / d.window;
    for (const auto& per_chunk : in.eidetic->positions)
      check(static_cast<int>(per_chunk.size()) == chunks,
            "attention: eidetic plan has the wrong chunk count");
  }
}

// The entries of the memory that query t (in chunk t / W) may read: p <= t - W.
const std::vector<int32_t>* entries_of(const AttentionInputs& in, const AttentionDims& d, int b, int t) {
  if (!has_eidetic(in, d)) return nullptr;
  return &in.eidetic->positions[b][t / d.window];
}

// Query blocks: at most kQueryBlock rows; with eidetic entries they never straddle a chunk of W, so that
// every row of a block reads the same memory snapshot.
// The vector is the calling thread's, reused from call to call (no allocation in the training step).
const std::vector<std::pair<int, int>>& query_blocks(const AttentionInputs& in, const AttentionDims& d) {
  thread_local std::vector<std::pair<int, int>> blocks;
  blocks.clear();
  const int step = has_eidetic(in, d) ? d.window : d.T;
  for (int c0 = 0; c0 < d.T; c0 += step) {
    const int c1 = std::min(d.T, c0 + step);
    for (int t0 = c0; t0 < c1; t0 += kQueryBlock) blocks.emplace_back(t0, std::min(c1, t0 + kQueryBlock));
  }
  return blocks;
}

// One block of queries [t0, t1) of one (b, query head h): the three key segments and the gathered eidetic
// keys and values, laid side by side in one score row: [ctx (nc) | fading (nf) | eidetic (ne)].
struct Block {
  int t0, t1, nq;
  int lo_c, nc;  // in-context keys [lo_c, lo_c + nc)
  int lo_f, nf;  // fading keys [lo_f, lo_f + nf)
  int ne;        // eidetic entries
  const int32_t* pos = nullptr;
  int nk() const { return nc + nf + ne; }
};

Block make_block(const AttentionInputs& in, const AttentionDims& d, int b, int t0, int t1) {
  Block k{};
  k.t0 = t0, k.t1 = t1, k.nq = t1 - t0;
  k.lo_c = ctx_lo(t0, d.window);
  k.nc = t1 - k.lo_c;
  if (has_fading(in, d)) {
    k.lo_f = fade_lo(t0, d.window);
    k.nf = std::max(0, fade_hi(t1 - 1, d.window) - k.lo_f + 1);
  }
  if (const auto* e = entries_of(in, d, b, t0)) {
    // Entries are ascending: the ones any row of the block may read form a prefix.
    const int last = t1 - 1 - d.window;
    k.ne = static_cast<int>(std::upper_bound(e->begin(), e->end(), last) - e->begin());
    k.pos = e->data();
  }
  return k;
}

// Marks the columns of row t that are not in its key sets, by setting them to -inf.
void mask_row(float* s, const Block& k, int t, int W) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const int c0 = ctx_lo(t, W) - k.lo_c, c1 = t - k.lo_c;
  for (int j = 0; j < c0; ++j) s[j] = ninf;
  for (int j = c1 + 1; j < k.nc; ++j) s[j] = ninf;
  float* f = s + k.nc;
  const int f0 = fade_lo(t, W) - k.lo_f, f1 = fade_hi(t, W) - k.lo_f;
  for (int j = 0; j < k.nf; ++j)
    if (j < f0 || j > f1) f[j] = ninf;
  float* e = f + k.nf;
  for (int j = 0; j < k.ne; ++j)
    if (k.pos[j] > t - W) e[j] = ninf;
}

// Per-thread buffers of the fast kernel, kept from call to call: they only grow.
struct Workspace {
  std::vector<float> S, dS, ke, ve, dke, dve;
};

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

void gather_entries(Workspace& ws, const AttentionInputs& in, const AttentionDims& d, const Block& k, int b,
                    int g) {
  ws.ke.resize(static_cast<size_t>(k.ne) * d.Dh);
  ws.ve.resize(static_cast<size_t>(k.ne) * d.Dh);
  for (int e = 0; e < k.ne; ++e) {
    const int64_t r = row(b, k.pos[e], d.T);
    std::memcpy(ws.ke.data() + static_cast<size_t>(e) * d.Dh, in.k_raw + r * in.ldk_raw + g * d.Dh,
                sizeof(float) * d.Dh);
    std::memcpy(ws.ve.data() + static_cast<size_t>(e) * d.Dh, in.v + r * in.ldkv + g * d.Dh,
                sizeof(float) * d.Dh);
  }
}

// S (nq, nk) = scale * [Q Kc^T | Q Kf^T | Qraw Ke^T], masked.
void block_scores(float* S, Workspace& ws, const AttentionInputs& in, const AttentionDims& d, const Block& k,
                  int b, int h, int g, float scale) {
  const int nk = k.nk();
  const int ldq = static_cast<int>(in.ldq), ldkv = static_cast<int>(in.ldkv);
  const float* qb = in.q + row(b, k.t0, d.T) * in.ldq + h * d.Dh;
  matmul(false, true, k.nq, k.nc, d.Dh, scale, qb, ldq, in.k + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh, ldkv,
         0.0f, S, nk);
  if (k.nf > 0)
    matmul(false, true, k.nq, k.nf, d.Dh, scale, qb, ldq, in.kf + row(b, k.lo_f, d.T) * in.ldf + g * d.Dh,
           static_cast<int>(in.ldf), 0.0f, S + k.nc, nk);
  if (k.ne > 0)
    matmul(false, true, k.nq, k.ne, d.Dh, scale, in.q_raw + row(b, k.t0, d.T) * in.ldq_raw + h * d.Dh,
           static_cast<int>(in.ldq_raw), ws.ke.data(), d.Dh, 0.0f, S + k.nc + k.nf, nk);
  for (int i = 0; i < k.nq; ++i) mask_row(S + static_cast<int64_t>(i) * nk, k, k.t0 + i, d.window);
}

}  // namespace

bool EideticPlan::empty() const {
  for (const auto& b : positions)
    for (const auto& c : b)
      if (!c.empty()) return false;
  return true;
}

void attention_forward_reference(float* out, int64_t ldo, float* lse, const AttentionInputs& in,
                                 const AttentionDims& d) {
  check_inputs(in, d);
  const int group = d.H / d.Hk, W = d.window;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.Dh));
  // Every key a query reads, as (key row, value row) pointers.
  std::vector<std::pair<const float*, const float*>> keys;
  std::vector<double> p;
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      for (int t = 0; t < d.T; ++t) {
        const int g = h / group;
        const float* qt = in.q + row(b, t, d.T) * in.ldq + h * d.Dh;
        keys.clear();
        std::vector<bool> raw;  // eidetic keys are scored with the unrotated query
        for (int j = ctx_lo(t, W); j <= t; ++j) {
          keys.emplace_back(in.k + row(b, j, d.T) * in.ldkv + g * d.Dh,
                            in.v + row(b, j, d.T) * in.ldkv + g * d.Dh);
          raw.push_back(false);
        }
        if (has_fading(in, d))
          for (int j = fade_lo(t, W); j <= fade_hi(t, W); ++j) {
            keys.emplace_back(in.kf + row(b, j, d.T) * in.ldf + g * d.Dh,
                              in.vf + row(b, j, d.T) * in.ldf + g * d.Dh);
            raw.push_back(false);
          }
        if (const auto* e = entries_of(in, d, b, t))
          for (int32_t pos : *e)
            if (pos <= t - W) {
              keys.emplace_back(in.k_raw + row(b, pos, d.T) * in.ldk_raw + g * d.Dh,
                                in.v + row(b, pos, d.T) * in.ldkv + g * d.Dh);
              raw.push_back(true);
            }
        p.assign(keys.size(), 0.0);
        double mx = -std::numeric_limits<double>::infinity();
        for (size_t j = 0; j < keys.size(); ++j) {
          const float* qq = raw[j] ? in.q_raw + row(b, t, d.T) * in.ldq_raw + h * d.Dh : qt;
          double s = 0.0;
          for (int c = 0; c < d.Dh; ++c) s += static_cast<double>(qq[c]) * keys[j].first[c];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        float* o = out + row(b, t, d.T) * ldo + h * d.Dh;
        for (int c = 0; c < d.Dh; ++c) {
          double acc = 0.0;
          for (size_t j = 0; j < keys.size(); ++j) acc += p[j] * keys[j].second[c];
          o[c] = static_cast<float>(acc / sum);
        }
        lse[(static_cast<int64_t>(b) * d.H + h) * d.T + t] = static_cast<float>(mx + std::log(sum));
      }
}

void attention_backward_reference(const AttentionGrads& gr, const float* dout, const float* out, int64_t ldo,
                                  const float* lse, const AttentionInputs& in, const AttentionDims& d) {
  check_inputs(in, d);
  const int group = d.H / d.Hk, W = d.window;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.Dh));
  const bool fading = has_fading(in, d), eidetic = has_eidetic(in, d);
  auto zero = [&](float* x, int64_t ld, int cols) {
    if (x == nullptr) return;
    for (int64_t r = 0; r < static_cast<int64_t>(d.B) * d.T; ++r)
      std::fill(x + r * ld, x + r * ld + cols, 0.0f);
  };
  zero(gr.dq, in.ldq, d.H * d.Dh);
  zero(gr.dk, in.ldkv, d.Hk * d.Dh);
  zero(gr.dv, in.ldkv, d.Hk * d.Dh);
  if (fading) {
    zero(gr.dkf, in.ldf, d.Hk * d.Dh);
    zero(gr.dvf, in.ldf, d.Hk * d.Dh);
  }
  if (eidetic) {
    zero(gr.dq_raw, in.ldq_raw, d.H * d.Dh);
    zero(gr.dk_raw, in.ldk_raw, d.Hk * d.Dh);
  }
  // One key read by query t: its key/value rows and where their gradients go.
  struct Key {
    const float *k, *v, *q;
    float *dk, *dv, *dq;
  };
  std::vector<Key> keys;
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      for (int t = 0; t < d.T; ++t) {
        const int g = h / group;
        const int64_t rt = row(b, t, d.T);
        const float* qt = in.q + rt * in.ldq + h * d.Dh;
        float* dqt = gr.dq + rt * in.ldq + h * d.Dh;
        keys.clear();
        for (int j = ctx_lo(t, W); j <= t; ++j) {
          const int64_t r = row(b, j, d.T) * in.ldkv + g * d.Dh;
          keys.push_back({in.k + r, in.v + r, qt, gr.dk + r, gr.dv + r, dqt});
        }
        if (fading)
          for (int j = fade_lo(t, W); j <= fade_hi(t, W); ++j) {
            const int64_t r = row(b, j, d.T) * in.ldf + g * d.Dh;
            keys.push_back({in.kf + r, in.vf + r, qt, gr.dkf + r, gr.dvf + r, dqt});
          }
        if (const auto* e = entries_of(in, d, b, t))
          for (int32_t pos : *e)
            if (pos <= t - W) {
              const int64_t rk = row(b, pos, d.T) * in.ldk_raw + g * d.Dh,
                            rv = row(b, pos, d.T) * in.ldkv + g * d.Dh;
              keys.push_back({in.k_raw + rk, in.v + rv, in.q_raw + rt * in.ldq_raw + h * d.Dh, gr.dk_raw + rk,
                              gr.dv + rv, gr.dq_raw + rt * in.ldq_raw + h * d.Dh});
            }
        const float* ot = out + rt * ldo + h * d.Dh;
        const float* got = dout + rt * ldo + h * d.Dh;
        const double l = lse[(static_cast<int64_t>(b) * d.H + h) * d.T + t];
        double delta = 0.0;
        for (int c = 0; c < d.Dh; ++c) delta += static_cast<double>(got[c]) * ot[c];
        for (const Key& key : keys) {
          double s = 0.0, dp = 0.0;
          for (int c = 0; c < d.Dh; ++c) {
            s += static_cast<double>(key.q[c]) * key.k[c];
            dp += static_cast<double>(got[c]) * key.v[c];
          }
          const double p = std::exp(s * scale - l);
          const double ds = p * (dp - delta) * scale;
          for (int c = 0; c < d.Dh; ++c) {
            key.dq[c] += static_cast<float>(ds * key.k[c]);
            key.dk[c] += static_cast<float>(ds * key.q[c]);
            key.dv[c] += static_cast<float>(p * got[c]);
          }
        }
      }
}

void attention_forward(float* out, int64_t ldo, float* lse, const AttentionInputs& in,
                       const AttentionDims& d) {
  const profile::Scope scope("attention_forward");
  check_inputs(in, d);
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  const auto& blocks = query_blocks(in, d);
  const int nblocks = static_cast<int>(blocks.size());
  ParallelErrors errors;
#pragma omp parallel
  {
    Workspace& ws = thread_workspace();
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < d.B; ++b)
      for (int h = 0; h < d.H; ++h)
        for (int bi = 0; bi < nblocks; ++bi) {
          errors.guard([&] {
            const int g = h / group;
            const Block k = make_block(in, d, b, blocks[bi].first, blocks[bi].second);
            const int nk = k.nk();
            ws.S.resize(static_cast<size_t>(k.nq) * nk);
            float* S = ws.S.data();
            if (k.ne > 0) gather_entries(ws, in, d, k, b, g);
            block_scores(S, ws, in, d, k, b, h, g, scale);
            float* lse_row = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
            for (int i = 0; i < k.nq; ++i) {
              float* s = S + static_cast<int64_t>(i) * nk;
              const float mx = max_of(s, nk);
              const float sum = exp_shifted(s, nk, mx);  // masked columns hold -inf: exactly 0
              const float inv = 1.0f / sum;
#pragma omp simd
              for (int j = 0; j < nk; ++j) s[j] *= inv;
              lse_row[k.t0 + i] = mx + std::log(sum);
            }
            float* ob = out + row(b, k.t0, d.T) * ldo + h * d.Dh;
            const int ld_o = static_cast<int>(ldo);
            matmul(false, false, k.nq, d.Dh, k.nc, 1.0f, S, nk,
                   in.v + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh, static_cast<int>(in.ldkv), 0.0f, ob,
                   ld_o);
            if (k.nf > 0)
              matmul(false, false, k.nq, d.Dh, k.nf, 1.0f, S + k.nc, nk,
                     in.vf + row(b, k.lo_f, d.T) * in.ldf + g * d.Dh, static_cast<int>(in.ldf), 1.0f, ob,
                     ld_o);
            if (k.ne > 0)
              matmul(false, false, k.nq, d.Dh, k.ne, 1.0f, S + k.nc + k.nf, nk, ws.ve.data(), d.Dh, 1.0f, ob,
                     ld_o);
          });
        }
  }
  errors.rethrow();
}

void attention_backward(const AttentionGrads& gr, const float* dout, const float* out, int64_t ldo,
                        const float* lse, const AttentionInputs& in, const AttentionDims& d) {
  const profile::Scope scope("attention_backward");
  check_inputs(in, d);
  const int group = d.H / d.Hk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  const bool fading = has_fading(in, d), eidetic = has_eidetic(in, d);
  const auto& blocks = query_blocks(in, d);
  const int ldq = static_cast<int>(in.ldq), ldkv = static_cast<int>(in.ldkv), ldf = static_cast<int>(in.ldf);
  const int ld_o = static_cast<int>(ldo);
  // One task per (b, KV head): every write to that head's key and value gradients happens in one thread, in
  // a fixed order, so results do not depend on the thread count.
  ParallelErrors errors;
#pragma omp parallel
  {
    Workspace& ws = thread_workspace();
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < d.B; ++b)
      for (int g = 0; g < d.Hk; ++g) {
        errors.guard([&] {
          auto zero = [&](float* x, int64_t ld, int col0, int cols) {
            for (int t = 0; t < d.T; ++t) std::fill_n(x + row(b, t, d.T) * ld + col0, cols, 0.0f);
          };
          zero(gr.dk, in.ldkv, g * d.Dh, d.Dh);
          zero(gr.dv, in.ldkv, g * d.Dh, d.Dh);
          if (fading) {
            zero(gr.dkf, in.ldf, g * d.Dh, d.Dh);
            zero(gr.dvf, in.ldf, g * d.Dh, d.Dh);
          }
          if (eidetic) {
            zero(gr.dk_raw, in.ldk_raw, g * d.Dh, d.Dh);
            zero(gr.dq_raw, in.ldq_raw, g * group * d.Dh, group * d.Dh);
          }
          for (int h = g * group; h < (g + 1) * group; ++h)
            for (const auto& [t0, t1] : blocks) {
              const Block k = make_block(in, d, b, t0, t1);
              const int nk = k.nk();
              ws.S.resize(static_cast<size_t>(k.nq) * nk);
              ws.dS.resize(static_cast<size_t>(k.nq) * nk);
              float* P = ws.S.data();
              float* dP = ws.dS.data();
              if (k.ne > 0) gather_entries(ws, in, d, k, b, g);
              block_scores(P, ws, in, d, k, b, h, g, scale);
              const float* qb = in.q + row(b, t0, d.T) * in.ldq + h * d.Dh;
              const float* dob = dout + row(b, t0, d.T) * ldo + h * d.Dh;
              const float* ob = out + row(b, t0, d.T) * ldo + h * d.Dh;
              const float* kc = in.k + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh;
              const float* vc = in.v + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh;
              matmul(false, true, k.nq, k.nc, d.Dh, 1.0f, dob, ld_o, vc, ldkv, 0.0f, dP, nk);
              if (k.nf > 0)
                matmul(false, true, k.nq, k.nf, d.Dh, 1.0f, dob, ld_o,
                       in.vf + row(b, k.lo_f, d.T) * in.ldf + g * d.Dh, ldf, 0.0f, dP + k.nc, nk);
              if (k.ne > 0)
                matmul(false, true, k.nq, k.ne, d.Dh, 1.0f, dob, ld_o, ws.ve.data(), d.Dh, 0.0f,
                       dP + k.nc + k.nf, nk);
              const float* lse_row = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
              for (int i = 0; i < k.nq; ++i) {
                float* p = P + static_cast<int64_t>(i) * nk;
                float* dp = dP + static_cast<int64_t>(i) * nk;
                float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
                for (int c = 0; c < d.Dh; ++c) delta += dob[i * ldo + c] * ob[i * ldo + c];
                exp_shifted(p, nk,
                            lse_row[t0 + i]);  // the probabilities; masked columns hold -inf: exactly 0
#pragma omp simd
                for (int j = 0; j < nk; ++j) dp[j] = p[j] * (dp[j] - delta) * scale;
              }
              float* dqb = gr.dq + row(b, t0, d.T) * in.ldq + h * d.Dh;
              matmul(false, false, k.nq, d.Dh, k.nc, 1.0f, dP, nk, kc, ldkv, 0.0f, dqb, ldq);
              matmul(true, false, k.nc, d.Dh, k.nq, 1.0f, dP, nk, qb, ldq, 1.0f,
                     gr.dk + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh, ldkv);
              matmul(true, false, k.nc, d.Dh, k.nq, 1.0f, P, nk, dob, ld_o, 1.0f,
                     gr.dv + row(b, k.lo_c, d.T) * in.ldkv + g * d.Dh, ldkv);
              if (k.nf > 0) {
                const int64_t rf = row(b, k.lo_f, d.T) * in.ldf + g * d.Dh;
                matmul(false, false, k.nq, d.Dh, k.nf, 1.0f, dP + k.nc, nk, in.kf + rf, ldf, 1.0f, dqb, ldq);
                matmul(true, false, k.nf, d.Dh, k.nq, 1.0f, dP + k.nc, nk, qb, ldq, 1.0f, gr.dkf + rf, ldf);
                matmul(true, false, k.nf, d.Dh, k.nq, 1.0f, P + k.nc, nk, dob, ld_o, 1.0f, gr.dvf + rf, ldf);
              }
              if (k.ne > 0) {
                const int ldqr = static_cast<int>(in.ldq_raw);
                const float* qrb = in.q_raw + row(b, t0, d.T) * in.ldq_raw + h * d.Dh;
                const float* dPe = dP + k.nc + k.nf;
                matmul(false, false, k.nq, d.Dh, k.ne, 1.0f, dPe, nk, ws.ke.data(), d.Dh, 1.0f,
                       gr.dq_raw + row(b, t0, d.T) * in.ldq_raw + h * d.Dh, ldqr);
                ws.dke.resize(static_cast<size_t>(k.ne) * d.Dh);
                ws.dve.resize(static_cast<size_t>(k.ne) * d.Dh);
                matmul(true, false, k.ne, d.Dh, k.nq, 1.0f, dPe, nk, qrb, ldqr, 0.0f, ws.dke.data(), d.Dh);
                matmul(true, false, k.ne, d.Dh, k.nq, 1.0f, P + k.nc + k.nf, nk, dob, ld_o, 0.0f,
                       ws.dve.data(), d.Dh);
                for (int e = 0; e < k.ne; ++e) {
                  const int64_t r = row(b, k.pos[e], d.T);
                  float* dk = gr.dk_raw + r * in.ldk_raw + g * d.Dh;
                  float* dv = gr.dv + r * in.ldkv + g * d.Dh;
                  for (int c = 0; c < d.Dh; ++c) {
                    dk[c] += ws.dke[static_cast<size_t>(e) * d.Dh + c];
                    dv[c] += ws.dve[static_cast<size_t>(e) * d.Dh + c];
                  }
                }
              }
            }
        });
      }
  }
  errors.rethrow();
}

}  // namespace bmojo

// ---- The recurrent step's attention ----

namespace bmojo {

namespace {

// The block's products: through BLAS for blocks of many queries; for the few queries of decode, direct
// loops (a BLAS call per head and key set costs more than the products themselves): register-tiled
// AVX-512 or AVX2 kernels (WideVec) when the head dimension is a multiple of the lane count up to 128, plain
// loops otherwise (the plain dot product per key reduces across lanes once per key: on AVX2 it made the
// decode step's attention 3x slower than its bytes).
constexpr int kDirectRows = 4;
// Rows per block when a decode item walks a sequence's cached rows for all its heads.
constexpr int64_t kRowBlock = 32;

#ifdef BMOJO_WIDE_VEC
using WV = WideVec;
constexpr int kL = WV::kLanes;

// One vector of a cached row, either storage (bf16 widened exactly).
template <typename T>
WV::V load_row(const T* p) {
  if constexpr (std::is_same_v<T, float>)
    return WV::load(p);
  else
    return WV::load_bf16(p);
}

// s[j] = alpha q . K_j for the n rows K_j of K (stride ld), head dimension kL V: kL keys at a time, each
// one's products in one register, the kL summed across lanes together (WideVec::sum_lanes).
template <int V, typename T>
void scores_row(const float* q, const T* K, int64_t ld, int n, float alpha, float* s) {
  WV::V qv[V];
  for (int v = 0; v < V; ++v) qv[v] = WV::load(q + kL * v);
  const WV::V scale = WV::set1(alpha);
  int j = 0;
  for (; j + kL <= n; j += kL) {
    WV::V acc[kL];
    for (int r = 0; r < kL; ++r) {
      const T* k = K + (j + r) * ld;
      WV::V a = WV::mul(qv[0], load_row(k));
      for (int v = 1; v < V; ++v) a = WV::fmadd(qv[v], load_row(k + kL * v), a);
      acc[r] = a;
    }
    WV::store(s + j, WV::mul(WV::sum_lanes(acc), scale));
  }
  for (; j < n; ++j) {
    const T* k = K + j * ld;
    WV::V a = WV::mul(qv[0], load_row(k));
    for (int v = 1; v < V; ++v) a = WV::fmadd(qv[v], load_row(k + kL * v), a);
    s[j] = alpha * WV::reduce_add(a);
  }
}

// out (+)= sum_j p[j] V_j over the n rows V_j of Vr (stride ld), head dimension kL V: the output row in
// registers, two interleaved sets of accumulators (the adds of consecutive rows do not wait on each other).
template <int V, typename T>
void weighted_rows(const float* p, const T* Vr, int64_t ld, int n, bool accumulate, float* out) {
  WV::V a0[V], a1[V];
  for (int v = 0; v < V; ++v) {
    a0[v] = accumulate ? WV::load(out + kL * v) : WV::zero();
    a1[v] = WV::zero();
  }
  int j = 0;
  for (; j + 2 <= n; j += 2) {
    const WV::V w0 = WV::set1(p[j]), w1 = WV::set1(p[j + 1]);
    const T* r0 = Vr + j * ld;
    const T* r1 = r0 + ld;
    for (int v = 0; v < V; ++v) {
      a0[v] = WV::fmadd(w0, load_row(r0 + kL * v), a0[v]);
      a1[v] = WV::fmadd(w1, load_row(r1 + kL * v), a1[v]);
    }
  }
  if (j < n) {
    const WV::V w0 = WV::set1(p[j]);
    for (int v = 0; v < V; ++v) a0[v] = WV::fmadd(w0, load_row(Vr + j * ld + kL * v), a0[v]);
  }
  for (int v = 0; v < V; ++v) WV::store(out + kL * v, WV::add(a0[v], a1[v]));
}

// Calls f(integral_constant<V>) for V = Dh / kL with Dh a multiple of kL up to 128; false otherwise.
template <int V = 1, typename F>
bool with_head_vectors(int Dh, F&& f) {
  if constexpr (V * kL <= 128) {
    if (Dh == kL * V) return f(std::integral_constant<int, V>{}), true;
    return with_head_vectors<V + 1>(Dh, f);
  }
  return false;
}
#endif

// A cached element as fp32, either storage.
inline float widen(float x) {
  return x;
}
inline float widen(uint16_t x) {
  return bf16_to_float(x);
}

// The direct loops' plain form: any head dimension, any ISA.
template <typename T>
void block_product_plain(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const T* B,
                         int ldb, float beta, float* C, int ldc) {
  for (int i = 0; i < M; ++i) {
    const float* a = A + static_cast<int64_t>(i) * lda;
    float* c = C + static_cast<int64_t>(i) * ldc;
    if (trans_b) {  // c[j] = alpha a . B_j (+ beta c[j])
      for (int j = 0; j < N; ++j) {
        const T* b = B + static_cast<int64_t>(j) * ldb;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int k = 0; k < K; ++k) acc += a[k] * widen(b[k]);
        c[j] = beta == 0.0f ? alpha * acc : alpha * acc + beta * c[j];
      }
    } else {  // c = alpha sum_k a[k] B_k (+ beta c)
      if (beta == 0.0f)
        std::fill_n(c, N, 0.0f);
      else if (beta != 1.0f)
        for (int j = 0; j < N; ++j) c[j] *= beta;
      for (int k = 0; k < K; ++k) {
        const float w = alpha * a[k];
        if (w == 0.0f) continue;
        const T* b = B + static_cast<int64_t>(k) * ldb;
#pragma omp simd
        for (int j = 0; j < N; ++j) c[j] += w * widen(b[j]);
      }
    }
  }
}

// Cached rows in either storage: fp32 (f) or bf16 (h), one of the two set.
struct RowsRef {
  const float* f = nullptr;
  const uint16_t* h = nullptr;
  RowsRef plus(int64_t n) const { return {f != nullptr ? f + n : nullptr, h != nullptr ? h + n : nullptr}; }
};

// trans_b: C (M, N) = alpha A (M, K) B^T, B's rows the keys (K = Dh); else C (M, N = Dh) = alpha A B + beta
// C, B's rows the values (K keys).
template <typename T>
void block_product_of(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const T* B,
                      int ldb, float beta, float* C, int ldc) {
#ifdef BMOJO_WIDE_VEC
  if (trans_b && beta == 0.0f && with_head_vectors(K, [&](auto v) {
        for (int i = 0; i < M; ++i)
          scores_row<decltype(v)::value>(A + static_cast<int64_t>(i) * lda, B, ldb, N, alpha,
                                         C + static_cast<int64_t>(i) * ldc);
      }))
    return;
  if (!trans_b && alpha == 1.0f && (beta == 0.0f || beta == 1.0f) && with_head_vectors(N, [&](auto v) {
        for (int i = 0; i < M; ++i)
          weighted_rows<decltype(v)::value>(A + static_cast<int64_t>(i) * lda, B, ldb, K, beta == 1.0f,
                                            C + static_cast<int64_t>(i) * ldc);
      }))
    return;
#endif
  block_product_plain(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Direct loops for a few queries (decode), a BLAS product for more; bf16 rows are widened into a buffer
// first for the BLAS product.
void block_product(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, RowsRef B,
                   int ldb, float beta, float* C, int ldc) {
  if (M > kDirectRows) {
    if (B.h == nullptr) {
      matmul(false, trans_b, M, N, K, alpha, A, lda, B.f, ldb, beta, C, ldc);
      return;
    }
    const int rows = trans_b ? N : K, cols = trans_b ? K : N;
    thread_local std::vector<float> wide;
    wide.resize(static_cast<size_t>(rows) * cols);
    for (int r = 0; r < rows; ++r)
      bf16_to_float(wide.data() + static_cast<size_t>(r) * cols, B.h + static_cast<int64_t>(r) * ldb, cols);
    matmul(false, trans_b, M, N, K, alpha, A, lda, wide.data(), cols, beta, C, ldc);
    return;
  }
  if (B.h != nullptr)
    block_product_of(trans_b, M, N, K, alpha, A, lda, B.h, ldb, beta, C, ldc);
  else
    block_product_of(trans_b, M, N, K, alpha, A, lda, B.f, ldb, beta, C, ldc);
}

// Which cached keys query t of a step task may read, by set; the same rule as the parallel form.
struct StepSpans {
  int64_t wlo, whi;  // window positions [wlo, whi]
  int64_t flo, fhi;  // fading positions [flo, fhi] (empty when flo > fhi)
};

bool has_fading(const StepKeys& k) {
  return k.fading != nullptr || k.fading16 != nullptr;
}

StepSpans step_spans(const StepKeys& k, int64_t t, int W) {
  StepSpans s;
  s.wlo = std::max<int64_t>(k.window_first, W > 0 ? t - W + 1 : 0);
  s.whi = t;
  s.flo = std::max<int64_t>(k.fading_first, t - 2 * static_cast<int64_t>(W) + 1);
  s.fhi = has_fading(k) && W > 0 ? t - W : s.flo - 1;
  return s;
}

void check_step_task(const StepAttentionTask& task, const AttentionDims& d) {
  check(d.H % d.Hk == 0, "attention_step: H must be a multiple of Hk");
  const StepKeys& k = task.keys;
  const bool eidetic = k.memory_count > 0 || k.retrieved != nullptr;
  check(!eidetic || (task.q_raw != nullptr && d.window > 0),
        "attention_step: memory entries need unrotated queries and a window");
  check((k.window != nullptr) != (k.window16 != nullptr) && k.window_first <= task.t0,
        "attention_step: the window rows (one storage) must reach t0");
  check(k.fading == nullptr || k.fading16 == nullptr, "attention_step: fading rows in one storage");
  check(k.memory == nullptr || k.memory16 == nullptr, "attention_step: memory rows in one storage");
  if (eidetic && task.n > 0)
    check(task.t0 / d.window == (task.t0 + task.n - 1) / d.window,
          "attention_step: a task with memory entries must not straddle a chunk");
}

}  // namespace

void attention_step_reference(const StepAttentionTask* tasks, size_t count, const AttentionDims& d) {
  const int group = d.H / d.Hk, kvd = d.Hk * d.Dh;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.Dh));
  std::vector<double> score;
  std::vector<const float*> value;
  std::vector<float> window_wide, fading_wide, memory_wide;
  for (size_t ti = 0; ti < count; ++ti) {
    const StepAttentionTask& task = tasks[ti];
    check_step_task(task, d);
    StepKeys k = task.keys;
    // bf16 rows widened to fp32 copies of `rows` rows.
    const auto widened = [&](const uint16_t* h, int64_t rows, std::vector<float>& out) {
      out.resize(static_cast<size_t>(rows * k.ld));
      bf16_to_float(out.data(), h, out.size());
      return out.data();
    };
    if (k.window16 != nullptr) k.window = widened(k.window16, task.t0 + task.n - k.window_first, window_wide);
    if (k.fading16 != nullptr) k.fading = widened(k.fading16, task.t0 + task.n - k.fading_first, fading_wide);
    if (k.memory16 != nullptr) k.memory = widened(k.memory16, k.memory_count, memory_wide);
    for (int i = 0; i < task.n; ++i) {
      const int64_t t = task.t0 + i;
      const StepSpans sp = step_spans(k, t, d.window);
      for (int h = 0; h < d.H; ++h) {
        const int g = h / group;
        const float* q = task.q + i * task.ldq + h * d.Dh;
        const float* qr = task.q_raw != nullptr ? task.q_raw + i * task.ldq_raw + h * d.Dh : nullptr;
        score.clear();
        value.clear();
        const auto add = [&](const float* query, const float* key, const float* val) {
          double s = 0.0;
          for (int c = 0; c < d.Dh; ++c) s += static_cast<double>(query[c]) * key[c];
          score.push_back(s * scale);
          value.push_back(val);
        };
        for (int64_t p = sp.wlo; p <= sp.whi; ++p) {
          const float* r = k.window + (p - k.window_first) * k.ld;
          add(q, r + g * d.Dh, r + kvd + g * d.Dh);
        }
        for (int64_t p = sp.flo; p <= sp.fhi; ++p) {
          const float* r = k.fading + (p - k.fading_first) * k.ld;
          add(q, r + g * d.Dh, r + kvd + g * d.Dh);
        }
        for (int e = 0; e < k.memory_count; ++e)
          if (k.memory_positions[e] <= t - d.window) {
            const float* r = k.memory + e * k.ld;
            add(qr, r + g * d.Dh, r + kvd + g * d.Dh);
          }
        if (k.retrieved != nullptr)
          for (int e = 0; e < k.retrieved_count[g]; ++e)
            if (k.retrieved_positions[g][e] <= t - d.window) {
              const float* r = k.retrieved[g] + static_cast<int64_t>(e) * 2 * d.Dh;
              add(qr, r, r + d.Dh);
            }
        double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (double s : score) mx = std::max(mx, s);
        for (double& s : score) sum += (s = std::exp(s - mx));
        float* o = task.out + i * task.ldo + h * d.Dh;
        for (int c = 0; c < d.Dh; ++c) {
          double acc = 0.0;
          for (size_t j = 0; j < score.size(); ++j) acc += score[j] * value[j][c];
          o[c] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

void attention_step(const StepAttentionTask* tasks, size_t count, const AttentionDims& d) {
  const profile::Scope scope("attention_step");
  const int group = d.H / d.Hk, kvd = d.Hk * d.Dh, W = d.window;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  // Work items: (task, block of up to kQueryBlock queries, heads [h0, h1)). A decode step over enough
  // sequences gives each item a whole sequence's heads, so that one thread walks that sequence's cached
  // rows once, every head's part of a block of rows together (the rows hold all heads side by side: one
  // head's part alone is a few cache lines at a stride of a row, which the prefetchers do not follow);
  // otherwise (prefill blocks, few sequences) an item is one head.
  struct Item {
    size_t task;
    int i0, i1, h0, h1;
  };
  // The calling thread's list, reused across calls; the team reads it through this reference (a
  // thread_local named inside the region would be each thread's own, empty one).
  thread_local std::vector<Item> item_buffer;
  std::vector<Item>& items = item_buffer;
  items.clear();
  double work = 0.0;
  bool decode = count >= static_cast<size_t>(2 * num_threads());
  for (size_t ti = 0; ti < count; ++ti) {
    check_step_task(tasks[ti], d);
    decode = decode && tasks[ti].n <= kDirectRows;
    const double span =
        W > 0 ? 3.0 * W + tasks[ti].keys.memory_count + 64 : static_cast<double>(tasks[ti].t0 + tasks[ti].n);
    work += static_cast<double>(tasks[ti].n) * d.H * d.Dh * span;
  }
  const int heads_per_item = decode ? d.H : 1;
  for (size_t ti = 0; ti < count; ++ti)
    for (int i0 = 0; i0 < tasks[ti].n; i0 += kQueryBlock)
      for (int h = 0; h < d.H; h += heads_per_item)
        items.push_back({ti, i0, std::min(tasks[ti].n, i0 + kQueryBlock), h, h + heads_per_item});
  ParallelErrors errors;
  const int64_t n_items = static_cast<int64_t>(items.size());
#pragma omp parallel if (parallel_worth(work))
  {
    std::vector<float> S;
#pragma omp for schedule(dynamic)
    for (int64_t it = 0; it < n_items; ++it)
      errors.guard([&] {
        const Item& item = items[it];
        const StepAttentionTask& task = tasks[item.task];
        const StepKeys& k = task.keys;
        const int nb = item.i1 - item.i0, nh = item.h1 - item.h0;
        const int64_t a = task.t0 + item.i0, b = task.t0 + item.i1;  // positions [a, b)
        // Column spans shared by the block: window [wlo, b), fading [flo, fend), memory, retrieved (per KV
        // head: the last columns, as many as the most any head of the item has).
        const StepSpans first = step_spans(k, a, W), last = step_spans(k, b - 1, W);
        const int64_t wlo = first.wlo, nw = b - wlo;
        const int64_t flo = first.flo;
        const int64_t nf = has_fading(k) && W > 0 ? std::max<int64_t>(0, last.fhi - flo + 1) : 0;
        int64_t ne = 0;
        while (ne < k.memory_count && k.memory_positions[ne] <= b - 1 - W) ++ne;
        int64_t nr_max = 0;
        if (k.retrieved != nullptr)
          for (int h = item.h0; h < item.h1; ++h)
            nr_max = std::max<int64_t>(nr_max, k.retrieved_count[h / group]);
        const int64_t cols = nw + nf + ne + nr_max;
        // S: per head of the item, nb rows of cols scores.
        S.resize(static_cast<size_t>(nh) * nb * cols);
        const int ldq = static_cast<int>(task.ldq), ldr = static_cast<int>(task.ldq_raw),
                  ld = static_cast<int>(k.ld), ldS = static_cast<int>(cols), ldo = static_cast<int>(task.ldo);
        const auto S_of = [&](int h) { return S.data() + static_cast<int64_t>(h - item.h0) * nb * cols; };
        const auto q_of = [&](int h) { return task.q + item.i0 * task.ldq + h * d.Dh; };
        const auto qr_of = [&](int h) {
          return task.q_raw != nullptr ? task.q_raw + item.i0 * task.ldq_raw + h * d.Dh : nullptr;
        };
        const auto out_of = [&](int h) { return task.out + item.i0 * task.ldo + h * d.Dh; };
        // The cached sets: rows, count, first column, and whether the unrotated query reads them.
        struct Segment {
          RowsRef rows;
          int64_t n, col;
          bool raw;
        };
        const Segment segments[3] = {
            {RowsRef{k.window, k.window16}.plus((wlo - k.window_first) * k.ld), nw, 0, false},
            {nf > 0 ? RowsRef{k.fading, k.fading16}.plus((flo - k.fading_first) * k.ld) : RowsRef{}, nf, nw,
             false},
            {RowsRef{k.memory, k.memory16}, ne, nw + nf, true}};
        // Rows in blocks of kRowBlock, every head of the item over a block before the next block (one head:
        // the whole set at once).
        const int64_t row_block = nh > 1 ? kRowBlock : std::numeric_limits<int>::max();
        for (const Segment& sg : segments)
          for (int64_t j0 = 0; j0 < sg.n; j0 += row_block) {
            const int n = static_cast<int>(std::min(row_block, sg.n - j0));
            for (int h = item.h0; h < item.h1; ++h)
              block_product(true, nb, n, d.Dh, scale, sg.raw ? qr_of(h) : q_of(h), sg.raw ? ldr : ldq,
                            sg.rows.plus(j0 * k.ld + (h / group) * d.Dh), ld, 0.0f, S_of(h) + sg.col + j0,
                            ldS);
          }
        for (int h = item.h0; h < item.h1; ++h) {
          const int g = h / group;
          const int64_t nr = k.retrieved != nullptr ? k.retrieved_count[g] : 0;
          if (nr > 0)
            block_product(true, nb, static_cast<int>(nr), d.Dh, scale, qr_of(h), ldr, {k.retrieved[g]},
                          2 * d.Dh, 0.0f, S_of(h) + nw + nf + ne, ldS);
          // Mask what each query may not read, then softmax its row (masked weights are exactly 0).
          for (int i = 0; i < nb; ++i) {
            const int64_t t = a + i;
            const StepSpans sp = step_spans(k, t, W);
            float* row = S_of(h) + static_cast<int64_t>(i) * cols;
            const float ninf = -std::numeric_limits<float>::infinity();
            // Window columns outside [sp.wlo, sp.whi] and fading ones outside [sp.flo, sp.fhi] (ranges, as
            // both sets are consecutive positions); memory and retrieved entries one by one; columns past
            // this head's retrieved entries.
            const int64_t w0 = std::clamp<int64_t>(sp.wlo - wlo, 0, nw),
                          w1 = std::clamp<int64_t>(sp.whi - wlo + 1, w0, nw);
            std::fill(row, row + w0, ninf);
            std::fill(row + w1, row + nw, ninf);
            if (nf > 0) {
              const int64_t f0 = std::clamp<int64_t>(sp.flo - flo, 0, nf),
                            f1 = std::clamp<int64_t>(sp.fhi - flo + 1, f0, nf);
              std::fill(row + nw, row + nw + f0, ninf);
              std::fill(row + nw + f1, row + nw + nf, ninf);
            }
            for (int64_t e = 0; e < ne; ++e)
              if (k.memory_positions[e] > t - W) row[nw + nf + e] = ninf;
            for (int64_t e = 0; e < nr; ++e)
              if (k.retrieved_positions[g][e] > t - W) row[nw + nf + ne + e] = ninf;
            std::fill(row + nw + nf + ne + nr, row + cols, ninf);
            // The window holds t itself, so some column is visible and the sum is at least 1.
            const int n_cols = static_cast<int>(cols);
            const float mx = max_of(row, n_cols);
            const float inv = 1.0f / exp_shifted(row, n_cols, mx);
#pragma omp simd
            for (int c = 0; c < n_cols; ++c) row[c] *= inv;
          }
        }
        // out = P V over the same segments and blocks (the first product of each head sets out).
        for (const Segment& sg : segments)
          for (int64_t j0 = 0; j0 < sg.n; j0 += row_block) {
            const int n = static_cast<int>(std::min(row_block, sg.n - j0));
            for (int h = item.h0; h < item.h1; ++h)
              block_product(false, nb, d.Dh, n, 1.0f, S_of(h) + sg.col + j0, ldS,
                            sg.rows.plus(j0 * k.ld + kvd + (h / group) * d.Dh), ld,
                            sg.col + j0 == 0 ? 0.0f : 1.0f, out_of(h), ldo);
          }
        for (int h = item.h0; h < item.h1; ++h) {
          const int g = h / group;
          const int64_t nr = k.retrieved != nullptr ? k.retrieved_count[g] : 0;
          if (nr > 0)
            block_product(false, nb, d.Dh, static_cast<int>(nr), 1.0f, S_of(h) + nw + nf + ne, ldS,
                          {k.retrieved[g] + d.Dh}, 2 * d.Dh, 1.0f, out_of(h), ldo);
        }
      });
  }
  errors.rethrow();
}

}  // namespace bmojo
