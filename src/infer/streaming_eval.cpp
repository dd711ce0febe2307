#include "infer/streaming_eval.hpp"

#include <cmath>
#include <filesystem>

#include "data/mqar.hpp"
#include "infer/session.hpp"

namespace bmojo {

EvalResult evaluate_streaming(const Model& model, const Config& config, const StreamingEvalOptions& options) {
  const int V = config.model.vocab_size;
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0, sequence = 0;
  std::vector<float> logits(V);
  for (int i = 0; i < options.batches; ++i) {
    const Batch b = make_batch(config.data, V, config.train.batch_size, config.train.seed, Split::kEval,
                               static_cast<uint64_t>(i));
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
      // Feed up to each labelled position and score the logits there.
      int64_t fed = 0;
      for (int t = 0; t < b.T; ++t) {
        if (tg[t] == kIgnoreLabel) continue;
        session.feed(in + fed, t + 1 - fed, logits.data(), false, options.block);
        fed = t + 1;
        float mx = logits[0];
        int best = 0;
        for (int v = 1; v < V; ++v)
          if (logits[v] > mx) mx = logits[v], best = v;
        double z = 0.0;
        for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(logits[v]) - mx);
        loss_sum += std::log(z) + mx - logits[tg[t]];
        correct += best == tg[t] ? 1 : 0;
        ++r.labelled;
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
  return r;
}

}  // namespace bmojo
