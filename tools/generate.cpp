#include "generate.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/tokenizer.hpp"
#include "infer/sampler.hpp"
#include "infer/session.hpp"
#include "infer/stop_filter.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_prompt(const GenerateOptions& o) {
  check(o.prompt.empty() || o.prompt_file.empty(), "give either --prompt or --prompt-file, not both");
  if (!o.prompt.empty()) return o.prompt;
  std::istream* in = &std::cin;
  if (!o.prompt_file.empty() && o.prompt_file != "-") {
    return read_file(o.prompt_file, "prompt file");
  } else if (o.prompt_file.empty() && ::isatty(STDIN_FILENO)) {
    fail("no prompt: give --prompt TEXT, --prompt-file FILE, or pipe the prompt on stdin");
  }
  return std::string(std::istreambuf_iterator<char>(*in), {});
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream s(text);
  std::string word;
  while (s >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == word.size() && v >= 0 && v <= INT32_MAX,
          "--ids: prompt word '" + word + "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

int run_generate(const GenerateOptions& o) {
  set_num_threads(o.threads > 0 ? o.threads : num_cores());
  o.sampling.validate();
  check(o.max_tokens >= 0, "--max-tokens must be >= 0");
  check(o.prefill_block >= 1, "--prefill-block must be >= 1");
  const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
  Model model(info.config.model);
  load_checkpoint(o.checkpoint, model, nullptr);
  const int V = model.config().vocab_size;
  // Text in and out goes through the tokenizer the model was trained with (byte-level for the synthetic
  // tasks); a missing or different tokenizer is an error, not silent garbage.
  const Tokenizer tokenizer =
      o.ids ? Tokenizer() : Tokenizer::load(checkpoint_tokenizer_spec(o.checkpoint, info));
  if (!o.ids)
    check(V >= tokenizer.vocab_size(), "this model's vocabulary has " + std::to_string(V) +
                                           " tokens, too few for " + tokenizer.kind_name() + " text (" +
                                           std::to_string(tokenizer.vocab_size()) +
                                           "); give the prompt as token ids with --ids");

  const std::string prompt_text = read_prompt(o);
  const std::vector<int32_t> prompt = o.ids ? parse_ids(prompt_text) : tokenizer.encode(prompt_text);
  Session session(model, parse_kv_storage(o.kv_storage, "--kv-storage"));
  if (!o.store_dir.empty())
    for (const std::string& notice : session.attach_store(o.store_dir, o.retrieve, o.store_sync))
      std::fprintf(stderr, "[generate] %s\n", notice.c_str());
  if (!o.load_state.empty()) session.load(o.load_state);
  check(!prompt.empty(), session.position() > 0
                             ? "empty prompt: continuing a saved state needs at least one new token"
                             : "empty prompt: nothing to continue from");

  std::vector<float> logits(V);
  const auto t0 = Clock::now();
  session.feed(prompt.data(), static_cast<int64_t>(prompt.size()), logits.data(), false, o.prefill_block);
  const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!o.save_state.empty()) session.save(o.save_state);

  Sampler sampler(o.sampling);
  StopFilter filter(o.stop);
  std::vector<int32_t> generated;
  std::string text;
  std::string stop_reason = "max_tokens";
  double decode_s = 0.0;
  const auto emit = [&](const std::string& s) {
    text += s;
    if (!o.json && !s.empty()) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    }
  };
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    const auto ts = Clock::now();
    const int32_t tok = sampler.sample(logits.data(), V);
    decode_s += std::chrono::duration<double>(Clock::now() - ts).count();
    generated.push_back(tok);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) != o.stop_ids.end()) {
      stop_reason = "stop_id";
      break;
    }
    bool stopped = false;
    emit(filter.push(o.ids ? (i ? " " : "") + std::to_string(tok) : tokenizer.decode(tok), stopped));
    if (stopped) {
      stop_reason = "stop_string";
      break;
    }
    if (i + 1 == o.max_tokens) break;
    const auto tf = Clock::now();
    session.feed(&tok, 1, logits.data(), false, 1);
    decode_s += std::chrono::duration<double>(Clock::now() - tf).count();
  }
  emit(filter.flush());
  session.flush_stores();
  const double prefill_tps = prompt.size() / std::max(prefill_s, 1e-9);
  const double decode_tps = generated.size() / std::max(decode_s, 1e-9);
  if (o.json) {
    nlohmann::json j = {{"prompt_tokens", prompt.size()},       {"generated_tokens", generated.size()},
                        {"prefill_tokens_per_s", prefill_tps},  {"decode_tokens_per_s", decode_tps},
                        {"state_bytes", session.state_bytes()}, {"position", session.position()},
                        {"stop_reason", stop_reason},           {"tokens", generated}};
    if (!o.ids) j["text"] = text;
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::printf("\n");
    std::fprintf(stderr,
                 "[generate] prompt %zu tokens, prefill %.0f tokens/s | %zu tokens generated, decode %.0f "
                 "tokens/s | stop: %s | state %zu bytes at position %lld\n",
                 prompt.size(), prefill_tps, generated.size(), decode_tps, stop_reason.c_str(),
                 session.state_bytes(), static_cast<long long>(session.position()));
  }
  return 0;
}

