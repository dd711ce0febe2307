// Token embedding lookup.
#pragma once
#include <cstdint>

namespace bmojo {

// out (N, D) = table[tokens[i]]; tokens are assumed in range (validated by the caller).
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int D);
// dtable (V, D) += scatter of dout (N, D) by tokens.
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int D);

}  // namespace bmojo
