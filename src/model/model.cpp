#include "model/model.hpp"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/parallel.hpp"
#include "core/profile.hpp"
#include "core/rng.hpp"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/swiglu.hpp"
#include "model/memory_estimate.hpp"

namespace bmojo {

namespace {

std::string layer_prefix(size_t i) {
  return "layers." + std::to_string(i) + ".";
}

}  // namespace

Model::Model(const ModelConfig& config) : config_(config), rope_(config.head_dim(), config.rope_base) {
  config_.validate();
  layout_ = model_layout(config_);
  check_fits_in_memory(
      2.0 * sizeof(float) * static_cast<double>(layout_.slab_size()),
      "the model's weights and gradients (" + std::to_string(layout_.num_params()) + " parameters)");
  params_.resize(layout_.slab_size());
  grads_.resize(layout_.slab_size());
  auto bind = [&](float* base, ModelWeights& m) {
    auto at = [&](const std::string& name) { return base + layout_.find(name).offset; };
    m.embedding = at("embedding");
    m.lm_head = config_.tie_embeddings ? m.embedding : at("lm_head");
    m.norm_f = at("norm_f");
    m.layers.assign(config_.layers.size(), LayerWeights{});
    for (size_t i = 0; i < config_.layers.size(); ++i) {
      LayerWeights& l = m.layers[i];
      const std::string p = layer_prefix(i);
      l.kind = config_.layers[i];
      l.norm1 = at(p + "norm1");
      const LayerParts parts = layer_parts(l.kind, config_);
      if (parts.attention) {
        l.attn.wqkv = at(p + "attn.wqkv");
        l.attn.wo = at(p + "attn.wo");
      }
      if (parts.fading_projection) l.bmojo.wkvf = at(p + "attn.wkvf");
      if (parts.innovation) l.bmojo.innovation = at(p + "innovation.P");
      if (parts.ssm) {
        l.mamba.in_proj = at(p + "mamba.in_proj");
        l.mamba.conv_weight = at(p + "mamba.conv_weight");
        l.mamba.conv_bias = at(p + "mamba.conv_bias");
        l.mamba.x_proj = at(p + "mamba.x_proj");
        l.mamba.dt_proj = at(p + "mamba.dt_proj");
        l.mamba.dt_bias = at(p + "mamba.dt_bias");
        l.mamba.A_log = at(p + "mamba.A_log");
        l.mamba.D = at(p + "mamba.D");
        l.mamba.out_proj = at(p + "mamba.out_proj");
      }
      if (parts.mlp) {
        l.norm2 = at(p + "norm2");
        l.mlp.w_in = at(p + "mlp.w_in");
        l.mlp.w_out = at(p + "mlp.w_out");
      }
    }
  };
  bind(params_.data(), w_);
  bind(grads_.data(), g_);
}

ParameterLayout model_layout(const ModelConfig& c) {
  ParameterLayout layout_;
  const int64_t V = c.vocab_size, D = c.d_model, Dh = c.head_dim(), H = c.n_heads, Hk = c.kv_heads();
  const int64_t C = c.d_inner(), R = c.resolved_dt_rank(), Ns = c.d_state;
  layout_.add("embedding", {V, D}, true);
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const std::string p = layer_prefix(i);
    layout_.add(p + "norm1", {D}, false);
    const LayerParts parts = layer_parts(c.layers[i], c);
    if (parts.attention) {
      layout_.add(p + "attn.wqkv", {D, (H + 2 * Hk) * Dh}, true);
      layout_.add(p + "attn.wo", {H * Dh, D}, true);
    }
    if (parts.fading_projection) layout_.add(p + "attn.wkvf", {D, 2 * Hk * Dh}, true);
    if (parts.innovation) layout_.add(p + "innovation.P", {D, D}, true);
    if (parts.ssm) {
      layout_.add(p + "mamba.in_proj", {D, 2 * C}, true);
      layout_.add(p + "mamba.conv_weight", {C, c.d_conv}, true);
      layout_.add(p + "mamba.conv_bias", {C}, false);
      layout_.add(p + "mamba.x_proj", {C, R + 2 * Ns}, true);
      layout_.add(p + "mamba.dt_proj", {R, C}, true);
      layout_.add(p + "mamba.dt_bias", {C}, false);
      layout_.add(p + "mamba.A_log", {C, Ns}, false);
      layout_.add(p + "mamba.D", {C}, false);
      layout_.add(p + "mamba.out_proj", {C, D}, true);
    }
    if (parts.mlp) {
      layout_.add(p + "norm2", {D}, false);
      layout_.add(p + "mlp.w_in", {D, 2 * static_cast<int64_t>(c.d_ff)}, true);
      layout_.add(p + "mlp.w_out", {c.d_ff, D}, true);
    }
  }
  layout_.add("norm_f", {D}, false);
  if (!c.tie_embeddings) layout_.add("lm_head", {V, D}, true);
  return layout_;
}

