#include "kernels/ssm_scan.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/vector_math.hpp"

namespace bmojo {

namespace {

// Channels are scanned in blocks of 16 (the N = 16 paths add up one block's sums with WideVec::sum_lanes, one
// call per kLanes channels).
constexpr int kChannelBlock = 16;
#ifdef BMOJO_WIDE_VEC
using WV = WideVec;
constexpr int kL = WV::kLanes;
constexpr int kRowVecs = 16 / kL;  // vectors in a state row of N = 16 (1 zmm, 2 ymm)
static_assert(kChannelBlock % kL == 0 && 16 % kL == 0);
#endif
// The forward scan's tasks: (batch row, group of channels), each group walked through time a block at a
// time, so that every step reads a contiguous stretch of each row (512 bytes) rather than 64 bytes.
constexpr int kForwardGroup = 8 * kChannelBlock;
// The backward scan's tasks: a group of channels, every batch row. Its states are recomputed a chunk of
// steps at a time from the states entering each chunk (kept from a first sweep), so that its buffers stay
// in L2 whatever the sequence length. When one block's states for the whole sequence fit in 256 KB, one
// block and one chunk (no first sweep) is fastest: B 8, C 512, N 16, T 256: 8.5-11.6 ms against 11.3-12.5
// for groups of 64 channels in chunks of 32 steps; at T 1024 the latter: 56-57 against 71-75 ms
// (bmojo_kernel_bench scan_backward/fast, alternating runs).
struct BackwardTiling {
  int group, chunk;
};
BackwardTiling backward_tiling(const ScanDims& d) {
  constexpr size_t kStatesBudget = 256 * 1024;
  if (static_cast<size_t>(d.T) * kChannelBlock * d.N * sizeof(float) <= kStatesBudget)
    return {kChannelBlock, d.T};
  return {4 * kChannelBlock, 32};
}

inline int64_t idx(int b, int t, int T, int64_t width) {
  return (static_cast<int64_t>(b) * T + t) * width;
}

// The backward scan reads a group's few cache lines of each (b, t) row of x, dt and dy (and writes dx, ddt)
// at a stride of a whole row: a pattern the hardware prefetchers do not follow, so every step waited on
// memory. It asks for the lines kScanAhead steps ahead itself: B 64, T 128, C 128, N 16 (the MQAR grid's
// shape), one thread on a Zen 4, 41.5-46.7 -> 33.6-38.2 ms (bmojo_kernel_bench scan_backward/fast/128/64/128,
// alternating runs); 16 steps ahead was no better.
constexpr int kScanAhead = 8;
inline void prefetch_group(const float* row, int g0, int g1, bool write) {
  for (int c = g0; c < g1; c += 16) {
    if (write)
      __builtin_prefetch(row + c, 1, 3);
    else
      __builtin_prefetch(row + c, 0, 3);
  }
}

}  // namespace

void selective_scan_forward_reference(float* y, const float* x, const float* dt, const float* A,
                                      const float* Bm, const float* Cm, int64_t ldbc, const float* Dskip,
                                      const ScanDims& d) {
  std::vector<double> s(static_cast<size_t>(d.C) * d.N);
  for (int b = 0; b < d.B; ++b) {
    std::fill(s.begin(), s.end(), 0.0);
    for (int t = 0; t < d.T; ++t) {
      const float* xt = x + idx(b, t, d.T, d.C);
      const float* dtt = dt + idx(b, t, d.T, d.C);
      const float* Bt = Bm + idx(b, t, d.T, ldbc);
      const float* Ct = Cm + idx(b, t, d.T, ldbc);
      for (int c = 0; c < d.C; ++c) {
        double acc = 0.0;
        for (int n = 0; n < d.N; ++n) {
          double& st = s[static_cast<size_t>(c) * d.N + n];
          st = std::exp(static_cast<double>(dtt[c]) * A[c * d.N + n]) * st +
               static_cast<double>(dtt[c]) * Bt[n] * xt[c];
          acc += Ct[n] * st;
        }
        y[idx(b, t, d.T, d.C) + c] = static_cast<float>(acc + static_cast<double>(Dskip[c]) * xt[c]);
      }
    }
  }
}

void selective_scan_backward_reference(float* dx, float* ddt, float* dA, float* dBm, float* dCm,
                                       float* dDskip, const float* dy, const float* x, const float* dt,
                                       const float* A, const float* Bm, const float* Cm, int64_t ldbc,
                                       const float* Dskip, const ScanDims& d) {
  const size_t CN = static_cast<size_t>(d.C) * d.N;
  std::vector<double> states(static_cast<size_t>(d.T) * CN);
  std::vector<double> g(CN);
  std::vector<double> dA_acc(CN, 0.0);
  for (int b = 0; b < d.B; ++b) {
    // Forward, keeping every state.
    for (int t = 0; t < d.T; ++t)
      for (int c = 0; c < d.C; ++c)
        for (int n = 0; n < d.N; ++n) {
          const double prev = t ? states[(t - 1) * CN + c * d.N + n] : 0.0;
          const double dtc = dt[idx(b, t, d.T, d.C) + c];
          states[t * CN + c * d.N + n] = std::exp(dtc * A[c * d.N + n]) * prev +
                                         dtc * Bm[idx(b, t, d.T, ldbc) + n] * x[idx(b, t, d.T, d.C) + c];
        }
    std::fill(g.begin(), g.end(), 0.0);
    for (int t = d.T - 1; t >= 0; --t) {
      const float* dyt = dy + idx(b, t, d.T, d.C);
      const float* xt = x + idx(b, t, d.T, d.C);
      const float* dtt = dt + idx(b, t, d.T, d.C);
      const float* Bt = Bm + idx(b, t, d.T, ldbc);
      const float* Ct = Cm + idx(b, t, d.T, ldbc);
      std::vector<double> dB(d.N, 0.0), dC(d.N, 0.0);
      for (int c = 0; c < d.C; ++c) {
        double dxc = static_cast<double>(dyt[c]) * Dskip[c];
        double ddtc = 0.0;
        dDskip[c] += dyt[c] * xt[c];
        for (int n = 0; n < d.N; ++n) {
          const size_t k = static_cast<size_t>(c) * d.N + n;
          // g is the adjoint of s_t: what flows back from y_t plus from s_{t+1} (already folded in).
          g[k] += static_cast<double>(dyt[c]) * Ct[n];
          dC[n] += static_cast<double>(dyt[c]) * states[t * CN + k];
          const double prev = t ? states[(t - 1) * CN + k] : 0.0;
          const double a = std::exp(static_cast<double>(dtt[c]) * A[k]);
          dxc += g[k] * dtt[c] * Bt[n];
          dB[n] += g[k] * dtt[c] * xt[c];
          ddtc += g[k] * (prev * a * A[k] + static_cast<double>(Bt[n]) * xt[c]);
          dA_acc[k] += g[k] * prev * a * dtt[c];
          g[k] *= a;  // becomes the part of the adjoint of s_{t-1} that flows through s_t
        }
        dx[idx(b, t, d.T, d.C) + c] = static_cast<float>(dxc);
        ddt[idx(b, t, d.T, d.C) + c] = static_cast<float>(ddtc);
      }
      for (int n = 0; n < d.N; ++n) {
        dBm[idx(b, t, d.T, ldbc) + n] = static_cast<float>(dB[n]);
        dCm[idx(b, t, d.T, ldbc) + n] = static_cast<float>(dC[n]);
      }
    }
  }
  for (size_t k = 0; k < CN; ++k) dA[k] += static_cast<float>(dA_acc[k]);
}

namespace {

// next[n] = exp(dt a[n]) prev[n] + u b[n]: one channel's state update (any N).
template <int kN>
inline void state_update(float* __restrict next, const float* __restrict prev, const float* __restrict a,
                         const float* __restrict b, float dt, float u, int n_runtime) {
  const int N = kN > 0 ? kN : n_runtime;
#pragma omp simd
  for (int n = 0; n < N; ++n) next[n] = fast_exp(dt * a[n]) * prev[n] + u * b[n];
}

#ifdef BMOJO_WIDE_VEC
// The same for N = 16 in registers (kRowVecs vectors): the new state to s, the decays exp(dt a) to decay.
inline void state_update16(const float* prev, const float* a, const float* b, float dt, float u, WV::V* s,
                           WV::V* decay) {
  for (int v = 0; v < kRowVecs; ++v) {
    decay[v] = fast_exp_wide(WV::mul(WV::set1(dt), WV::load(a + v * kL)));
    s[v] = WV::fmadd(decay[v], WV::load(prev + v * kL), WV::mul(WV::set1(u), WV::load(b + v * kL)));
  }
}

// out[i] = the sum of the lanes of to[i], for one block of channels.
inline void sum_block(const WV::V* to, float* out) {
  for (int q = 0; q < kChannelBlock; q += kL) WV::store(out + q, WV::sum_lanes(to + q));
}
#endif

// One token through channels [c0, c1): state (rows of N, channel c0's first) advances in place and y, x, dt
// are the token's rows (indexed by channel). The recurrence of the header, for a forward scan and a step.
template <int kN>
inline void scan_token(float* y, const float* x, const float* dt, const float* A, const float* Bt,
                       const float* Ct, const float* Dskip, float* state, int c0, int c1, int N) {
  for (int cb = c0; cb < c1; cb += kChannelBlock) {
    const int ce = std::min(c1, cb + kChannelBlock);
    float* sb = state + static_cast<int64_t>(cb - c0) * N;
#ifdef BMOJO_WIDE_VEC
    if constexpr (kN == 16) {
      // Each channel's C . s is kept as a vector and the block's are summed at once.
      WV::V to_y[kChannelBlock], Cv[kRowVecs];
      for (int v = 0; v < kRowVecs; ++v) Cv[v] = WV::load(Ct + v * kL);
      for (int c = cb; c < ce; ++c) {
        float* sc = sb + (c - cb) * N;
        const float dtc = dt[c];
        WV::V s16[kRowVecs], decay[kRowVecs];
        state_update16(sc, A + static_cast<int64_t>(c) * N, Bt, dtc, dtc * x[c], s16, decay);
        WV::V acc = WV::mul(Cv[0], s16[0]);
        WV::store(sc, s16[0]);
        for (int v = 1; v < kRowVecs; ++v) {
          acc = WV::fmadd(Cv[v], s16[v], acc);
          WV::store(sc + v * kL, s16[v]);
        }
        to_y[c - cb] = acc;
      }
      for (int c = ce - cb; c < kChannelBlock; ++c) to_y[c] = WV::zero();
      float sum_y[kChannelBlock];
      sum_block(to_y, sum_y);
      for (int c = cb; c < ce; ++c) y[c] = sum_y[c - cb] + Dskip[c] * x[c];
      continue;
    }
#endif
    for (int c = cb; c < ce; ++c) {
      float* sc = sb + (c - cb) * N;
      const float* Ac = A + static_cast<int64_t>(c) * N;
      const float dtc = dt[c], u = dtc * x[c];
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int n = 0; n < N; ++n) {
        sc[n] = fast_exp(dtc * Ac[n]) * sc[n] + u * Bt[n];
        acc += Ct[n] * sc[n];
      }
      y[c] = acc + Dskip[c] * x[c];
    }
  }
}

// kN is the state size when known at compile time (the inner loop then becomes whole vector registers),
// 0 when it is only known at run time.
template <int kN>
void scan_forward_fast(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                       const float* Cm, int64_t ldbc, const float* Dskip, const ScanDims& d,
                       float* final_state, const float* initial_state) {
  const int N = kN > 0 ? kN : d.N;
  const int groups = (d.C + kForwardGroup - 1) / kForwardGroup;
  ParallelErrors errors;
#pragma omp parallel if (parallel_worth(static_cast <double>(d.B) * d.T * d.C * N))
  {
    thread_local std::vector<float> s;  // per-thread, kept between calls
    errors.guard([&] { s.resize(static_cast<size_t>(kForwardGroup) * N); });
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < d.B; ++b)
      for (int grp = 0; grp < groups; ++grp) {
        const int g0 = grp * kForwardGroup, g1 = std::min(d.C, g0 + kForwardGroup);
        if (s.size() < static_cast<size_t>(kForwardGroup) * N) continue;  // rethrown after the region
        // A state read and written in the same place (a recurrent step) is updated there: no copies in and
        // out, which were most of a decode token's scan.
        const bool in_place = initial_state != nullptr && initial_state == final_state;
        float* state = in_place ? final_state + (static_cast<int64_t>(b) * d.C + g0) * N : s.data();
        if (!in_place && initial_state != nullptr)
          std::copy_n(initial_state + (static_cast<int64_t>(b) * d.C + g0) * N, (g1 - g0) * N, s.data());
        else if (!in_place)
          std::fill(s.begin(), s.end(), 0.0f);
        for (int t = 0; t < d.T; ++t) {
          const int64_t r = idx(b, t, d.T, d.C);
          const float* Bt = Bm + idx(b, t, d.T, ldbc);
          const float* Ct = Cm + idx(b, t, d.T, ldbc);
          scan_token<kN>(y + r, x + r, dt + r, A, Bt, Ct, Dskip, state, g0, g1, N);
        }
        if (final_state != nullptr && !in_place)
          std::copy_n(s.data(), (g1 - g0) * N, final_state + (static_cast<int64_t>(b) * d.C + g0) * N);
      }
  }
  errors.rethrow();
}

