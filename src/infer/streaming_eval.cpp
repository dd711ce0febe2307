#include "infer/streaming_eval.hpp"

#include <cmath>
#include <filesystem>

#include "data/batches.hpp"
#include "infer/session.hpp"
#include "kernels/cross_entropy.hpp"

namespace bmojo {

EvalResult evaluate_streaming(const Model& model, const Config& config, const StreamingEvalOptions& options) {
  const BatchSource data(config);
  return evaluate_streaming(model, config, data, options);
}

EvalResult evaluate_streaming(const Model& model, const Config& config, const BatchSource& data,
                              const StreamingEvalOptions& options) {
  const int V = config.model.vocab_size;
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0, sequence = 0;
  // Rows of logits (V each) scored by the same kernel as the parallel evaluation; unlabelled rows skipped.
  const auto score = [&](float* rows, const int32_t* targets, int64_t n) {
    for (int64_t t = 0; t < n;) {
      if (targets[t] == kIgnoreLabel) {
        ++t;
        continue;
      }
      int64_t e = t;  // a run of labelled rows, scored in one call
      while (e < n && targets[e] != kIgnoreLabel) ++e;
      const CrossEntropyResult c =
          cross_entropy_forward_backward(rows + t * V, targets + t, e - t, V, 0.0f, false);
      loss_sum += c.loss_sum;
      correct += c.correct;
      r.labelled += e - t;
      if (data.text())
        for (; t < e; ++t) r.bytes += data.eval_token_bytes(targets[t]);
      t = e;
    }
  };
  std::vector<float> logits(data.text() ? static_cast<size_t>(config.data.seq_len) * V : V);
  for (int i = 0; i < options.batches; ++i) {
    const Batch b = data.eval(static_cast<uint64_t>(i));
    for (int s = 0; s < b.B; ++s, ++sequence) {
      const int32_t* in = b.inputs.data() + static_cast<int64_t>(s) * b.T;
      const int32_t* tg = b.targets.data() + static_cast<int64_t>(s) * b.T;
      Session session(model);
      std::string dir;
      if (!options.store_dir.empty()) {
        dir = options.store_dir + "/seq" + std::to_string(sequence);
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);  // a leftover of an interrupted run; errors surface below
        session.attach_store(dir, options.retrieve, true);
      }
      if (data.text()) {
        // Every position is labelled: one pass with the logits of every position.
        session.feed(in, b.T, logits.data(), true, options.block);
        score(logits.data(), tg, b.T);
      } else {
        // Feed up to each labelled position and score the logits there.
        int64_t fed = 0;
        for (int t = 0; t < b.T; ++t) {
          if (tg[t] == kIgnoreLabel) continue;
          session.feed(in + fed, t + 1 - fed, logits.data(), false, options.block);
          fed = t + 1;
          score(logits.data(), tg + t, 1);
        }
      }
      if (!dir.empty()) {
        session = Session(model);  // closes the stores before their files go
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    }
  }
  if (r.labelled > 0) {
    r.loss = loss_sum / r.labelled;
    r.accuracy = static_cast<double>(correct) / r.labelled;
  }
  if (r.bytes > 0) r.bits_per_byte = loss_sum / std::log(2.0) / static_cast<double>(r.bytes);
  return r;
}

}  // namespace bmojo