uint64_t Model::fingerprint() const {
  if (fingerprint_valid_) return fingerprint_;
  Config c;
  c.model = config_;
  const std::string model_json = config_to_json(c).at("model").dump();
  uint64_t h = fnv1a64(model_json.data(), model_json.size());
  for (const TensorSpec& t : layout_.tensors())
    h = fast_hash64(params_.data() + t.offset, sizeof(float) * t.numel, h);
  fingerprint_ = h;
  fingerprint_valid_ = true;
  return h;
}

void Model::weights_changed() {
  fingerprint_valid_ = false;
  const std::lock_guard<std::mutex> lock(packed_->mutex);
  packed_->weights.reset();
}

std::shared_ptr<const PackedWeights> Model::packed_weights() const {
  const std::lock_guard<std::mutex> lock(packed_->mutex);
  if (!packed_->enabled) return nullptr;
  if (packed_->weights) return packed_->weights;
  // Every matrix a decode step multiplies by: the layers' projections in their stored (in, out) layout, and
  // the LM head (V, D), which the head multiplies by transposed.
  const profile::Scope scope("pack_weights");
  auto packed = std::make_shared<PackedWeights>();
  const std::string head = config_.tie_embeddings ? "embedding" : "lm_head";
  for (const TensorSpec& t : layout_.tensors()) {
    if (t.shape.size() != 2 || t.name.ends_with("conv_weight") || t.name.ends_with("A_log")) continue;
    const float* B = params_.data() + t.offset;
    const int rows = static_cast<int>(t.shape[0]), cols = static_cast<int>(t.shape[1]);
    if (t.name == head)
      packed->add(B, true, rows, cols, cols);
    else if (t.name != "embedding")
      packed->add(B, false, cols, rows, cols);
  }
  // A tied fading projection multiplies by the [Wk | Wv] columns of W_qkv in place.
  const int qd = config_.n_heads * config_.head_dim(), kvd = config_.kv_heads() * config_.head_dim();
  for (size_t l = 0; l < w_.layers.size(); ++l)
    if (layer_parts(w_.layers[l].kind, config_).fading && config_.tie_fading)
      packed->add(w_.layers[l].attn.wqkv + qd, false, 2 * kvd, config_.d_model, qd + 2 * kvd);
  packed_->weights = std::move(packed);
  return packed_->weights;
}

void Model::set_packed_decode(bool on) {
  const std::lock_guard<std::mutex> lock(packed_->mutex);
  packed_->enabled = on;
  if (!on) packed_->weights.reset();
}

void Model::init_weights(uint64_t seed) {
  Rng rng(seed);
  params_.zero();
  weights_changed();
  const double out_scale = 1.0 / std::sqrt(2.0 * config_.layers.size());
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const TensorSpec& t : layout_.tensors()) {
    float* p = params_.data() + t.offset;
    const std::string& n = t.name;
    if (ends_with(n, "innovation.P")) {
      continue;  // P = 0: the first predictions are xhat = 0
    } else if (ends_with(n, "norm1") || ends_with(n, "norm2") || n == "norm_f" || ends_with(n, "mamba.D")) {
      for (size_t i = 0; i < t.numel; ++i) p[i] = 1.0f;
    } else if (ends_with(n, "mamba.A_log")) {
      const int64_t Ns = t.shape[1];
      for (size_t i = 0; i < t.numel; ++i)
        p[i] = static_cast<float>(std::log(static_cast<double>(i % Ns + 1)));
    } else if (ends_with(n, "mamba.dt_bias")) {
      // dt0 log-uniform in [1e-3, 1e-1], floored at 1e-4; bias = softplus^-1(dt0) = dt0 + log(1 - exp(-dt0)).
      for (size_t i = 0; i < t.numel; ++i) {
        double dt0 = std::exp(std::log(1e-3) + rng.uniform() * (std::log(1e-1) - std::log(1e-3)));
        dt0 = std::max(dt0, 1e-4);
        p[i] = static_cast<float>(dt0 + std::log(-std::expm1(-dt0)));
      }
    } else if (ends_with(n, "mamba.dt_proj")) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(t.shape[0]));
      for (size_t i = 0; i < t.numel; ++i) p[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
    } else if (ends_with(n, "mamba.conv_weight") || ends_with(n, "mamba.conv_bias")) {
      // Mamba keeps PyTorch's Conv1d default: uniform in +-1/sqrt(fan_in), fan_in = d_conv.
      const double bound = 1.0 / std::sqrt(static_cast<double>(config_.d_conv));
      for (size_t i = 0; i < t.numel; ++i) p[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
    } else {
      const bool output_proj =
          ends_with(n, "attn.wo") || ends_with(n, "mamba.out_proj") || ends_with(n, "mlp.w_out");
      const double std = 0.02 * (output_proj ? out_scale : 1.0);
      for (size_t i = 0; i < t.numel; ++i) p[i] = static_cast<float>(rng.normal() * std);
    }
  }
}

