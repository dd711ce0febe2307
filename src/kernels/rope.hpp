// Rotary position embedding, rotate-half convention, base 10000 by default:
// for i < Dh/2, (x_i, x_{i+Dh/2}) is rotated by the angle pos * base^(-2i/Dh).
#pragma once
#include <cstdint>
#include <vector>

namespace bmojo {

class RopeTable {
 public:
  RopeTable(int head_dim, float base) : head_dim_(head_dim), base_(base) {}
  // Makes positions [0, positions) available.
  void ensure(int64_t positions);
  const float* cos_at(int64_t pos) const { return cos_.data() + pos * (head_dim_ / 2); }
  const float* sin_at(int64_t pos) const { return sin_.data() + pos * (head_dim_ / 2); }
  int head_dim() const { return head_dim_; }

 private:
  int head_dim_;
  float base_;
  int64_t positions_ = 0;
  std::vector<float> cos_, sin_;
};

// cos, sin (head_dim / 2) of position pos, computed exactly as the table computes them: streaming inference
// uses it for positions beyond any table.
void rope_angles(float* cos, float* sin, int64_t pos, int head_dim, double base);

// Rotates in place the heads [0, heads) of each row of x (B*T rows, row stride ld, head h at column
// h*Dh); row b*T+t is at position pos0 + t. inverse = true applies the transpose (the backward pass).
void rope_apply(float* x, int64_t ld, int B, int T, int heads, int64_t pos0, const RopeTable& table,
                bool inverse);

// Rotates in place the heads [0, heads) of each of `rows` rows of x (row stride ld), row r by the angles
// cos/sin + r * (head_dim / 2): the recurrent step's form, where rows are at arbitrary positions.
void rope_rotate_rows(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const float* cos,
                      const float* sin);

}  // namespace bmojo
