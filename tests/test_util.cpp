#include "test_util.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"

namespace bmojo::test {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(V));
  return t;
}

ModelConfig small_bm_config() {
  ModelConfig c;
  c.vocab_size = 37;
  c.d_model = 16;
  c.n_heads = 2;
  c.layers = "BM";
  c.window = 4;
  c.d_state = 4;
  c.eidetic_per_chunk = 1;
  c.eidetic_capacity = 2;
  return c;
}

void randomize_model(Model& m, uint64_t seed) {
  m.init_weights(seed);
  Rng rng(seed + 1);
  for (const TensorSpec& t : m.layout().tensors()) {
    if (t.name.find("A_log") != std::string::npos || t.name.find("dt_bias") != std::string::npos) continue;
    float* p = m.params() + t.offset;
    for (size_t i = 0; i < t.numel; ++i) p[i] += static_cast<float>(rng.normal() * 0.2);
  }
}

double relative_error(const float* a, const float* b, size_t n) {
  double diff = 0.0, mag = 1e-6;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(b[i])));
  }
  return diff / mag;
}

double dot(const float* out, const float* weight, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(out[i]) * weight[i];
  return s;
}

void expect_gradient(const std::function<double()>& f, float* x, const float* analytic, size_t n,
                     const std::string& what, int samples, float eps, double tolerance) {
  double scale = 1e-3;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(analytic[i])));
  const size_t count = std::min<size_t>(n, static_cast<size_t>(samples));
  int bad = 0;
  for (size_t s = 0; s < count; ++s) {
    const size_t i = count == n ? s : (s * 7919 + 13) % n;
    const float saved = x[i];
    x[i] = saved + eps;
    const double up = f();
    x[i] = saved - eps;
    const double down = f();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * eps);
    const double err = std::fabs(numeric - analytic[i]);
    // Error relative to the largest gradient entry (fp32 differences are noisy near zero).
    if (err > tolerance * scale + 1e-4 && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " vs numeric " << numeric
                    << " (largest |grad| " << scale << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << count << " sampled entries disagree";
}

void ScratchDirTest::SetUp() {
  dir_ = std::filesystem::temp_directory_path() /
         ("bmojo_" + std::to_string(::getpid()) + "_" +
          ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "_" +
          ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir_);
  std::filesystem::create_directories(dir_);
}

void ScratchDirTest::TearDown() {
  std::filesystem::remove_all(dir_);
}

Threads::Threads(int n) : saved(num_threads()) {
  set_num_threads(n);
}
Threads::~Threads() {
  set_num_threads(saved);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace bmojo::test
