// Softmax cross-entropy over rows of logits.
#pragma once
#include <cstdint>

namespace bmojo {

struct CrossEntropyResult {
  double loss_sum = 0.0;  // sum over rows of -log p(target)
  int64_t correct = 0;    // rows whose argmax equals the target
};

// logits (N, V) are replaced by (softmax - onehot(target)) * grad_scale when want_grad, else left as is.
// Targets must be in [0, V).
CrossEntropyResult cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t N, int V,
                                                  float grad_scale, bool want_grad);

}  // namespace bmojo
