// Helpers for kernel tests: random data, error metrics, finite-difference gradient checks.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bmojo::test {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f);

// max_i |a_i - b_i| / max(max_i |b_i|, 1e-6): error relative to the reference's magnitude.
double relative_error(const float* a, const float* b, size_t n);
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  return relative_error(a.data(), b.data(), b.size());
}

// sum_i out_i * weight_i in double: the scalar whose gradient w.r.t. out is `weight`.
double dot(const float* out, const float* weight, size_t n);

// Compares analytic[i] with the central difference (f(x+eps) - f(x-eps)) / 2eps for up to `samples`
// indices of x spread over [0, n). f recomputes the objective from the current x.
void expect_gradient(const std::function<double()>& f, float* x, const float* analytic, size_t n,
                     const std::string& what, int samples = 24, float eps = 1e-3f, double tolerance = 2e-2);

}  // namespace bmojo::test
