#include "serve/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"

namespace bmojo {

namespace {

using Clock = std::chrono::steady_clock;

// Length of the longest prefix of s that does not end inside a UTF-8 character (a character split across
// tokens is held until its last byte arrives; bytes that are not UTF-8 at all pass).
size_t complete_utf8_prefix(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t want = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return want > back ? n - back : n;
  }
  return n;
}

TokenLogprob logprob_of(const float* logits, int V, int32_t token, int top, std::vector<int32_t>& order) {
  const float mx = *std::max_element(logits, logits + V);
  double sum = 0.0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double log_z = mx + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(logits[token] - log_z);
  top = std::min(top, V);
  if (top > 0) {
    order.resize(V);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < top; ++i)
      out.top.emplace_back(order[i], static_cast<float>(logits[order[i]] - log_z));
  }
  return out;
}

}  // namespace

bool Job::wait(std::vector<ChoiceUpdate>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return over_ || !pending_.empty(); });
  for (ChoiceUpdate& u : pending_) out.push_back(std::move(u));
  pending_.clear();
  return over_;
}

std::optional<ApiError> Job::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Job::publish(ChoiceUpdate u) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(u));
  }
  cv_.notify_all();
}

void Job::finish(std::optional<ApiError> error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    over_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, PrefixCache& cache,
                     SchedulerOptions options, SequenceState sequence_template)
    : model_(model),
      tokenizer_(tokenizer),
      cache_(cache),
      options_(options),
      template_(std::move(sequence_template)),
      batch_(model) {
  check(options_.max_batch >= 1, "serve: --max-batch must be >= 1");
  check(options_.max_queue >= 0, "serve: --max-queue must be >= 0");
  check(options_.prefill_block >= 1 && options_.prefill_block <= kMaxBlock,
        "serve: --prefill-block must be in [1, " + std::to_string(kMaxBlock) + "]");
  check(options_.step_tokens >= 1, "serve: --step-tokens must be >= 1");
  check(!cache_.enabled() || cache_.every() % options_.prefill_block == 0,
        "serve: the cache interval (--cache-every " + std::to_string(cache_.every()) +
            ") must be a multiple of --prefill-block (" + std::to_string(options_.prefill_block) +
            "): snapshots are taken at chunk boundaries");
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Scheduler::Admission Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stopping_) return Admission::kShuttingDown;
    // Room: the free slots (admitted at the next step) and the queue behind them.
    const int room = options_.max_queue + std::max(0, options_.max_batch - slots_used_);
    if (static_cast<int>(queue_.size()) >= room) {
      ++metrics_.requests_rejected;
      return Admission::kQueueFull;
    }
    metrics_.prompt_tokens += job->prompt.size();
    queue_.push_back(std::move(job));
    metrics_.queue_depth = static_cast<int>(queue_.size());
  }
  cv_.notify_all();
  return Admission::kQueued;
}

void Scheduler::drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  cv_.wait_for(lock, timeout, [&] { return queue_.empty() && slots_used_ == 0; });
  stopping_ = true;
  lock.unlock();
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

void Scheduler::start(Active& a) {
  a.started = true;
  const std::vector<int32_t>& prompt = a.job->prompt;
  std::optional<SequenceState> hit = cache_.lookup(prompt, static_cast<int64_t>(prompt.size()) - 1);
  if (hit) {
    for (size_t l = 0; l < hit->layers.size(); ++l) {
      hit->layers[l].store = template_.layers[l].store;
      hit->layers[l].retrieve = template_.layers[l].retrieve;
    }
    a.position = hit->position;
    a.job->cached_tokens_ = a.position;
    a.prefill_id = batch_.join(*hit);
  } else {
    a.prefill_id = batch_.join(template_);
  }
}

void Scheduler::finish_choice(Active& a, int c, const std::string& reason) {
  Choice& ch = a.choices[c];
  ChoiceUpdate u;
  u.index = c;
  u.text = ch.utf8_held + ch.stops.flush();
  ch.utf8_held.clear();
  u.finish_reason = reason;
  a.job->publish(std::move(u));
  batch_.leave(ch.id);
  ch.done = true;
}