template <int kN>
void scan_backward_fast(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dDskip,
                        const float* dy, const float* x, const float* dt, const float* A, const float* Bm,
                        const float* Cm, int64_t ldbc, const float* Dskip, const ScanDims& d) {
  const int N = kN > 0 ? kN : d.N;
  const BackwardTiling tiling = backward_tiling(d);
  const int groups = (d.C + tiling.group - 1) / tiling.group;
  const int chunks = (d.T + tiling.chunk - 1) / tiling.chunk;
  const int threads = omp_get_max_threads();
  const size_t bc_size = static_cast<size_t>(d.B) * d.T * N;
  // dB and dC sum over channels, which different threads own: each thread keeps its own partial sums,
  // added up in thread order afterwards.
  static thread_local std::vector<float> partial_bc;
  partial_bc.assign(static_cast<size_t>(threads) * 2 * bc_size, 0.0f);
  float* partial_base = partial_bc.data();
  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    float* my_dB = partial_base + static_cast<size_t>(omp_get_thread_num()) * 2 * bc_size;
    float* my_dC = my_dB + bc_size;
    // Per-thread buffers, kept between calls (no allocation in the training step): the states entering
    // each chunk of tiling.chunk steps, the states within one chunk, and the running state gradient.
    thread_local std::vector<float> boundaries, chunk_states, chunk_decays, g;
    // Groups of channels are split statically across threads; each thread does every batch row of its
    // groups, so dA and dDskip for a channel are summed by one thread in a fixed order.
#pragma omp for schedule(static)
    for (int grp = 0; grp < groups; ++grp) {
      const int g0 = grp * tiling.group, g1 = std::min(d.C, g0 + tiling.group);
      const size_t step = static_cast<size_t>(g1 - g0) * N;  // one snapshot of the group's states
      errors.guard([&] {
        boundaries.resize(static_cast<size_t>(chunks) * step);
        chunk_states.resize(static_cast<size_t>(tiling.chunk) * step);
        if (kN == 16) chunk_decays.resize(static_cast<size_t>(tiling.chunk) * step);
        g.resize(step);
      });
      if (g.size() < step) continue;  // an allocation failed: rethrown after the region
      for (int b = 0; b < d.B; ++b) {
        // chunk_states[i] = the state after step t0 + i of chunk k, from the state entering it.
        auto recompute_chunk = [&](int k) {
          const int t0 = k * tiling.chunk, t1 = std::min(d.T, t0 + tiling.chunk);
          const float* prev = boundaries.data() + static_cast<size_t>(k) * step;
          for (int t = t0; t < t1; ++t) {
            const int64_t r = idx(b, t, d.T, d.C);
            if (t + kScanAhead < d.T) {
              const int64_t ra = idx(b, t + kScanAhead, d.T, d.C);
              prefetch_group(dt + ra, g0, g1, false);
              prefetch_group(x + ra, g0, g1, false);
            }
            const float* Bt = Bm + idx(b, t, d.T, ldbc);
            float* st = chunk_states.data() + static_cast<size_t>(t - t0) * step;
            // (Only the N = 16 path keeps decays; elsewhere the buffer is empty and gets no offset.)
            [[maybe_unused]] float* decays =
                kN == 16 ? chunk_decays.data() + static_cast<size_t>(t - t0) * step : nullptr;
            for (int c = g0; c < g1; ++c) {
              const float dtc = dt[r + c], u = dtc * x[r + c];
#ifdef BMOJO_WIDE_VEC
              if constexpr (kN == 16) {
                // The decays exp(dt a) are kept for the backward sweep over this chunk.
                WV::V s16[kRowVecs], decay[kRowVecs];
                state_update16(prev + (c - g0) * N, A + static_cast<int64_t>(c) * N, Bt, dtc, u, s16, decay);
                for (int v = 0; v < kRowVecs; ++v) {
                  WV::store(st + (c - g0) * N + v * kL, s16[v]);
                  WV::store(decays + (c - g0) * N + v * kL, decay[v]);
                }
                continue;
              }
#endif
              state_update<kN>(st + (c - g0) * N, prev + (c - g0) * N, A + static_cast<int64_t>(c) * N, Bt,
                               dtc, u, N);
            }
            prev = st;
          }
          return t1 - t0;
        };
        std::fill_n(boundaries.data(), step, 0.0f);  // s_{-1}
        for (int k = 1; k < chunks; ++k) {
          const int len = recompute_chunk(k - 1);
          std::copy_n(chunk_states.data() + static_cast<size_t>(len - 1) * step, step,
                      boundaries.data() + static_cast<size_t>(k) * step);
        }
        std::fill(g.begin(), g.end(), 0.0f);
        for (int k = chunks - 1; k >= 0; --k) {
          const int t0 = k * tiling.chunk;
          const int len = recompute_chunk(k);
          for (int t = t0 + len - 1; t >= t0; --t) {
            const int64_t r = idx(b, t, d.T, d.C);
            if (t >= kScanAhead) {
              const int64_t ra = idx(b, t - kScanAhead, d.T, d.C);
              prefetch_group(dy + ra, g0, g1, false);
              prefetch_group(dx + ra, g0, g1, true);
              prefetch_group(ddt + ra, g0, g1, true);
            }
            const float* Bt = Bm + idx(b, t, d.T, ldbc);
            const float* Ct = Cm + idx(b, t, d.T, ldbc);
            float* dBt = my_dB + idx(b, t, d.T, N);
            float* dCt = my_dC + idx(b, t, d.T, N);
            const float* st_group = chunk_states.data() + static_cast<size_t>(t - t0) * step;
            const float* sp_group =
                t > t0 ? st_group - step : boundaries.data() + static_cast<size_t>(k) * step;
            for (int c0 = g0; c0 < g1; c0 += kChannelBlock) {
              const int c1 = std::min(g1, c0 + kChannelBlock);
              const float* st = st_group + static_cast<size_t>(c0 - g0) * N;
              const float* sp = sp_group + static_cast<size_t>(c0 - g0) * N;
              float* gblock = g.data() + static_cast<size_t>(c0 - g0) * N;
              [[maybe_unused]] const float* decays = kN == 16 ? chunk_decays.data() +
                                                                    static_cast<size_t>(t - t0) * step +
                                                                    static_cast<size_t>(c0 - g0) * N
                                                              : nullptr;
#ifdef BMOJO_WIDE_VEC
              if constexpr (kN == 16) {
                // The per-channel sums behind dx and ddt are kept as vectors and summed a block at a time.
                WV::V to_dx[kChannelBlock], to_ddt[kChannelBlock];
                // dB and dC of step t sum over the block's channels: two accumulators each (even and odd
                // channels), so that consecutive channels do not wait on one another. They are separate
                // variables, not an array indexed by the channel's parity, which would keep them in memory.
                WV::V dB0[kRowVecs], dC0[kRowVecs], dB1[kRowVecs], dC1[kRowVecs], Cv[kRowVecs], Bv[kRowVecs];
                for (int v = 0; v < kRowVecs; ++v) {
                  dB0[v] = WV::load(dBt + v * kL);
                  dC0[v] = WV::load(dCt + v * kL);
                  dB1[v] = dC1[v] = WV::zero();
                  Cv[v] = WV::load(Ct + v * kL);
                  Bv[v] = WV::load(Bt + v * kL);
                }
                auto channel = [&](int c, WV::V* dB_acc, WV::V* dC_acc) __attribute__((always_inline)) {
                  const float dyc = dy[r + c], xc = x[r + c], dtc = dt[r + c];
                  const float* Ac = A + static_cast<int64_t>(c) * N;
                  float* dAc = dA + static_cast<int64_t>(c) * N;
                  float* gc = gblock + (c - c0) * N;
                  const WV::V dtv = WV::set1(dtc), dyv = WV::set1(dyc), xv = WV::set1(xc),
                              dtxv = WV::set1(dtc * xc);
                  WV::V sum_gB = WV::zero(), sum_ddt = WV::zero();
                  for (int v = 0; v < kRowVecs; ++v) {
                    const int o = (c - c0) * N + v * kL;
                    const WV::V gv = WV::fmadd(dyv, Cv[v], WV::load(gc + v * kL));
                    dC_acc[v] = WV::fmadd(dyv, WV::load(st + o), dC_acc[v]);
                    const WV::V av = WV::load(decays + o);
                    const WV::V ga = WV::mul(WV::mul(gv, WV::load(sp + o)), av);
                    const WV::V gB = WV::mul(gv, Bv[v]);
                    sum_gB = WV::add(sum_gB, gB);
                    sum_ddt = WV::add(sum_ddt, WV::fmadd(ga, WV::load(Ac + v * kL), WV::mul(gB, xv)));
                    dB_acc[v] = WV::fmadd(gv, dtxv, dB_acc[v]);
                    WV::store(dAc + v * kL, WV::fmadd(ga, dtv, WV::load(dAc + v * kL)));
                    WV::store(gc + v * kL, WV::mul(gv, av));
                  }
                  to_dx[c - c0] = sum_gB;
                  to_ddt[c - c0] = sum_ddt;
                  dDskip[c] += dyc * xc;
                };
                int c = c0;
                for (; c + 1 < c1; c += 2) {
                  channel(c, dB0, dC0);
                  channel(c + 1, dB1, dC1);
                }
                if (c < c1) channel(c, dB0, dC0);
                for (int v = 0; v < kRowVecs; ++v) {
                  WV::store(dBt + v * kL, WV::add(dB0[v], dB1[v]));
                  WV::store(dCt + v * kL, WV::add(dC0[v], dC1[v]));
                }
                for (int c = c1 - c0; c < kChannelBlock; ++c) to_dx[c] = to_ddt[c] = WV::zero();
                float sum_dx[kChannelBlock], sum_ddt[kChannelBlock];
                sum_block(to_dx, sum_dx);
                sum_block(to_ddt, sum_ddt);
                for (int c = c0; c < c1; ++c) {
                  dx[r + c] = dy[r + c] * Dskip[c] + dt[r + c] * sum_dx[c - c0];
                  ddt[r + c] = sum_ddt[c - c0];
                }
                continue;
              }
#endif
              for (int c = c0; c < c1; ++c) {
                const float dyc = dy[r + c], xc = x[r + c], dtc = dt[r + c];
                const float* Ac = A + static_cast<int64_t>(c) * N;
                float* dAc = dA + static_cast<int64_t>(c) * N;
                float* gc = gblock + (c - c0) * N;
                const float* sc = st + (c - c0) * N;
                float dxc = dyc * Dskip[c], ddtc = 0.0f;
                dDskip[c] += dyc * xc;
#pragma omp simd reduction(+ : dxc, ddtc)
                for (int n = 0; n < N; ++n) {
                  gc[n] += dyc * Ct[n];
                  dCt[n] += dyc * sc[n];
                  const float a = fast_exp(dtc * Ac[n]);
                  const float prev = sp[(c - c0) * N + n];
                  const float ga = gc[n] * prev * a;
                  dxc += gc[n] * dtc * Bt[n];
                  dBt[n] += gc[n] * dtc * xc;
                  ddtc += ga * Ac[n] + gc[n] * Bt[n] * xc;
                  dAc[n] += ga * dtc;
                  gc[n] *= a;
                }
                dx[r + c] = dxc;
                ddt[r + c] = ddtc;
              }
            }
          }
        }
      }
    }
  }
  errors.rethrow();
  for (int b = 0; b < d.B; ++b)
    for (int t = 0; t < d.T; ++t) {
      float* dBt = dBm + idx(b, t, d.T, ldbc);
      float* dCt = dCm + idx(b, t, d.T, ldbc);
      for (int n = 0; n < N; ++n) dBt[n] = dCt[n] = 0.0f;
      for (int th = 0; th < threads; ++th) {
        const float* pB = partial_base + static_cast<size_t>(th) * 2 * bc_size + idx(b, t, d.T, N);
        const float* pC = pB + bc_size;
        for (int n = 0; n < N; ++n) {
          dBt[n] += pB[n];
          dCt[n] += pC[n];
        }
      }
    }
}

}  // namespace