void Model::forward_trunk(const int32_t* tokens, int B, int T) {
  if (B <= 0 || T <= 0)
    fail("forward: batch and length must be positive, got B=" + std::to_string(B) +
         " T=" + std::to_string(T));
  const int D = config_.d_model, V = config_.vocab_size;
  const int64_t N = static_cast<int64_t>(B) * T;
  for (int64_t i = 0; i < N; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)  // not check(): its message would be built for every token
      fail("token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
           " is outside the vocabulary [0, " + std::to_string(V) + ")");
  const bool keep_selection = frozen_selection_ && B == B_ && T == T_;
  B_ = B;
  T_ = T;
  tokens_.assign(tokens, tokens + N);
  rope_.ensure(T);
  const size_t L = config_.layers.size();
  const bool mlp = config_.d_ff > 0;
  residual_.resize(1 + L * (mlp ? 2 : 1));
  for (auto& r : residual_) r.resize(N * D);
  acts_.resize(L);

  embedding_forward(residual_[0].data(), tokens, w_.embedding, N, D);
  innovation_loss_ = 0.0;
  size_t stream = 0;
  for (size_t l = 0; l < L; ++l) {
    LayerActivations& a = acts_[l];
    const LayerWeights& lw = w_.layers[l];
    a.xn1.resize(N * D);
    a.rstd1.resize(N);
    rmsnorm_forward(a.xn1.data(), a.rstd1.data(), residual_[stream].data(), lw.norm1, N, D, config_.norm_eps);
    std::memcpy(residual_[stream + 1].data(), residual_[stream].data(), sizeof(float) * N * D);
    ++stream;
    if (lw.kind == 'A') {
      attention_layer_forward(residual_[stream].data(), a.attn, a.xn1.data(), lw.attn, config_, rope_, B, T,
                              reference_);
    } else if (lw.kind == 'M') {
      mamba_layer_forward(residual_[stream].data(), a.mamba, a.xn1.data(), lw.mamba, config_, B, T,
                          reference_);
    } else {
      bmojo_layer_forward(residual_[stream].data(), a.bmojo, a.xn1.data(), lw, config_, rope_, B, T,
                          reference_, keep_selection);
      if (lw.kind == 'B') innovation_loss_ += config_.lambda_innov * a.bmojo.innovation_mean;
    }
    if (mlp) {
      const int F = config_.d_ff;
      a.xn2.resize(N * D);
      a.rstd2.resize(N);
      a.mlp_gate_up.resize(N * 2 * F);
      a.mlp_act.resize(N * F);
      rmsnorm_forward(a.xn2.data(), a.rstd2.data(), residual_[stream].data(), lw.norm2, N, D,
                      config_.norm_eps);
      std::memcpy(residual_[stream + 1].data(), residual_[stream].data(), sizeof(float) * N * D);
      ++stream;
      linear_forward(a.mlp_gate_up.data(), 2 * F, a.xn2.data(), D, lw.mlp.w_in, 2 * F, N, D, 2 * F);
      swiglu_forward(a.mlp_act.data(), a.mlp_gate_up.data(), N, F);
      linear_forward(residual_[stream].data(), D, a.mlp_act.data(), F, lw.mlp.w_out, D, N, F, D, 1.0f);
    }
  }
  final_norm_.resize(N * D);
  final_rstd_.resize(N);
  rmsnorm_forward(final_norm_.data(), final_rstd_.data(), residual_.back().data(), w_.norm_f, N, D,
                  config_.norm_eps);
}

