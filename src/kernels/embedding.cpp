#include "kernels/embedding.hpp"

#include <cstring>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int D) {
  const profile::Scope scope("embedding_forward");
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <double>(N) * D))
  for (int64_t i = 0; i < N; ++i) {
    std::memcpy(out + i * D, table + static_cast<int64_t>(tokens[i]) * D, sizeof(float) * D);
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int D) {
  const profile::Scope scope("embedding_backward");
  // Threads own column ranges, so repeated tokens never race and the sum order is fixed.
#pragma omp parallel if (parallel_worth(static_cast <double>(N) * D))
  {
    int64_t c0, c1;
    split_range(D, omp_get_thread_num(), omp_get_num_threads(), c0, c1);
    for (int64_t i = 0; i < N; ++i) {
      float* row = dtable + static_cast<int64_t>(tokens[i]) * D;
      const float* g = dout + i * D;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace bmojo
