// Helpers for kernel tests: random data, error metrics, finite-difference gradient checks.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace bmojo {
class Model;
}

namespace bmojo::test {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f);
// n tokens uniform in [0, V).
std::vector<int32_t> random_tokens(int n, int V, uint64_t seed);
// A small B + M model (vocabulary 37, d_model 16, window 4, one eidetic entry a chunk, two kept): the
// state, store and cache tests' model.
ModelConfig small_bm_config();
// init_weights(seed), then every parameter moved well away from the init (distinct innovation scores, a
// non-zero predictor P); the SSM's A_log and dt_bias are left alone so the scan stays stable.
void randomize_model(Model& m, uint64_t seed);

// Sets the thread count for its lifetime (OpenMP and OpenBLAS), then restores the previous one.
struct Threads {
  explicit Threads(int n);
  ~Threads();
  Threads(const Threads&) = delete;
  Threads& operator=(const Threads&) = delete;
  int saved;
};

// The message of the bmojo::Error that f throws; "" when it throws none.
std::string error_of(const std::function<void()>& f);

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

// A fixture with a fresh, empty scratch directory per test (named after the test and the process),
// removed afterwards.
class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

}  // namespace bmojo::test
