// The model (SPEC section 1): embedding, pre-norm layers (mixer, then optional SwiGLU MLP), final RMSNorm,
// LM head. forward() keeps the activations that backward() needs; backward() walks the layers in reverse.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/parameters.hpp"
#include "kernels/packed_matmul.hpp"
#include "kernels/rope.hpp"
#include "model/attention_layer.hpp"
#include "model/bmojo_layer.hpp"
#include "model/config.hpp"
#include "model/mamba_layer.hpp"
#include "model/weights.hpp"

namespace bmojo {

struct LossResult {
  double loss = 0.0;             // mean cross-entropy over labelled positions (0 when none)
  double innovation_loss = 0.0;  // sum over B layers of lambda_innov * mean_t s_t (part of the objective)
  int64_t labelled = 0;          // positions with a label
  int64_t correct = 0;           // labelled positions whose argmax is the label
  double accuracy() const { return labelled ? static_cast<double>(correct) / labelled : 0.0; }
  double objective() const { return loss + innovation_loss; }
};

constexpr int32_t kIgnoreLabel = -100;

// The parameter tensors of a model of this config, without allocating them (`bmojo info` counts with it).
ParameterLayout model_layout(const ModelConfig& config);

class Model {
 public:
  explicit Model(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const ParameterLayout& layout() const { return layout_; }
  size_t num_params() const { return layout_.num_params(); }
  // Non-const access to the weights drops the cached fingerprint (they may be about to change).
  float* params() {
    weights_changed();
    return params_.data();
  }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const ModelWeights& weights() const { return w_; }
  // A 64-bit hash of the config's model section and every parameter (each tensor's values, found by the
  // layout): what a saved inference state or a long-term memory store records, so it is never used with
  // another model. Computed once and kept until the weights are next reached through params().
  uint64_t fingerprint() const;
  // The weight matrices packed for decode steps over a few sequences (kernels/packed_matmul.hpp), or null
  // when packed decode is off: built on first use (about the weights' size again), dropped when the weights
  // are next reached through params(). Safe to call from several threads.
  std::shared_ptr<const PackedWeights> packed_weights() const;
  // On by default; off keeps inference within the memory of the weights themselves.
  void set_packed_decode(bool on);
  float* param(const std::string& name) { return params() + layout_.find(name).offset; }
  float* grad(const std::string& name) { return grads_.data() + layout_.find(name).offset; }

  // SPEC section 7 initialisation, deterministic in seed.
  void init_weights(uint64_t seed);
  // Use the plain reference kernels (attention, scan) instead of the fast ones: for tests.
  void set_reference_kernels(bool on) { reference_ = on; }
  // Reuse the eidetic selection of the last forward (same B and T) instead of selecting again: for tests
  // that take finite differences through the chosen entries' keys and values.
  void set_frozen_selection(bool on) { frozen_selection_ = on; }

  // tokens, targets (B, T); targets equal to kIgnoreLabel are not scored. Keeps activations for backward().
  LossResult forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Accumulates into grads() the gradient of the loss of the last forward().
  void backward();
  void zero_grads() { grads_.zero(); }
  // The eidetic memory plan that layer l's last forward used (B layers; empty otherwise): for tests.
  const EideticPlan& eidetic_plan(size_t l) const { return acts_.at(l).bmojo.plan; }
  // logits (B, T, V) for every position.
  void logits(const int32_t* tokens, int B, int T, float* out);

 private:
  void forward_trunk(const int32_t* tokens, int B, int T);
  void weights_changed();

  ModelConfig config_;
  ParameterLayout layout_;
  Slab params_, grads_;
  ModelWeights w_, g_;
  RopeTable rope_;
  mutable uint64_t fingerprint_ = 0;
  mutable bool fingerprint_valid_ = false;
  struct PackedCache {
    std::mutex mutex;
    bool enabled = true;
    std::shared_ptr<const PackedWeights> weights;
  };
  std::unique_ptr<PackedCache> packed_ = std::make_unique<PackedCache>();
  bool reference_ = false;
  bool frozen_selection_ = false;

  // Activations of the last forward.
  int B_ = 0, T_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<std::vector<float>> residual_;  // streams: [0] embeddings, then after each mixer and MLP
  struct LayerActivations {
    std::vector<float> xn1, rstd1, xn2, rstd2;
    AttentionActivations attn;
    MambaActivations mamba;
    BmojoActivations bmojo;
    std::vector<float> mlp_gate_up, mlp_act;
  };
  std::vector<LayerActivations> acts_;
  std::vector<float> final_norm_, final_rstd_;
  std::vector<int64_t> labelled_rows_;
  std::vector<int32_t> labelled_targets_;
  std::vector<float> head_in_,
      head_logits_;  // gathered labelled rows and their logits (gradients after forward)

  // Backward scratch.
  std::vector<float> dresidual_, dxn_, dfinal_, dhead_in_, mlp_dact_, mlp_dgate_up_;
  AttentionScratch attn_scratch_;
  MambaScratch mamba_scratch_;
  BmojoScratch bmojo_scratch_;
  double innovation_loss_ = 0.0;
};

}  // namespace bmojo