void selective_scan_forward(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                            const float* Cm, int64_t ldbc, const float* Dskip, const ScanDims& d,
                            float* final_state, const float* initial_state) {
  const profile::Scope scope("selective_scan_forward");
  switch (d.N) {
    case 16:
      return scan_forward_fast<16>(y, x, dt, A, Bm, Cm, ldbc, Dskip, d, final_state, initial_state);
    case 8:
      return scan_forward_fast<8>(y, x, dt, A, Bm, Cm, ldbc, Dskip, d, final_state, initial_state);
    default:
      return scan_forward_fast<0>(y, x, dt, A, Bm, Cm, ldbc, Dskip, d, final_state, initial_state);
  }
}

namespace {

template <int kN>
void scan_step_fast(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                    const float* Cm, int64_t ldbc, const float* Dskip, int C, int N_runtime,
                    float* const* states, int64_t count) {
  const int N = kN > 0 ? kN : N_runtime;
  const int groups = (C + kForwardGroup - 1) / kForwardGroup;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(8.0 * count * C * N))
  for (int64_t i = 0; i < count; ++i)
    for (int grp = 0; grp < groups; ++grp) {
      const int g0 = grp * kForwardGroup, g1 = std::min(C, g0 + kForwardGroup);
      const int64_t r = i * C;
      scan_token<kN>(y + r, x + r, dt + r, A, Bm + i * ldbc, Cm + i * ldbc, Dskip,
                     states[i] + static_cast<int64_t>(g0) * N, g0, g1, N);
    }
}

}  // namespace

