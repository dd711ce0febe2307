#include "model/mamba_layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "kernels/causal_conv.hpp"
#include "kernels/linear.hpp"
#include "kernels/ssm_scan.hpp"
#include "kernels/swiglu.hpp"
#include "model/layer_state.hpp"

namespace bmojo {

void MambaState::reset(const ModelConfig& cfg, int B) {
  conv.assign(static_cast<size_t>(B) * (cfg.d_conv - 1) * cfg.d_inner(), 0.0f);
  ssm.assign(static_cast<size_t>(B) * cfg.d_inner() * cfg.d_state, 0.0f);
}

namespace {

// Conv of the x half of xz (B, T, 2C) continuing from state->conv, which then holds the last K - 1 inputs.
void causal_conv_continue(float* out, const float* xz, const MambaWeights& w, MambaState& state, int B, int T,
                          int C, int K) {
  const int P = K - 1;
  std::vector<float> padded(static_cast<size_t>(B) * (P + T) * C), full(padded.size());
  for (int b = 0; b < B; ++b) {
    float* pb = padded.data() + static_cast<int64_t>(b) * (P + T) * C;
    std::copy_n(state.conv.data() + static_cast<int64_t>(b) * P * C, static_cast<size_t>(P) * C, pb);
    for (int t = 0; t < T; ++t)
      std::copy_n(xz + (static_cast<int64_t>(b) * T + t) * 2 * C, C, pb + static_cast<int64_t>(P + t) * C);
  }
  causal_conv_forward(full.data(), padded.data(), C, w.conv_weight, w.conv_bias, B, P + T, C, K);
  for (int b = 0; b < B; ++b) {
    const int64_t base = static_cast<int64_t>(b) * (P + T) * C;
    std::copy_n(full.data() + base + static_cast<int64_t>(P) * C, static_cast<size_t>(T) * C,
                out + static_cast<int64_t>(b) * T * C);
    std::copy_n(padded.data() + base + static_cast<int64_t>(T) * C, static_cast<size_t>(P) * C,
                state.conv.data() + static_cast<int64_t>(b) * P * C);
  }
}

void size_activations(MambaActivations& act, const ModelConfig& cfg, int64_t N) {
  const int C = cfg.d_inner(), bc = cfg.resolved_dt_rank() + 2 * cfg.d_state;
  act.xz.resize(N * 2 * C);
  act.conv.resize(N * C);
  act.x.resize(N * C);
  act.dbc.resize(N * bc);
  act.dt_raw.resize(N * C);
  act.dt.resize(N * C);
  act.A.resize(static_cast<size_t>(C) * cfg.d_state);
  act.y.resize(N * C);
  act.gated.resize(N * C);
}

// From the conv output: x = SiLU(conv), [dt | B | C] = x W_x, dt = softplus(dt W_dt + b), A = -exp(A_log).
void input_projections(MambaActivations& act, const MambaWeights& w, const ModelConfig& cfg, int64_t N) {
  const int C = cfg.d_inner(), R = cfg.resolved_dt_rank(), bc = R + 2 * cfg.d_state;
  // Rows in parallel, each row's channels as one simd loop (here and in the backward's two passes): GCC 12
  // made a flat `parallel for simd` over N C of this a loop of 6 ns an element (16 decode rows of MMMM: the
  // step's own time in `infer-bench --profile` 0.30 -> 0.17 ms).
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) act.x[i * C + c] = siluf(act.conv[i * C + c]);
  linear_forward(act.dbc.data(), bc, act.x.data(), C, w.x_proj, bc, N, C, bc);
  linear_forward(act.dt_raw.data(), C, act.dbc.data(), bc, w.dt_proj, C, N, R, C);
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      const float v = (act.dt_raw[i * C + c] += w.dt_bias[c]);
      act.dt[i * C + c] = softplusf(v);
    }
  const size_t n = act.A.size();
  MambaActivations::Decay* d = nullptr;
  for (MambaActivations::Decay& c : act.decays)
    if (c.A_log == w.A_log) d = &c;
  if (d == nullptr) d = &act.decays.emplace_back(MambaActivations::Decay{w.A_log, {}, {}});
  if (d->A_log_seen.size() != n || std::memcmp(d->A_log_seen.data(), w.A_log, n * sizeof(float)) != 0) {
    d->A_log_seen.assign(w.A_log, w.A_log + n);
    d->A.resize(n);
    for (size_t i = 0; i < n; ++i) d->A[i] = -std::exp(w.A_log[i]);
  }
  std::memcpy(act.A.data(), d->A.data(), n * sizeof(float));
}