LossResult Model::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  const profile::Scope scope("model_forward");  // own copies and zeroing between the kernels
  const int D = config_.d_model, V = config_.vocab_size;
  const int64_t N = static_cast<int64_t>(B) * T;
  forward_trunk(tokens, B, T);
  // Only labelled positions reach the LM head: MQAR labels a few positions per sequence.
  labelled_rows_.clear();
  labelled_targets_.clear();
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] == kIgnoreLabel) continue;
    if (targets[i] < 0 || targets[i] >= V)
      fail("label " + std::to_string(targets[i]) + " at position " + std::to_string(i) +
           " is outside the vocabulary [0, " + std::to_string(V) + ") and is not the ignore label -100");
    labelled_rows_.push_back(i);
    labelled_targets_.push_back(targets[i]);
  }
  const int64_t n = static_cast<int64_t>(labelled_rows_.size());
  LossResult r;
  r.labelled = n;
  r.innovation_loss = innovation_loss_;
  if (n == 0) return r;
  head_in_.resize(n * D);
  head_logits_.resize(n * V);
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(n) * D))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(head_in_.data() + i * D, final_norm_.data() + labelled_rows_[i] * D, sizeof(float) * D);
  matmul(false, true, static_cast<int>(n), V, D, 1.0f, head_in_.data(), D, w_.lm_head, D, 0.0f,
         head_logits_.data(), V);
  const CrossEntropyResult ce = cross_entropy_forward_backward(head_logits_.data(), labelled_targets_.data(),
                                                               n, V, 1.0f / static_cast<float>(n), true);
  r.loss = ce.loss_sum / n;
  r.correct = ce.correct;
  return r;
}

void Model::backward() {
  const profile::Scope scope("model_backward");  // own copies and zeroing between the kernels
  check(B_ > 0, "backward() called before forward()");
  const int D = config_.d_model, V = config_.vocab_size;
  const int64_t N = static_cast<int64_t>(B_) * T_;
  const int64_t n = static_cast<int64_t>(labelled_rows_.size());
  dfinal_.assign(N * D, 0.0f);
  dresidual_.assign(N * D, 0.0f);
  dxn_.resize(N * D);
  if (n > 0) {
    // head_logits_ holds dloss/dlogits since forward().
    dhead_in_.resize(n * D);
    matmul(false, false, static_cast<int>(n), D, V, 1.0f, head_logits_.data(), V, w_.lm_head, D, 0.0f,
           dhead_in_.data(), D);
    matmul(true, false, V, D, static_cast<int>(n), 1.0f, head_logits_.data(), V, head_in_.data(), D, 1.0f,
           g_.lm_head, D);
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(n) * D))
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(dfinal_.data() + labelled_rows_[i] * D, dhead_in_.data() + i * D, sizeof(float) * D);
  }
  rmsnorm_backward(dresidual_.data(), g_.norm_f, dfinal_.data(), residual_.back().data(), w_.norm_f,
                   final_rstd_.data(), N, D);
  const bool mlp = config_.d_ff > 0;
  size_t stream = residual_.size() - 1;
  for (size_t l = config_.layers.size(); l-- > 0;) {
    LayerActivations& a = acts_[l];
    const LayerWeights& lw = w_.layers[l];
    const LayerWeights& lg = g_.layers[l];
    if (mlp) {
      const int F = config_.d_ff;
      --stream;
      mlp_dact_.resize(N * F);
      mlp_dgate_up_.resize(N * 2 * F);
      linear_backward(mlp_dact_.data(), F, lg.mlp.w_out, D, dresidual_.data(), D, a.mlp_act.data(), F,
                      lw.mlp.w_out, N, F, D, false);
      swiglu_backward(mlp_dgate_up_.data(), mlp_dact_.data(), a.mlp_gate_up.data(), N, F);
      linear_backward(dxn_.data(), D, lg.mlp.w_in, 2 * F, mlp_dgate_up_.data(), 2 * F, a.xn2.data(), D,
                      lw.mlp.w_in, N, D, 2 * F, false);
      rmsnorm_backward(dresidual_.data(), lg.norm2, dxn_.data(), residual_[stream].data(), lw.norm2,
                       a.rstd2.data(), N, D);
    }
    --stream;
    if (lw.kind == 'A')
      attention_layer_backward(dxn_.data(), lg.attn, attn_scratch_, dresidual_.data(), a.attn, a.xn1.data(),
                               lw.attn, config_, rope_, B_, T_, reference_);
    else if (lw.kind == 'M')
      mamba_layer_backward(dxn_.data(), lg.mamba, mamba_scratch_, dresidual_.data(), a.mamba, a.xn1.data(),
                           lw.mamba, config_, B_, T_, reference_);
    else
      bmojo_layer_backward(dxn_.data(), lg, bmojo_scratch_, dresidual_.data(), a.bmojo, a.xn1.data(), lw,
                           config_, rope_, B_, T_, reference_);
    rmsnorm_backward(dresidual_.data(), lg.norm1, dxn_.data(), residual_[stream].data(), lw.norm1,
                     a.rstd1.data(), N, D);
  }
  embedding_backward(g_.embedding, dresidual_.data(), tokens_.data(), N, D);
}

void Model::logits(const int32_t* tokens, int B, int T, float* out) {
  forward_trunk(tokens, B, T);
  const int D = config_.d_model, V = config_.vocab_size;
  matmul(false, true, B * T, V, D, 1.0f, final_norm_.data(), D, w_.lm_head, D, 0.0f, out, V);
}

}  // namespace bmojo