Command generate_command(CLI::App& app) {
  struct State {
    GenerateOptions gen;
  };
  auto s = std::make_shared<State>();
  auto* generate = app.add_subcommand(
      "generate",
      "Run a checkpoint on a prompt: streaming inference with bounded state, tokens printed as made");
  generate->add_option("checkpoint", s->gen.checkpoint, "Checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  generate->add_option("-p,--prompt", s->gen.prompt, "Prompt text (or token ids with --ids)");
  generate->add_option("-f,--prompt-file", s->gen.prompt_file,
                       "Read the prompt from this file ('-' = stdin)");
  generate->add_flag("--ids", s->gen.ids,
                     "Prompt and output are whitespace-separated token ids (default: byte-level text)");
  add_integer(generate, "-n,--max-tokens", s->gen.max_tokens, "Tokens to generate (default 64)", int64_t{0},
              kMaxPosition);
  generate->add_option("-t,--temperature", s->gen.sampling.temperature,
                       "Sampling temperature; 0 = greedy (default 0)");
  add_integer(generate, "--top-k", s->gen.sampling.top_k, "Sample among the k most likely tokens (0 = all)",
              decltype(s->gen.sampling.top_k){0},
              std::numeric_limits<decltype(s->gen.sampling.top_k)>::max());
  generate->add_option("--top-p", s->gen.sampling.top_p, "Nucleus sampling mass in (0, 1] (default 1)");
  add_integer(generate, "--seed", s->gen.sampling.seed, "Sampling seed (default 0)",
              decltype(s->gen.sampling.seed){0}, std::numeric_limits<decltype(s->gen.sampling.seed)>::max());
  generate->add_option("--stop", s->gen.stop,
                       "Stop when the output contains this string (repeatable; not printed)");
  add_integers(generate, "--stop-id", s->gen.stop_ids, "Stop when this token id is generated (repeatable)", 0,
               std::numeric_limits<int32_t>::max());
  add_integer(generate, "--prefill-block", s->gen.prefill_block,
              "Prompt tokens processed per block (default 256)", int64_t{1}, kMaxPrefillBlock);
  generate->add_option("--load-state", s->gen.load_state, "Start from a state saved by --save-state")
      ->check(CLI::ExistingFile);
  generate->add_option("--save-state", s->gen.save_state,
                       "Save the state after the prompt, to continue it later with --load-state");
  generate->add_option("--store", s->gen.store_dir,
                       "Long-term memory store directory for the B layers (created; reopened by later runs)");
  add_integer(generate, "--retrieve", s->gen.retrieve,
              "Store entries read per KV head at each chunk boundary (default 8)", 0, kMaxRetrieve);
  generate->add_flag("--store-sync", s->gen.store_sync,
                     "Write the store in the token loop (reproducible runs)");
  add_kv_storage_option(generate, s->gen.kv_storage);
  add_integer(generate, "--threads", s->gen.threads, "Threads (default: all cores)", 1, kMaxThreads);
  generate->add_flag("--json", s->gen.json,
                     "Print one JSON line (text, tokens, speeds, state bytes) instead of streaming");
  return {generate, [s] { return run_generate(s->gen); }};
}

}  // namespace bmojo
