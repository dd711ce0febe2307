#include "kernels/rope.hpp"

#include <cmath>

#include "core/parallel.hpp"
#include "core/profile.hpp"

namespace bmojo {

void RopeTable::ensure(int64_t positions) {
  if (positions <= positions_) return;
  const int half = head_dim_ / 2;
  cos_.resize(positions * half);
  sin_.resize(positions * half);
  for (int64_t p = positions_; p < positions; ++p)
    rope_angles(cos_.data() + p * half, sin_.data() + p * half, p, head_dim_, base_);
  positions_ = positions;
}

void rope_angles(float* cos, float* sin, int64_t pos, int head_dim, double base) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(base, -2.0 * i / head_dim);
    const double angle = static_cast<double>(pos) * freq;
    cos[i] = static_cast<float>(std::cos(angle));
    sin[i] = static_cast<float>(std::sin(angle));
  }
}

namespace {

// One row's heads rotated by one position's angles (sign -1: the inverse rotation).
inline void rotate_heads(float* row, int heads, int Dh, const float* c, const float* s, float sign) {
  const int half = Dh / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = row + h * Dh;
    for (int i = 0; i < half; ++i) {
      const float x1 = v[i], x2 = v[i + half];
      const float sn = sign * s[i];
      v[i] = x1 * c[i] - x2 * sn;
      v[i + half] = x2 * c[i] + x1 * sn;
    }
  }
}

}  // namespace

void rope_rotate_rows(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const float* cos,
                      const float* sin) {
  const int half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r)
    rotate_heads(x + r * ld, heads, head_dim, cos + r * half, sin + r * half, 1.0f);
}

void rope_apply(float* x, int64_t ld, int B, int T, int heads, int64_t pos0, const RopeTable& table,
                bool inverse) {
  const profile::Scope scope("rope_apply");
  const int Dh = table.head_dim();
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) \
    schedule(static) if (parallel_worth(static_cast <double>(B) * T * heads * Dh))
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const float* c = table.cos_at(pos0 + t);
      const float* s = table.sin_at(pos0 + t);
      rotate_heads(x + (static_cast<int64_t>(b) * T + t) * ld, heads, Dh, c, s, sign);
    }
}

}  // namespace bmojo