// residual += (y * SiLU(z)) W_out.
void gate_and_project(float* residual, MambaActivations& act, const MambaWeights& w, const ModelConfig& cfg,
                      int64_t N) {
  const int D = cfg.d_model, C = cfg.d_inner();
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) act.gated[i * C + c] = act.y[i * C + c] * siluf(act.xz[i * 2 * C + C + c]);
  linear_forward(residual, D, act.gated.data(), C, w.out_proj, D, N, C, D, 1.0f);
}

}  // namespace

void mamba_layer_forward(float* residual, MambaActivations& act, const float* xn, const MambaWeights& w,
                         const ModelConfig& cfg, int B, int T, bool reference) {
  const profile::Scope scope("mamba_layer_forward");  // own copies, elementwise passes
  const int D = cfg.d_model, C = cfg.d_inner(), R = cfg.resolved_dt_rank(), Ns = cfg.d_state, K = cfg.d_conv;
  const int bc = R + 2 * Ns;
  const int64_t N = static_cast<int64_t>(B) * T;
  size_activations(act, cfg, N);
  linear_forward(act.xz.data(), 2 * C, xn, D, w.in_proj, 2 * C, N, D, 2 * C);
  causal_conv_forward(act.conv.data(), act.xz.data(), 2 * C, w.conv_weight, w.conv_bias, B, T, C, K);
  input_projections(act, w, cfg, N);

  ScanDims sd{B, T, C, Ns};
  const float* Bm = act.dbc.data() + R;
  const float* Cm = Bm + Ns;
  if (reference)
    selective_scan_forward_reference(act.y.data(), act.x.data(), act.dt.data(), act.A.data(), Bm, Cm, bc, w.D,
                                     sd);
  else
    selective_scan_forward(act.y.data(), act.x.data(), act.dt.data(), act.A.data(), Bm, Cm, bc, w.D, sd);
  gate_and_project(residual, act, w, cfg, N);
}

void mamba_layer_step(float* residual, MambaActivations& act, const float* xn, const MambaWeights& w,
                      const ModelConfig& cfg, const StepSequence* seqs, size_t count,
                      MambaState* const* states) {
  const profile::Scope scope("mamba_layer_step");
  const int D = cfg.d_model, C = cfg.d_inner(), R = cfg.resolved_dt_rank(), Ns = cfg.d_state, K = cfg.d_conv;
  const int bc = R + 2 * Ns;
  int64_t N = 0;
  for (size_t i = 0; i < count; ++i) N = std::max(N, seqs[i].row + seqs[i].n);
  size_activations(act, cfg, N);
  linear_forward(act.xz.data(), 2 * C, xn, D, w.in_proj, 2 * C, N, D, 2 * C);
  bool decode = true;
  for (size_t i = 0; i < count; ++i)
    decode = decode && seqs[i].n == 1 && seqs[i].row == static_cast<int64_t>(i);
  if (decode) {
    // One token for every sequence (row i is sequence i's): the conv and the scan each in one call over
    // all of them.
    act.conv_states.resize(count);
    act.ssm_states.resize(count);
    for (size_t i = 0; i < count; ++i) {
      act.conv_states[i] = states[i]->conv.data();
      act.ssm_states[i] = states[i]->ssm.data();
    }
    causal_conv_step(act.conv.data(), act.xz.data(), 2 * C, w.conv_weight, w.conv_bias,
                     act.conv_states.data(), N, C, K);
    input_projections(act, w, cfg, N);
    selective_scan_step(act.y.data(), act.x.data(), act.dt.data(), act.A.data(), act.dbc.data() + R,
                        act.dbc.data() + R + Ns, bc, w.D, C, Ns, act.ssm_states.data(), N);
    gate_and_project(residual, act, w, cfg, N);
    return;
  }
  // Sequences in parallel. The work counts 8 operations per state element and token (the decay's exp,
  // the update, the read-out): 16 decode rows of d_inner 512, d_state 16 took 85 us a layer on one thread.
  const auto per_sequence = [&](auto&& body) {
    const int64_t n_seq = static_cast<int64_t>(count);
#pragma omp parallel for schedule(dynamic) if (n_seq > 1 && parallel_worth(8.0 * N * C * Ns))
    for (int64_t i = 0; i < n_seq; ++i) body(seqs[i], *states[i]);
  };
  per_sequence([&](const StepSequence& s, MambaState& st) {
    causal_conv_continue(act.conv.data() + s.row * C, act.xz.data() + s.row * 2 * C, w, st, 1,
                         static_cast<int>(s.n), C, K);
  });
  input_projections(act, w, cfg, N);
  const float* Bm = act.dbc.data() + R;
  const float* Cm = Bm + Ns;
  per_sequence([&](const StepSequence& s, MambaState& st) {
    const ScanDims sd{1, static_cast<int>(s.n), C, Ns};
    selective_scan_forward(act.y.data() + s.row * C, act.x.data() + s.row * C, act.dt.data() + s.row * C,
                           act.A.data(), Bm + s.row * bc, Cm + s.row * bc, bc, w.D, sd, st.ssm.data(),
                           st.ssm.data());
  });
  gate_and_project(residual, act, w, cfg, N);
}

