// Continuous batching for `bmojo serve`: one thread advances every active request together through the
// batched recurrent step (infer/session.hpp's BatchSession over model/model_step.hpp). A step holds the
// decode token of every generating sequence and prefill chunks of prompts, as many as the step's token
// budget allows; requests join and leave between steps. Prompts resume from the prefix-state cache
// (serve/prefix_cache.hpp) and leave snapshots in it at aligned block boundaries. n completions of one
// prompt share its prefill: the state is copied once the prompt is in. A request whose client went away is
// cancelled at the next step and its sequences freed.
//
// The sampling of every choice is exactly `bmojo generate`'s: a Sampler seeded with the request's seed
// (seed + i for choice i), applied to the logits after the prompt and then after each sampled token.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/tokenizer.hpp"
#include "infer/sampler.hpp"
#include "infer/session.hpp"
#include "infer/stop_filter.hpp"
#include "model/model.hpp"
#include "serve/api.hpp"
#include "serve/prefix_cache.hpp"

namespace bmojo {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens, most likely first
};

// What a choice produced since the last look: text safe to show (stop strings held back, whole UTF-8
// characters), the tokens and their log-probabilities, and at the end the finish reason.
struct ChoiceUpdate {
  int index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;  // "stop" | "length" when the choice is done, else empty
};

// One request: filled by the HTTP side, then advanced by the scheduler; the HTTP side waits for updates.
class Job {
 public:
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  int n = 1;
  int logprobs = -1;
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();

  // Waits up to `timeout` for updates; moves them into out. Returns true once the job is over (all its
  // choices finished, or it failed: see error()).
  bool wait(std::vector<ChoiceUpdate>& out, std::chrono::milliseconds timeout);
  // Asks the scheduler to stop this job and free its sequences (the client went away).
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  // Set when the job failed or was cut short (shutdown); the HTTP side reports it.
  std::optional<ApiError> error() const;
  int64_t cached_tokens() const { return cached_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  // Seconds from submission to the first sampled token (0 before).
  double first_token_seconds() const { return first_token_s_; }

 private:
  friend class Scheduler;
  void publish(ChoiceUpdate u);
  void finish(std::optional<ApiError> error);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ChoiceUpdate> pending_;
  bool over_ = false;
  std::optional<ApiError> error_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> cached_tokens_{0}, completion_tokens_{0};
  std::atomic<double> first_token_s_{0.0};
};

struct SchedulerOptions {
  int max_batch = 32;           // sequences advanced together (a request takes n of them)
  int max_queue = 128;          // requests waiting for a slot; beyond: refused (429)
  int64_t prefill_block = 256;  // prompt tokens per chunk, chunks aligned to multiples of it
  int64_t step_tokens = 512;    // tokens per step (decode rows and prefill chunks; at least one chunk)
};

struct SchedulerMetrics {
  uint64_t requests_finished = 0, requests_cancelled = 0, requests_failed = 0, requests_rejected = 0;
  uint64_t prompt_tokens = 0, cached_prompt_tokens = 0, prefill_tokens = 0, generated_tokens = 0;
  uint64_t steps = 0, step_rows = 0, step_sequences = 0;
  int queue_depth = 0, active_requests = 0, active_sequences = 0, last_batch_sequences = 0;
  size_t state_bytes = 0;  // the state of every active sequence
  double step_seconds = 0.0;
};

class Scheduler {
 public:
  // `sequence_template`: the empty state new sequences start from (with the store attached, if any).
  Scheduler(const Model& model, const Tokenizer& tokenizer, PrefixCache& cache, SchedulerOptions options,
            SequenceState sequence_template);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  enum class Admission { kQueued, kQueueFull, kShuttingDown };
  Admission submit(std::shared_ptr<Job> job);
  // Stops admitting, waits up to `timeout` for the running and queued requests, then cuts the rest short
  // (their error says so) and stops the thread.
  void drain(std::chrono::milliseconds timeout);
  SchedulerMetrics metrics() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Choice {
    int64_t id = -1;  // sequence in the batch
    Sampler sampler{SamplingOptions{}};
    StopFilter stops{{}};
    std::string utf8_held;  // the start of a character split across tokens
    int32_t next = 0;       // the token to feed in the next step
    int64_t generated = 0;
    bool done = false;
  };
  struct Active {
    std::shared_ptr<Job> job;
    bool started = false;
    int64_t prefill_id = -1;  // the prompt's sequence while it is prefilled
    int64_t position = 0;     // prompt tokens consumed
    std::vector<Choice> choices;
  };

  void run();
  void start(Active& a);
  // Samples choice c from logits (V); publishes the token; returns whether the choice goes on.
  bool advance(Active& a, int c, const float* logits);
  void finish_choice(Active& a, int c, const std::string& reason);
  void end(Active& a, std::optional<ApiError> error, bool cancelled);

  const Model& model_;
  const Tokenizer& tokenizer_;
  PrefixCache& cache_;
  const SchedulerOptions options_;
  const SequenceState template_;
  BatchSession batch_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool draining_ = false, stopping_ = false;
  int slots_used_ = 0;        // choices of the active requests (guarded by mu_)
  SchedulerMetrics metrics_;  // guarded by mu_

  std::vector<Active> active_;  // the scheduler thread's own
  std::vector<float> logits_;
  uint64_t sampled_ = 0;        // tokens sampled in the current step
  std::vector<int32_t> order_;  // logprob_of's sort buffer
  std::thread thread_;
};

}  // namespace bmojo
