// `bmojo parity-dump`: what the independent PyTorch reference (reference/) compares against. For a
// checkpoint and one batch of token ids it writes, as a safetensors file, the logits, the loss, the
// innovation loss and every parameter's gradient; then it takes N AdamW steps on the same batch (constant
// learning rate train.lr, clipping train.grad_clip) and records the objective before each step.
#pragma once
#include <string>

namespace bmojo {

struct ParityDumpOptions {
  std::string checkpoint, tokens, targets, out;
  int batch = 1;
  int adam_steps = 0;
  bool reference_kernels = false;
  int threads = 0;
};

int run_parity_dump(const ParityDumpOptions& o);

}  // namespace bmojo