void selective_scan_step(float* y, const float* x, const float* dt, const float* A, const float* Bm,
                         const float* Cm, int64_t ldbc, const float* Dskip, int C, int N,
                         float* const* states, int64_t count) {
  const profile::Scope scope("selective_scan_step");
  switch (N) {
    case 16:
      return scan_step_fast<16>(y, x, dt, A, Bm, Cm, ldbc, Dskip, C, N, states, count);
    case 8:
      return scan_step_fast<8>(y, x, dt, A, Bm, Cm, ldbc, Dskip, C, N, states, count);
    default:
      return scan_step_fast<0>(y, x, dt, A, Bm, Cm, ldbc, Dskip, C, N, states, count);
  }
}

void selective_scan_backward(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dDskip,
                             const float* dy, const float* x, const float* dt, const float* A,
                             const float* Bm, const float* Cm, int64_t ldbc, const float* Dskip,
                             const ScanDims& d) {
  const profile::Scope scope("selective_scan_backward");
  switch (d.N) {
    case 16:
      return scan_backward_fast<16>(dx, ddt, dA, dBm, dCm, dDskip, dy, x, dt, A, Bm, Cm, ldbc, Dskip, d);
    case 8:
      return scan_backward_fast<8>(dx, ddt, dA, dBm, dCm, dDskip, dy, x, dt, A, Bm, Cm, ldbc, Dskip, d);
    default:
      return scan_backward_fast<0>(dx, ddt, dA, dBm, dCm, dDskip, dy, x, dt, A, Bm, Cm, ldbc, Dskip, d);
  }
}

}  // namespace bmojo
