#include "data/mqar.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"

namespace bmojo {

namespace {

// k distinct values from [lo, hi), uniformly (partial Fisher-Yates over the range).
std::vector<int32_t> distinct_uniform(Rng& rng, int32_t lo, int32_t hi, int k) {
  std::vector<int32_t> pool(hi - lo);
  std::iota(pool.begin(), pool.end(), lo);
  for (int i = 0; i < k; ++i) std::swap(pool[i], pool[i + rng.below(pool.size() - i)]);
  pool.resize(k);
  return pool;
}

}  // namespace

void mqar_example(int32_t* inputs, int32_t* targets, const DataConfig& d, int vocab_size, uint64_t seed) {
  Rng rng(seed);
  const int L = d.seq_len, K = d.num_kv_pairs, G = d.gap, total = L + G;
  const int ctx = 2 * K;
  std::fill(inputs, inputs + total, 0);
  std::fill(targets, targets + total, kIgnoreLabel);
  const auto keys = distinct_uniform(rng, 1, vocab_size / 2, K);
  const auto values = distinct_uniform(rng, vocab_size / 2, vocab_size, K);
  for (int i = 0; i < K; ++i) {
    inputs[2 * i] = keys[i];
    inputs[2 * i + 1] = values[i];
  }
  // Gaps: K distinct draws from {0..S-1} with p(g) proportional to a (g+1)^(a-1), drawn one after another
  // without replacement (each draw renormalises over what is left).
  const int S = (L - ctx) / 2;
  std::vector<double> weight(S);
  for (int g = 0; g < S; ++g) weight[g] = d.power_a * std::pow(g + 1.0, d.power_a - 1.0);
  const int query_start = ctx + G;
  for (int i = 0; i < K; ++i) {
    double total_weight = 0.0;
    for (double w : weight) total_weight += w;
    double u = rng.uniform() * total_weight;
    int g = 0;
    for (; g < S - 1; ++g) {
      if (weight[g] == 0.0) continue;
      if (u < weight[g]) break;
      u -= weight[g];
    }
    while (weight[g] == 0.0) --g;  // rounding pushed past the last open slot
    weight[g] = 0.0;
    inputs[query_start + 2 * g] = keys[i];
    targets[query_start + 2 * g] = values[i];
  }
  if (d.random_non_queries)
    for (int t = 0; t < total; ++t)
      if (inputs[t] == 0) inputs[t] = static_cast<int32_t>(rng.below(vocab_size));
}

Batch make_batch(const DataConfig& d, int vocab_size, int batch_size, uint64_t seed, Split split,
                 uint64_t index) {
  Batch batch;
  check(d.task != "text", "make_batch: the text task's batches come from token files (data/batches.hpp)");
  batch.B = batch_size;
  batch.T = d.total_length();
  batch.inputs.resize(static_cast<size_t>(batch.B) * batch.T);
  batch.targets.resize(batch.inputs.size());
  for (int b = 0; b < batch_size; ++b) {
    const uint64_t example_seed = mix_seed(seed, static_cast<uint64_t>(split) + 1, index * batch_size + b);
    int32_t* in = batch.inputs.data() + static_cast<size_t>(b) * batch.T;
    int32_t* tg = batch.targets.data() + static_cast<size_t>(b) * batch.T;
    if (d.task == "mqar") {
      mqar_example(in, tg, d, vocab_size, example_seed);
    } else {
      // Uniform random tokens, next-token targets at every position.
      Rng rng(example_seed);
      int32_t next = static_cast<int32_t>(rng.below(vocab_size));
      for (int t = 0; t < batch.T; ++t) {
        in[t] = next;
        next = static_cast<int32_t>(rng.below(vocab_size));
        tg[t] = next;
      }
    }
  }
  return batch;
}

}  // namespace bmojo
