#include "model/config.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/json_io.hpp"

namespace bmojo {

using nlohmann::json;

namespace {

// Reads j[key] into out if present, with a type error that names section.key.
template <class T>
void read(const json& j, const std::string& section, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  const std::string name = "config: '" + section + "." + key + "': ";
  if constexpr (std::is_same_v<T, bool>) {
    check(it->is_boolean(), name + "expected true or false, got " + json_brief(*it));
    out = it->get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // Ranges are checked before converting: 1e10 or 2^40 for an int is an error, never wrapped.
    bool ok = false;
    if (it->is_number_unsigned()) {
      ok = it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else if (it->is_number_integer()) {
      const int64_t v = it->get<int64_t>();
      ok = v >= 0 || std::is_signed_v<T>;
      if constexpr (std::is_signed_v<T>)
        ok = ok && v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
             v <= static_cast<int64_t>(std::numeric_limits<T>::max());
    } else {
      fail(name + "expected an integer, got " + json_brief(*it));
    }
    check(ok, name + json_brief(*it) + " is out of range (" + std::to_string(std::numeric_limits<T>::min()) +
                  " to " + std::to_string(std::numeric_limits<T>::max()) + ")");
    out = it->get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    check(it->is_number(), name + "expected a number, got " + json_brief(*it));
    out = it->get<T>();
    check(std::isfinite(out), name + "must be finite, got " + json_brief(*it));
  } else {
    check(it->is_string(), name + "expected a string, got " + json_brief(*it));
    out = it->get<T>();
    check(out.size() <= 4096, name + "string longer than 4096 characters");
  }
}

void positive(int value, const std::string& key) {
  check(value > 0, "config: '" + key + "' must be positive, got " + std::to_string(value));
}

// Upper limits far above any model this engine can hold, low enough that every size derived from them
// (products of two or three of them) fits in 64 bits and a matrix dimension in an int.
void at_most(int64_t value, int64_t limit, const std::string& key) {
  check(value <= limit,
        "config: '" + key + "' = " + std::to_string(value) + " is above the limit " + std::to_string(limit));
}

}  // namespace

LayerParts layer_parts(char letter, const ModelConfig& c) {
  LayerParts p;
  const bool mixer = letter == 'F' || letter == 'B';
  p.attention = letter != 'M';
  p.fading = mixer && c.fading;
  p.ssm = letter == 'M' || letter == 'B' || p.fading;
  p.fading_projection = p.fading && !c.tie_fading;
  p.innovation = letter == 'B';
  p.eidetic = letter == 'B' && c.eidetic_per_chunk > 0 && c.eidetic_capacity > 0;
  p.mlp = c.d_ff > 0;
  return p;
}

void ModelConfig::validate() const {
  positive(vocab_size, "model.vocab_size");
  positive(d_model, "model.d_model");
  positive(n_heads, "model.n_heads");
  check(n_kv_heads >= 0, "config: 'model.n_kv_heads' must be >= 0 (0 = n_heads)");
  check(d_model % n_heads == 0, "config: 'model.d_model' (" + std::to_string(d_model) +
                                    ") must be divisible by 'model.n_heads' (" + std::to_string(n_heads) +
                                    ")");
  check(n_heads % kv_heads() == 0, "config: 'model.n_heads' (" + std::to_string(n_heads) +
                                       ") must be divisible by 'model.n_kv_heads' (" +
                                       std::to_string(kv_heads()) + ")");
  check(head_dim() % 2 == 0, "config: head dim d_model/n_heads = " + std::to_string(head_dim()) +
                                 " must be even for rotary embeddings");
  check(!layers.empty(), "config: 'model.layers' must name at least one layer");
  bool bmojo = false;
  for (char c : layers) {
    check(c == 'A' || c == 'M' || c == 'F' || c == 'B',
          std::string("config: 'model.layers' has unknown layer letter '") + c +
              "' (known: A attention, M Mamba, F B'MOJO-F, B B'MOJO)");
    bmojo = bmojo || c == 'F' || c == 'B';
  }
  check(window >= 0, "config: 'model.window' must be >= 0 (0 = full span)");
  if (bmojo)
    check(window >= 1, "config: layers F and B need 'model.window' >= 1, got " + std::to_string(window));
  check(eidetic_per_chunk >= 0, "config: 'model.k' must be >= 0, got " + std::to_string(eidetic_per_chunk));
  if (bmojo)
    check(eidetic_per_chunk <= window, "config: 'model.k' (" + std::to_string(eidetic_per_chunk) +
                                           ") must be <= 'model.window' (" + std::to_string(window) + ")");
  check(eidetic_capacity >= 0, "config: 'model.m' must be >= 0, got " + std::to_string(eidetic_capacity));
  check(std::isfinite(tau), "config: 'model.tau' must be finite");
  check(lambda_innov >= 0.0 && std::isfinite(lambda_innov), "config: 'model.lambda_innov' must be >= 0");
  check(eviction == "fifo" || eviction == "lowest_score",
        "config: 'model.eviction' must be \"fifo\" or \"lowest_score\", got \"" + eviction + "\"");
  check(d_ff >= 0, "config: 'model.d_ff' must be >= 0 (0 = no MLP)");
  positive(d_state, "model.d_state");
  positive(expand, "model.expand");
  positive(d_conv, "model.d_conv");
  at_most(vocab_size, 1 << 24, "model.vocab_size");
  at_most(d_model, 1 << 16, "model.d_model");
  at_most(static_cast<int64_t>(layers.size()), 1024, "model.layers (layer count)");
  at_most(window, 1 << 24, "model.window");
  at_most(d_ff, 1 << 20, "model.d_ff");
  at_most(d_state, 1024, "model.d_state");
  at_most(static_cast<int64_t>(expand) * d_model, 1 << 20, "model.expand * model.d_model");
  at_most(d_conv, 256, "model.d_conv");
  at_most(dt_rank, 1 << 16, "model.dt_rank");
  at_most(eidetic_capacity, 1 << 20, "model.m");
  check(dt_rank >= 0, "config: 'model.dt_rank' must be >= 0 (0 = ceil(d_model/16))");
  check(rope_base > 1.0f, "config: 'model.rope_base' must be > 1");
  check(norm_eps > 0.0f, "config: 'model.norm_eps' must be > 0");
}

void TrainConfig::validate() const {
  check(steps >= 0, "config: 'train.steps' must be >= 0");
  positive(batch_size, "train.batch_size");
  positive(grad_accum, "train.grad_accum");
  at_most(grad_accum, 1 << 16, "train.grad_accum");
  check(lr > 0.0f, "config: 'train.lr' must be > 0");
  check(warmup_steps >= 0, "config: 'train.warmup_steps' must be >= 0");
  check(min_lr_ratio >= 0.0f && min_lr_ratio <= 1.0f, "config: 'train.min_lr_ratio' must be in [0, 1]");
  check(weight_decay >= 0.0f, "config: 'train.weight_decay' must be >= 0");
  check(beta1 >= 0.0f && beta1 < 1.0f, "config: 'train.beta1' must be in [0, 1)");
  check(beta2 >= 0.0f && beta2 < 1.0f, "config: 'train.beta2' must be in [0, 1)");
  check(adam_eps > 0.0f, "config: 'train.adam_eps' must be > 0");
  check(grad_clip >= 0.0f, "config: 'train.grad_clip' must be >= 0 (0 = off)");
  check(eval_every >= 0, "config: 'train.eval_every' must be >= 0");
  check(stop_accuracy >= 0.0 && stop_accuracy <= 1.0,
        "config: 'train.stop_accuracy' must be in [0, 1] (0 = never)");
  positive(eval_batches, "train.eval_batches");
  positive(log_every, "train.log_every");
  at_most(batch_size, 1 << 20, "train.batch_size");
  check(checkpoint_every >= 0, "config: 'train.checkpoint_every' must be >= 0");
}

void DataConfig::validate(int vocab_size) const {
  check(task == "mqar" || task == "random" || task == "text",
        "config: 'data.task' must be \"mqar\", \"random\" or \"text\", got \"" + task + "\"");
  if (task == "text") {
    check(!train_tokens.empty(),
          "config: 'data.train_tokens' (a token file from `bmojo data encode`) is "
          "required when data.task is \"text\"");
    check(gap == 0, "config: 'data.gap' must be 0 for the text task");
    check(!tokenizer.empty(), "config: 'data.tokenizer' must be \"byte\" or a SentencePiece model path");
  }
  positive(seq_len, "data.seq_len");
  check(gap >= 0, "config: 'data.gap' must be >= 0");
  at_most(seq_len, 1 << 24, "data.seq_len");
  at_most(gap, 1 << 24, "data.gap");
  if (task == "mqar") {
    positive(num_kv_pairs, "data.num_kv_pairs");
    check(2 * num_kv_pairs <= seq_len, "config: 'data.num_kv_pairs' (" + std::to_string(num_kv_pairs) +
                                           ") needs seq_len >= 2 * num_kv_pairs");
    const int space = (seq_len - 2 * num_kv_pairs) / 2;
    check(num_kv_pairs <= space, "config: MQAR with seq_len " + std::to_string(seq_len) + " has room for " +
                                     std::to_string(space) +
                                     " queries, fewer than num_kv_pairs = " + std::to_string(num_kv_pairs));
    check(num_kv_pairs < vocab_size / 2 - 1 && num_kv_pairs <= vocab_size - vocab_size / 2,
          "config: 'model.vocab_size' (" + std::to_string(vocab_size) + ") too small for " +
              std::to_string(num_kv_pairs) + " distinct keys and values");
    check(power_a > 0.0, "config: 'data.power_a' must be > 0");
  }
}

void Config::validate() const {
  model.validate();
  train.validate();
  data.validate(model.vocab_size);
  // Rows of a training step's matrix products are counted in int.
  at_most(static_cast<int64_t>(train.batch_size) * data.total_length(), (int64_t{1} << 31) - 1,
          "train.batch_size * (data.seq_len + data.gap)");
}

namespace {

// The one table of config fields: reading, writing, `--set` and the list of known keys all come from it.
struct Field {
  const char* section;
  const char* key;
  void (*read)(const json& section_json, Config& c, const Field& f);
  json (*write)(const Config& c);
};

template <auto Section, auto Member>
Field field(const char* section, const char* key) {
  return Field{
      section, key,
      [](const json& j, Config& c, const Field& f) { read(j, f.section, f.key, (c.*Section).*Member); },
      [](const Config& c) { return json((c.*Section).*Member); }};
}

const std::vector<Field>& fields() {
  using M = ModelConfig;
  using Tr = TrainConfig;
  using D = DataConfig;
  constexpr auto m = &Config::model;
  constexpr auto t = &Config::train;
  constexpr auto d = &Config::data;
  static const std::vector<Field> table = {
      field<m, &M::vocab_size>("model", "vocab_size"),
      field<m, &M::d_model>("model", "d_model"),
      field<m, &M::n_heads>("model", "n_heads"),
      field<m, &M::n_kv_heads>("model", "n_kv_heads"),
      field<m, &M::layers>("model", "layers"),
      field<m, &M::window>("model", "window"),
      field<m, &M::d_ff>("model", "d_ff"),
      field<m, &M::d_state>("model", "d_state"),
      field<m, &M::expand>("model", "expand"),
      field<m, &M::d_conv>("model", "d_conv"),
      field<m, &M::dt_rank>("model", "dt_rank"),
      field<m, &M::rope_base>("model", "rope_base"),
      field<m, &M::norm_eps>("model", "norm_eps"),
      field<m, &M::tie_embeddings>("model", "tie_embeddings"),
      field<m, &M::fading>("model", "fading"),
      field<m, &M::tie_fading>("model", "tie_fading"),
      field<m, &M::eidetic_per_chunk>("model", "k"),
      field<m, &M::eidetic_capacity>("model", "m"),
      field<m, &M::tau>("model", "tau"),
      field<m, &M::lambda_innov>("model", "lambda_innov"),
      field<m, &M::eviction>("model", "eviction"),
      field<t, &Tr::steps>("train", "steps"),
      field<t, &Tr::batch_size>("train", "batch_size"),
      field<t, &Tr::grad_accum>("train", "grad_accum"),
      field<t, &Tr::lr>("train", "lr"),
      field<t, &Tr::warmup_steps>("train", "warmup_steps"),
      field<t, &Tr::min_lr_ratio>("train", "min_lr_ratio"),
      field<t, &Tr::weight_decay>("train", "weight_decay"),
      field<t, &Tr::beta1>("train", "beta1"),
      field<t, &Tr::beta2>("train", "beta2"),
      field<t, &Tr::adam_eps>("train", "adam_eps"),
      field<t, &Tr::grad_clip>("train", "grad_clip"),
      field<t, &Tr::eval_every>("train", "eval_every"),
      field<t, &Tr::stop_accuracy>("train", "stop_accuracy"),
      field<t, &Tr::eval_batches>("train", "eval_batches"),
      field<t, &Tr::log_every>("train", "log_every"),
      field<t, &Tr::checkpoint_every>("train", "checkpoint_every"),
      field<t, &Tr::seed>("train", "seed"),
      field<t, &Tr::bf16_matmul>("train", "bf16_matmul"),
      field<d, &D::task>("data", "task"),
      field<d, &D::seq_len>("data", "seq_len"),
      field<d, &D::num_kv_pairs>("data", "num_kv_pairs"),
      field<d, &D::random_non_queries>("data", "random_non_queries"),
      field<d, &D::gap>("data", "gap"),
      field<d, &D::power_a>("data", "power_a"),
      field<d, &D::train_tokens>("data", "train_tokens"),
      field<d, &D::valid_tokens>("data", "valid_tokens"),
      field<d, &D::tokenizer>("data", "tokenizer"),
  };
  return table;
}

constexpr const char* kSections[] = {"model", "train", "data"};

}  // namespace

Config config_from_json(const json& j) {
  Config c;
  check(j.is_object(), "config: must be an object, got " + json_brief(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* s : kSections) known = known || it.key() == s;
    check(known, "config: unknown key 'config." + it.key() + "'");
  }
  for (const char* section : kSections) {
    if (!j.contains(section)) continue;
    const json& sj = j[section];
    check(sj.is_object(), "config: '" + std::string(section) + "' must be an object, got " + json_brief(sj));
    for (auto it = sj.begin(); it != sj.end(); ++it) {
      bool known = false;
      for (const Field& f : fields())
        known = known || (it.key() == f.key && std::string(section) == f.section);
      check(known, "config: unknown key '" + std::string(section) + "." + it.key() + "'");
    }
    for (const Field& f : fields())
      if (std::string(section) == f.section) f.read(sj, c, f);
  }
  return c;
}

json config_to_json(const Config& c) {
  json j = json::object();
  for (const char* section : kSections) j[section] = json::object();
  for (const Field& f : fields()) j[f.section][f.key] = f.write(c);
  return j;
}

Config load_config_file(const std::string& path) {
  const std::string text = read_file(path, "config");
  return config_from_json(parse_json(text, "config: '" + path + "'"));
}

void apply_override(Config& c, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const auto dot = assignment.find('.');
  check(eq != std::string::npos && dot != std::string::npos && dot < eq,
        "override '" + assignment + "' must look like section.key=value (e.g. model.d_model=128)");
  const std::string section = assignment.substr(0, dot);
  const std::string key = assignment.substr(dot + 1, eq - dot - 1);
  const std::string text = assignment.substr(eq + 1);
  // A value that does not parse as JSON is a string (model.layers=BMBM), unless it opens an array or
  // object: then the parse error (nesting included) is the message.
  json value;
  try {
    value = parse_json(text, "override '" + assignment.substr(0, 80) + "'");
  } catch (const Error&) {
    if (!text.empty() && (text.front() == '[' || text.front() == '{')) throw;
    value = text;
  }
  json j = config_to_json(c);
  check(j.contains(section), "override '" + assignment + "': unknown section '" + section + "'");
  check(j[section].contains(key), "override '" + assignment + "': unknown key '" + section + "." + key + "'");
  j[section][key] = value;
  c = config_from_json(j);
}

}  // namespace bmojo
