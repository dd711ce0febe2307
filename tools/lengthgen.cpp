#include "lengthgen.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/batches.hpp"
#include "data/token_file.hpp"
#include "infer/session.hpp"
#include "kernels/cross_entropy.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

int run_lengthgen(const LengthGenOptions& o) {
  set_num_threads(o.threads > 0 ? o.threads : num_cores());
  check(!o.multiples.empty(), "--multiples is empty");
  for (int m : o.multiples) check(m >= 1, "--multiples must be positive integers, got " + std::to_string(m));
  check(o.max_docs >= 1, "--max-docs must be >= 1");
  check(o.block >= 1, "--prefill-block must be >= 1");
  const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
  Model model(info.config.model);
  load_checkpoint(o.checkpoint, model, nullptr);
  const int V = model.config().vocab_size;
  const int T = o.train_length > 0 ? o.train_length : info.config.data.seq_len;
  const int bucket = o.bucket > 0 ? o.bucket : std::max(1, T / 4);
  const TokenFile file(o.tokens);
  check_token_file_vocab(file, V);
  if (info.state.tokenizer_hash != 0)
    check(file.header().tokenizer_hash == info.state.tokenizer_hash,
          "token file " + o.tokens + " was made with another tokenizer than the one " + o.checkpoint +
              " was trained with");
  const int max_m = *std::max_element(o.multiples.begin(), o.multiples.end());
  const int64_t L = static_cast<int64_t>(max_m) * T;
  std::vector<int64_t> docs;
  int64_t longest = 0;
  for (int64_t d = 0; d < file.num_docs(); ++d) {
    const int64_t n = file.doc_end(d) - file.doc_begin(d);
    longest = std::max(longest, n);
    if (n >= L + 1 && static_cast<int>(docs.size()) < o.max_docs) docs.push_back(d);
  }
  check(!docs.empty(), "no document of " + o.tokens + " has " + std::to_string(L + 1) + " tokens (" +
                           std::to_string(max_m) + " x T = " + std::to_string(T) +
                           ", plus one); the longest has " + std::to_string(longest));

  std::vector<double> nll(L, 0.0);
  std::vector<double> bytes(L, 0.0);
  std::vector<int32_t> tokens(L + 1);
  std::vector<float> logits(static_cast<size_t>(o.block) * V);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < docs.size(); ++i) {
    file.copy(file.doc_begin(docs[i]), L + 1, tokens.data());
    Session session(model);
    for (int64_t p = 0; p < L; p += o.block) {
      const int64_t n = std::min<int64_t>(o.block, L - p);
      session.feed(tokens.data() + p, n, logits.data(), true, o.block);
      for (int64_t j = 0; j < n; ++j) {  // row by row: the loss of every position is kept
        const int32_t* target = tokens.data() + p + j + 1;
        nll[p + j] += cross_entropy_forward_backward(logits.data() + static_cast<size_t>(j) * V, target, 1, V,
                                                     0.0f, false)
                          .loss_sum;
        bytes[p + j] += file.token_bytes(*target);
      }
    }
    std::fprintf(stderr, "[lengthgen] document %zu/%zu (%lld tokens scored) | %.1f s\n", i + 1, docs.size(),
                 static_cast<long long>(L),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double n_docs = static_cast<double>(docs.size());
  nlohmann::json result = {{"checkpoint", o.checkpoint},      {"tokens", o.tokens},
                           {"layers", model.config().layers}, {"train_length", T},
                           {"documents", docs.size()},        {"bucket", bucket}};
  nlohmann::json per_multiple = nlohmann::json::array();
  for (int m : o.multiples) {
    const int64_t end = static_cast<int64_t>(m) * T;
    double s = 0.0, b = 0.0, beyond = 0.0;
    for (int64_t p = 0; p < end; ++p) {
      s += nll[p];
      b += bytes[p];
      if (p >= T) beyond += nll[p];
    }
    const double loss = s / (n_docs * end);
    nlohmann::json row = {{"multiple", m},
                          {"length", end},
                          {"loss", loss},
                          {"perplexity", std::exp(loss)},
                          {"bits_per_byte", b > 0 ? s / std::log(2.0) / b : 0.0}};
    if (end > T) row["loss_beyond_T"] = beyond / (n_docs * (end - T));
    per_multiple.push_back(row);
  }
  result["per_multiple"] = per_multiple;
  nlohmann::json buckets = nlohmann::json::array();
  for (int64_t p = 0; p < L; p += bucket) {
    const int64_t e = std::min<int64_t>(L, p + bucket);
    double s = 0.0;
    for (int64_t q = p; q < e; ++q) s += nll[q];
    buckets.push_back({{"start", p}, {"end", e}, {"loss", s / (n_docs * (e - p))}});
  }
  result["buckets"] = buckets;
  if (!o.out.empty()) write_file_atomic(o.out, result.dump(1) + "\n");
  if (o.json) {
    std::cout << result.dump() << std::endl;
    return 0;
  }
  std::printf("length generalisation of %s (%s, trained at T = %d) on %zu documents of %s\n",
              o.checkpoint.c_str(), model.config().layers.c_str(), T, docs.size(), o.tokens.c_str());
  std::printf("%8s %8s %10s %10s %10s %14s\n", "multiple", "length", "loss", "ppl", "bits/byte",
              "loss beyond T");
  for (const auto& r : per_multiple)
    std::printf("%8d %8lld %10.4f %10.3f %10.4f %14s\n", r["multiple"].get<int>(),
                static_cast<long long>(r["length"].get<int64_t>()), r["loss"].get<double>(),
                r["perplexity"].get<double>(), r["bits_per_byte"].get<double>(),
                r.contains("loss_beyond_T") ? std::to_string(r["loss_beyond_T"].get<double>()).c_str() : "-");
  std::printf("loss per position bucket of %d:\n", bucket);
  for (const auto& b : buckets)
    std::printf("  [%6lld, %6lld) %8.4f\n", static_cast<long long>(b["start"].get<int64_t>()),
                static_cast<long long>(b["end"].get<int64_t>()), b["loss"].get<double>());
  return 0;
}

Command lengthgen_command(CLI::App& app) {
  struct State {
    LengthGenOptions lg;
  };
  auto s = std::make_shared<State>();
  auto* lengthgen = app.add_subcommand(
      "lengthgen", "Length generalisation: loss at T, 2T, 4T, 8T and per position bucket, on long documents");
  lengthgen->add_option("checkpoint", s->lg.checkpoint, "Checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  lengthgen->add_option("--tokens", s->lg.tokens, "Token file of held-out documents")
      ->required()
      ->check(CLI::ExistingFile);
  add_integers(lengthgen, "--multiples", s->lg.multiples, "Multiples of T (default 1,2,4,8)", 1, 1 << 16);
  add_integer(lengthgen, "--train-length", s->lg.train_length, "T (default: the checkpoint's data.seq_len)",
              decltype(s->lg.train_length){1}, decltype(s->lg.train_length){1 << 24});
  add_integer(lengthgen, "--bucket", s->lg.bucket, "Positions per bucket (default T/4)",
              decltype(s->lg.bucket){1}, std::numeric_limits<decltype(s->lg.bucket)>::max());
  add_integer(lengthgen, "--max-docs", s->lg.max_docs, "Documents to score (default 16)",
              decltype(s->lg.max_docs){1}, std::numeric_limits<decltype(s->lg.max_docs)>::max());
  add_integer(lengthgen, "--prefill-block", s->lg.block, "Streaming block size (default 256)",
              decltype(s->lg.block){1}, decltype(s->lg.block){kMaxPrefillBlock});
  add_integer(lengthgen, "--threads", s->lg.threads, "Threads (default: all cores)", 1, kMaxThreads);
  lengthgen->add_option("-o,--out", s->lg.out, "Also write the JSON result to this file");
  lengthgen->add_flag("--json", s->lg.json, "Print the result as one JSON line");
  return {lengthgen, [s] { return run_lengthgen(s->lg); }};
}

}  // namespace bmojo