bool Scheduler::advance(Active& a, int c, const float* logits) {
  Choice& ch = a.choices[c];
  const Job& job = *a.job;
  if (ch.generated >= job.max_tokens) {
    finish_choice(a, c, "length");
    return false;
  }
  const int V = model_.config().vocab_size;
  const int32_t tok = ch.sampler.sample(logits, V);
  ++ch.generated;
  ++sampled_;
  ++a.job->completion_tokens_;
  if (a.job->first_token_s_ == 0.0)
    a.job->first_token_s_ = std::chrono::duration<double>(Clock::now() - job.submitted).count();
  ChoiceUpdate u;
  u.index = c;
  u.tokens = {tok};
  if (job.logprobs >= 0) {
    u.logprobs.push_back(logprob_of(logits, V, tok, job.logprobs, order_));
  }
  bool stopped = false;
  std::string text = ch.utf8_held + ch.stops.push(tokenizer_.decode(tok), stopped);
  const size_t show = complete_utf8_prefix(text);
  ch.utf8_held = text.substr(show);
  text.resize(show);
  u.text = std::move(text);
  a.job->publish(std::move(u));
  if (stopped) {
    finish_choice(a, c, "stop");
    return false;
  }
  if (ch.generated == job.max_tokens) {
    finish_choice(a, c, "length");
    return false;
  }
  ch.next = tok;
  return true;
}

void Scheduler::end(Active& a, std::optional<ApiError> error, bool cancelled) {
  if (a.prefill_id >= 0) batch_.leave(a.prefill_id);
  for (Choice& ch : a.choices)
    if (!ch.done) batch_.leave(ch.id);
  a.prefill_id = -1;
  a.choices.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots_used_ -= a.job->n;
    if (cancelled)
      ++metrics_.requests_cancelled;
    else if (error)
      ++metrics_.requests_failed;
    else
      ++metrics_.requests_finished;
    metrics_.cached_prompt_tokens += a.job->cached_tokens();
  }
  a.job->finish(std::move(error));
  a.job.reset();
  cv_.notify_all();  // drain() waits for the slots
}

