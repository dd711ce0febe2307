// Named views into a parameter (or gradient) slab, one struct per layer kind. The same struct binds the
// parameters and their gradients, since both slabs share one layout.
#pragma once
#include <vector>

namespace bmojo {

struct AttentionWeights {
  float* wqkv = nullptr;  // (D, (H + 2 Hk) Dh): [Wq | Wk | Wv]
  float* wo = nullptr;    // (H Dh, D)
};

struct MambaWeights {
  float* in_proj = nullptr;      // (D, 2 d_inner): [x | z]
  float* conv_weight = nullptr;  // (d_inner, d_conv)
  float* conv_bias = nullptr;    // (d_inner)
  float* x_proj = nullptr;       // (d_inner, R + 2N): [dt | B | C]
  float* dt_proj = nullptr;      // (R, d_inner)
  float* dt_bias = nullptr;      // (d_inner)
  float* A_log = nullptr;        // (d_inner, N)
  float* D = nullptr;            // (d_inner) skip
  float* out_proj = nullptr;     // (d_inner, D)
};

// The parts of F and B layers beyond their attention and SSM weights.
struct BmojoWeights {
  float* wkvf = nullptr;        // (D, 2 Hk Dh): [Wkf | Wvf], only when fading projections are untied
  float* innovation = nullptr;  // P (D, D): the innovation predictor, B layers only
};

struct MlpWeights {
  float* w_in = nullptr;   // (D, 2 d_ff): [gate W1 | up W3]
  float* w_out = nullptr;  // (d_ff, D): W2
};

struct LayerWeights {
  char kind = 'A';
  float* norm1 = nullptr;  // (D)
  AttentionWeights attn;
  MambaWeights mamba;
  BmojoWeights bmojo;
  float* norm2 = nullptr;  // (D), when d_ff > 0
  MlpWeights mlp;
};

struct ModelWeights {
  float* embedding = nullptr;  // (V, D)
  float* lm_head = nullptr;    // (V, D); equals embedding when tied
  float* norm_f = nullptr;     // (D)
  std::vector<LayerWeights> layers;
};

}  // namespace bmojo