void mamba_layer_backward(float* dxn, const MambaWeights& dw, MambaScratch& s, const float* dresidual,
                          const MambaActivations& act, const float* xn, const MambaWeights& w,
                          const ModelConfig& cfg, int B, int T, bool reference, bool accumulate_dxn) {
  const profile::Scope scope("mamba_layer_backward");  // own copies, elementwise passes
  const int D = cfg.d_model, C = cfg.d_inner(), R = cfg.resolved_dt_rank(), Ns = cfg.d_state, K = cfg.d_conv;
  const int bc = R + 2 * Ns;
  const int64_t N = static_cast<int64_t>(B) * T;
  s.dgated.resize(N * C);
  s.dxz.resize(N * 2 * C);
  s.dx.resize(N * C);
  s.ddt.resize(N * C);
  s.ddbc.resize(N * bc);
  s.dA.assign(static_cast<size_t>(C) * Ns, 0.0f);

  linear_backward(s.dgated.data(), C, dw.out_proj, D, dresidual, D, act.gated.data(), C, w.out_proj, N, C, D,
                  false);
  // gated = y * silu(z): dy goes into dgated's buffer in place, dz into the z half of dxz.
  float* dy = s.dgated.data();
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      const float z = act.xz[i * 2 * C + C + c];
      const float g = dy[i * C + c];
      s.dxz[i * 2 * C + C + c] = g * act.y[i * C + c] * silu_grad(z);
      dy[i * C + c] = g * siluf(z);
    }

  ScanDims sd{B, T, C, Ns};
  const float* Bm = act.dbc.data() + R;
  const float* Cm = Bm + Ns;
  auto scan_back = reference ? selective_scan_backward_reference : selective_scan_backward;
  scan_back(s.dx.data(), s.ddt.data(), s.dA.data(), s.ddbc.data() + R, s.ddbc.data() + R + Ns, dw.D, dy,
            act.x.data(), act.dt.data(), act.A.data(), Bm, Cm, bc, w.D, sd);
  // A = -exp(A_log), so dA_log = dA * A.
  for (size_t i = 0; i < s.dA.size(); ++i) dw.A_log[i] += s.dA[i] * act.A[i];

    // dt = softplus(dt_raw): d/dv = sigmoid(v), or 1 past the linear threshold.
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      const float v = act.dt_raw[i * C + c];
      s.ddt[i * C + c] *= v > 20.0f ? 1.0f : sigmoidf(v);
    }
  reduce_rows(dw.dt_bias, C, N, [&](float* part, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int c = 0; c < C; ++c) part[c] += s.ddt[i * C + c];
  });
  linear_backward(s.ddbc.data(), bc, dw.dt_proj, C, s.ddt.data(), C, act.dbc.data(), bc, w.dt_proj, N, R, C,
                  false);
  linear_backward(s.dx.data(), C, dw.x_proj, bc, s.ddbc.data(), bc, act.x.data(), C, w.x_proj, N, C, bc,
                  true);
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * C))
  for (int64_t i = 0; i < N; ++i)
#pragma omp simd
    for (int c = 0; c < C; ++c) s.dx[i * C + c] *= silu_grad(act.conv[i * C + c]);
  causal_conv_backward(s.dxz.data(), 2 * C, dw.conv_weight, dw.conv_bias, s.dx.data(), act.xz.data(), 2 * C,
                       w.conv_weight, B, T, C, K);
  linear_backward(dxn, D, dw.in_proj, 2 * C, s.dxz.data(), 2 * C, xn, D, w.in_proj, N, D, 2 * C,
                  accumulate_dxn);
}

}  // namespace bmojo