void Scheduler::run() {
  const int V = model_.config().vocab_size;
  const int64_t block = options_.prefill_block;
  std::vector<BatchSession::Input> inputs;
  struct Row {
    size_t active;
    int choice;  // -1: a prefill chunk
  };
  std::vector<Row> rows;
  size_t rotate = 0;
  const ApiError shut_down{503, "server_error", "the server shut down before this request finished", "",
                           "shutting_down"};
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active_.empty(); });
      if (stopping_) {
        for (auto& job : queue_) job->finish(shut_down);
        queue_.clear();
        lock.unlock();
        for (Active& a : active_) end(a, shut_down, false);
        active_.clear();
        return;
      }
      while (!queue_.empty()) {
        std::shared_ptr<Job>& job = queue_.front();
        if (job->cancelled()) {
          ++metrics_.requests_cancelled;
          job->finish(std::nullopt);
          queue_.pop_front();
          continue;
        }
        if (slots_used_ + job->n > options_.max_batch) break;
        slots_used_ += job->n;
        Active a;
        a.job = std::move(job);
        active_.push_back(std::move(a));
        queue_.pop_front();
      }
      metrics_.queue_depth = static_cast<int>(queue_.size());
    }
    for (Active& a : active_)
      if (a.job->cancelled()) end(a, std::nullopt, true);
    std::erase_if(active_, [](const Active& a) { return a.job == nullptr; });
    for (Active& a : active_)
      if (!a.started) start(a);

    inputs.clear();
    rows.clear();
    int64_t budget = options_.step_tokens;
    for (size_t i = 0; i < active_.size(); ++i)
      for (size_t c = 0; c < active_[i].choices.size(); ++c)
        if (!active_[i].choices[c].done) {
          inputs.push_back({active_[i].choices[c].id, &active_[i].choices[c].next, 1});
          rows.push_back({i, static_cast<int>(c)});
          --budget;
        }
    bool any_prefill = false;
    for (size_t k = 0; k < active_.size(); ++k) {
      const size_t i = (rotate + k) % active_.size();
      Active& a = active_[i];
      if (a.prefill_id < 0) continue;
      const int64_t P = static_cast<int64_t>(a.job->prompt.size());
      const int64_t len = std::min(P, (a.position / block + 1) * block) - a.position;
      if (any_prefill && len > budget) continue;
      inputs.push_back({a.prefill_id, a.job->prompt.data() + a.position, len});
      rows.push_back({i, -1});
      budget -= len;
      any_prefill = true;
    }
    ++rotate;
    if (inputs.empty()) continue;

    logits_.resize(inputs.size() * static_cast<size_t>(V));
    const auto t0 = Clock::now();
    try {
      batch_.step(inputs, logits_.data());
    } catch (const std::exception& e) {
      for (Active& a : active_)
        end(a, ApiError{500, "server_error", std::string("step failed: ") + e.what(), "", ""}, false);
      active_.clear();
      continue;
    }
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    uint64_t prefilled = 0;
    sampled_ = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      Active& a = active_[rows[r].active];
      const float* row_logits = logits_.data() + r * V;
      if (rows[r].choice >= 0) {
        advance(a, rows[r].choice, row_logits);
        continue;
      }
      const std::vector<int32_t>& prompt = a.job->prompt;
      prefilled += inputs[r].n;
      a.position += inputs[r].n;
      const int64_t P = static_cast<int64_t>(prompt.size());
      if (a.position < P) {
        if (cache_.keeps(a.position)) cache_.insert(prompt.data(), a.position, batch_.state(a.prefill_id));
        continue;
      }
      // The prompt is in: its n choices start from copies of its state.
      a.choices.resize(a.job->n);
      for (int c = 0; c < a.job->n; ++c) {
        Choice& ch = a.choices[c];
        SamplingOptions s = a.job->sampling;
        s.seed += static_cast<uint64_t>(c);
        ch.sampler = Sampler(s);
        ch.stops = StopFilter(a.job->stop);
        ch.id = c == 0 ? a.prefill_id : batch_.join(batch_.state(a.prefill_id));
      }
      a.prefill_id = -1;
      for (int c = 0; c < a.job->n; ++c) advance(a, c, row_logits);
    }
    for (Active& a : active_)
      if (a.job && a.prefill_id < 0 &&
          std::all_of(a.choices.begin(), a.choices.end(), [](const Choice& ch) { return ch.done; }))
        end(a, std::nullopt, false);
    std::erase_if(active_, [](const Active& a) { return a.job == nullptr; });

    size_t state_bytes = 0;
    int sequences = 0;
    for (const Active& a : active_) {
      std::vector<int64_t> ids;
      if (a.prefill_id >= 0) ids.push_back(a.prefill_id);
      for (const Choice& ch : a.choices)
        if (!ch.done) ids.push_back(ch.id);
      for (int64_t id : ids) state_bytes += batch_.state(id).bytes();
      sequences += static_cast<int>(ids.size());
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++metrics_.steps;
    metrics_.step_rows +=
        prefilled +
        (rows.size() - std::count_if(rows.begin(), rows.end(), [](const Row& r) { return r.choice < 0; }));
    metrics_.prefill_tokens += prefilled;
    metrics_.generated_tokens += sampled_;
    metrics_.step_seconds += step_s;
    metrics_.last_batch_sequences = static_cast<int>(inputs.size());
    metrics_.step_sequences += inputs.size();
    metrics_.active_requests = static_cast<int>(active_.size());
    metrics_.active_sequences = sequences;
    metrics_.state_bytes = state_bytes;
  }
}

}  // namespace bmojo
