#include "infer/session.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"
#include "infer/state_file.hpp"
#include "model/bmojo_layer.hpp"
#include "model/memory_estimate.hpp"

namespace bmojo {

namespace {

void check_tokens(const int32_t* tokens, int64_t n, int V, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    check(tokens[i] >= 0 && tokens[i] < V, "token " + std::to_string(tokens[i]) + " at " + what +
                                               " position " + std::to_string(i) +
                                               " is outside the vocabulary [0, " + std::to_string(V) + ")");
}

}  // namespace

Session::Session(const Model& model, KvStorage storage) : model_(&model), storage_(storage) {
  reset();
}

void Session::reset() {
  state_ = empty_sequence_state(model_->config(), storage_);
  attach_to_layers();
}

void Session::attach_to_layers() {
  for (size_t l = 0; l < state_.layers.size(); ++l) {
    state_.layers[l].store = l < stores_.size() ? stores_[l] : nullptr;
    state_.layers[l].retrieve = retrieve_;
  }
}

std::vector<std::string> Session::attach_store(const std::string& dir, int retrieve, bool synchronous) {
  check(retrieve >= 0 && retrieve <= kMaxRetrieve, "store: entries retrieved per chunk must be in [0, " +
                                                       std::to_string(kMaxRetrieve) + "], got " +
                                                       std::to_string(retrieve));
  const ModelConfig& cfg = model_->config();
  std::vector<std::string> notices;
  std::vector<std::shared_ptr<MemoryStore>> stores(cfg.layers.size());
  bool any = false;
  for (size_t l = 0; l < cfg.layers.size(); ++l) {
    if (!uses_eidetic_memory(cfg.layers[l], cfg)) continue;
    std::string notice;
    stores[l] =
        std::make_shared<MemoryStore>(dir + "/layer" + std::to_string(l) + ".bmstore", model_->fingerprint(),
                                      cfg.kv_heads(), cfg.head_dim(), synchronous, &notice);
    if (!notice.empty()) notices.push_back(notice);
    any = true;
  }
  check(any, "store: this model has no B layer with an eidetic memory (k > 0, m > 0) to back with a store");
  stores_ = std::move(stores);
  retrieve_ = retrieve;
  attach_to_layers();
  return notices;
}

void Session::flush_stores() {
  for (auto& s : stores_)
    if (s) s->flush();
}

void Session::feed(const int32_t* tokens, int64_t n, float* logits, bool all_logits, int64_t block) {
  const int V = model_->config().vocab_size;
  check(n >= 0, "feed: negative token count");
  check_tokens(tokens, n, V, "prompt");
  if (block <= 0) block = std::max<int64_t>(n, 1);
  block = std::min<int64_t>(block, kMaxBlock);
  if (block > checked_block_) {
    check_fits_in_memory(estimate_inference_memory(model_->config(), block, state_.position + n).total(),
                         "streaming inference with prefill blocks of " + std::to_string(block) + " tokens");
    checked_block_ = block;
  }
  if (state_.position + n > kMaxPosition)
    fail("feed: the session would pass position " + std::to_string(kMaxPosition));
  SequenceState* seq = &state_;
  for (int64_t s = 0; s < n; s += block) {
    const int64_t m = std::min(block, n - s);
    const bool last = s + m == n;
    float* out = nullptr;
    if (logits != nullptr && all_logits) out = logits + s * V;
    if (logits != nullptr && !all_logits && last) out = logits;
    model_step(*model_, &seq, &m, 1, tokens + s, out, all_logits, scratch_);
  }
}

void Session::save(const std::string& path) const {
  save_sequence_state(path, state_, *model_);
}

void Session::load(const std::string& path) {
  state_ = load_sequence_state(path, *model_);
  attach_to_layers();
}

BatchSession::BatchSession(const Model& model, KvStorage storage) : model_(&model), storage_(storage) {}

int64_t BatchSession::join() {
  sequences_.emplace(next_id_, empty_sequence_state(model_->config(), storage_));
  return next_id_++;
}

int64_t BatchSession::join(const SequenceState& state) {
  check(state.layers.size() == model_->config().layers.size(),
        "batch: the sequence state belongs to another model");
  sequences_.emplace(next_id_, state);
  return next_id_++;
}

int64_t BatchSession::join_from_file(const std::string& path) {
  return join(load_sequence_state(path, *model_));
}

void BatchSession::leave(int64_t id) {
  check(sequences_.erase(id) == 1, "batch: no sequence " + std::to_string(id));
}

SequenceState& BatchSession::find(int64_t id) {
  const auto it = sequences_.find(id);
  check(it != sequences_.end(), "batch: no sequence " + std::to_string(id));
  return it->second;
}

const SequenceState& BatchSession::state(int64_t id) const {
  const auto it = sequences_.find(id);
  check(it != sequences_.end(), "batch: no sequence " + std::to_string(id));
  return it->second;
}

void BatchSession::save(int64_t id, const std::string& path) const {
  save_sequence_state(path, state(id), *model_);
}

void BatchSession::step(const std::vector<Input>& inputs, float* logits) {
  const int V = model_->config().vocab_size;
  step_states_.clear();
  step_counts_.clear();
  step_tokens_.clear();
  std::set<int64_t> seen;
  int64_t rows = 0, longest = 0;
  for (const Input& in : inputs) {
    check(seen.insert(in.id).second, "batch: sequence " + std::to_string(in.id) + " appears twice in a step");
    SequenceState& s = find(in.id);
    check(in.n >= 1 && in.n <= kMaxBlock, "batch: sequence " + std::to_string(in.id) + " brings " +
                                              std::to_string(in.n) + " tokens; a step takes 1 to " +
                                              std::to_string(kMaxBlock));
    check_tokens(in.tokens, in.n, V, "step");
    check(s.position + in.n <= kMaxPosition, "batch: sequence " + std::to_string(in.id) +
                                                 " would pass position " + std::to_string(kMaxPosition));
    step_states_.push_back(&s);
    step_counts_.push_back(in.n);
    step_tokens_.insert(step_tokens_.end(), in.tokens, in.tokens + in.n);
    rows += in.n;
    longest = std::max(longest, s.position + in.n);
  }
  const bool packed = step_states_.size() > 1;  // model_step packs the weights for such steps
  if (rows > checked_rows_ || (packed && !checked_packed_)) {
    check_fits_in_memory(estimate_inference_memory(model_->config(), rows, longest, packed).total(),
                         "a batched step of " + std::to_string(rows) + " tokens");
    checked_rows_ = std::max(checked_rows_, rows);
    checked_packed_ = checked_packed_ || packed;
  }
  model_step(*model_, step_states_.data(), step_counts_.data(), step_states_.size(), step_tokens_.data(),
             logits, false, scratch_);
}

}  // namespace bmojo
