#include "infer/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/error.hpp"

namespace bmojo {

void SamplingOptions::validate() const {
  check(std::isfinite(temperature) && temperature >= 0.0,
        "temperature must be a finite number >= 0, got " + std::to_string(temperature));
  check(top_k >= 0, "top-k must be >= 0 (0 = no limit), got " + std::to_string(top_k));
  check(top_p > 0.0 && top_p <= 1.0, "top-p must be in (0, 1], got " + std::to_string(top_p));
}

Sampler::Sampler(const SamplingOptions& options) : opt_(options), rng_(options.seed) {
  opt_.validate();
}

int32_t Sampler::sample(const float* logits, int vocab) {
  if (opt_.temperature == 0.0 || opt_.top_k == 1)
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  const double mx = *std::max_element(logits, logits + vocab);
  const bool limit_k = opt_.top_k > 0 && opt_.top_k < vocab;
  if (!limit_k && opt_.top_p >= 1.0) {
    // The whole distribution: drawn in id order, no sort (a sort of the vocabulary per token cost more
    // than the model's step for small models).
    probs_.resize(vocab);
    double sum = 0.0;
    for (int i = 0; i < vocab; ++i) sum += (probs_[i] = std::exp((logits[i] - mx) / opt_.temperature));
    double u = rng_.uniform() * sum;
    for (int i = 0; i < vocab; ++i) {
      u -= probs_[i];
      if (u < 0.0) return i;
    }
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  const auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int keep = vocab;
  if (limit_k) {
    keep = opt_.top_k;
    std::nth_element(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
  }
  std::sort(order_.begin(), order_.begin() + keep, by_logit);
  probs_.resize(keep);
  double sum = 0.0;
  for (int i = 0; i < keep; ++i) sum += (probs_[i] = std::exp((logits[order_[i]] - mx) / opt_.temperature));
  if (opt_.top_p < 1.0) {
    double mass = 0.0;
    int n = 0;
    while (n < keep && mass < opt_.top_p * sum) mass += probs_[n++];
    keep = std::max(n, 1);
    sum = mass > 0.0 ? mass : probs_[0];
  }
  double u = rng_.uniform() * sum;
  for (int i = 0; i < keep; ++i) {
    u -= probs_[i];
    if (u < 0.0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace bmojo
