#include "serve/api.hpp"

#include <cmath>
#include <limits>
#include <set>

namespace bmojo {

using nlohmann::json;

json ApiError::body() const {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return {{"error", e}};
}

int json_nesting_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

namespace {

// A field's checks: each fails by filling `error` and returning false.
class Fields {
 public:
  Fields(const json& body, ApiError& error) : body_(body), error_(error) {}

  bool bad(const std::string& param, const std::string& message, int status = 400) {
    error_.status = status;
    error_.param = param;
    error_.message = message;
    return false;
  }
  // The field, or null when absent or null.
  const json* get(const std::string& key) {
    const auto it = body_.find(key);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  bool integer(const std::string& key, int64_t lo, int64_t hi, int64_t& out) {
    const json* v = get(key);
    if (v == nullptr) return true;
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (d != std::floor(d) || !std::isfinite(d)) return bad(key, "'" + key + "' must be an integer");
      if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) return range(key, lo, hi);
      out = static_cast<int64_t>(d);
      return true;
    }
    if (!v->is_number_integer()) return bad(key, "'" + key + "' must be an integer");
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() > static_cast<uint64_t>(hi)) return range(key, lo, hi);
      out = static_cast<int64_t>(v->get<uint64_t>());
      if (out < lo) return range(key, lo, hi);
    } else {
      out = v->get<int64_t>();
      if (out < lo || out > hi) return range(key, lo, hi);
    }
    return true;
  }
  bool number(const std::string& key, double lo, double hi, bool lo_open, double& out) {
    const json* v = get(key);
    if (v == nullptr) return true;
    if (!v->is_number()) return bad(key, "'" + key + "' must be a number");
    const double d = v->get<double>();
    if (!std::isfinite(d) || d > hi || d < lo || (lo_open && d == lo))
      return bad(key, "'" + key + "' must be in " + (lo_open ? "(" : "[") + trim(lo) + ", " + trim(hi) +
                          "], got " + v->dump());
    out = d;
    return true;
  }
  bool boolean(const std::string& key, bool& out) {
    const json* v = get(key);
    if (v == nullptr) return true;
    if (!v->is_boolean()) return bad(key, "'" + key + "' must be true or false");
    out = v->get<bool>();
    return true;
  }

 private:
  bool range(const std::string& key, int64_t lo, int64_t hi) {
    return bad(key, "'" + key + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                        "], got " + body_.at(key).dump());
  }
  static std::string trim(double d) {
    std::string s = std::to_string(d);
    while (s.size() > 1 && s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s;
  }
  const json& body_;
  ApiError& error_;
};

bool token_ids(const json& v, std::vector<int32_t>& out) {
  for (const json& t : v) {
    if (!t.is_number_integer() ||
        (t.is_number_integer() && !t.is_number_unsigned() && t.get<int64_t>() < 0) ||
        t.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max()))
      return false;
    out.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return true;
}

}  // namespace

std::optional<json> parse_json_object(const std::string& body, const RequestLimits& limits, ApiError& error) {
  error = {};
  if (json_nesting_depth(body) > limits.max_json_depth) {
    error.message = "the request body nests deeper than " + std::to_string(limits.max_json_depth) + " levels";
    return std::nullopt;
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    error.message = "the request body is not valid JSON";
    return std::nullopt;
  }
  if (!j.is_object()) {
    error.message = "the request body must be a JSON object";
    return std::nullopt;
  }
  return j;
}

std::optional<CompletionRequest> parse_completion_request(const std::string& body,
                                                          const std::string& served_model,
                                                          const RequestLimits& limits, ApiError& error) {
  std::optional<json> parsed = parse_json_object(body, limits, error);
  if (!parsed) return std::nullopt;
  const json& j = *parsed;
  Fields f(j, error);
  CompletionRequest r;
  r.sampling.temperature = 1.0;

  static const std::set<std::string> known = {"model",
                                              "prompt",
                                              "max_tokens",
                                              "temperature",
                                              "top_p",
                                              "top_k",
                                              "seed",
                                              "stop",
                                              "n",
                                              "logprobs",
                                              "echo",
                                              "stream",
                                              "stream_options",
                                              "return_token_ids",
                                              "user",
                                              "presence_penalty",
                                              "frequency_penalty",
                                              "best_of",
                                              "logit_bias",
                                              "suffix"};
  for (const auto& [key, value] : j.items())
    if (known.count(key) == 0) {
      f.bad(key, "unrecognized request argument supplied: " + key.substr(0, 64));
      return std::nullopt;
    }

  const json* model = f.get("model");
  if (model == nullptr) return f.bad("model", "you must provide a model parameter"), std::nullopt;
  if (!model->is_string()) return f.bad("model", "'model' must be a string"), std::nullopt;
  r.model = model->get<std::string>();
  if (r.model != served_model) {
    error.type = "invalid_request_error";
    error.code = "model_not_found";
    f.bad("model",
          "the model '" + r.model.substr(0, 128) + "' does not exist; this server has '" + served_model + "'",
          404);
    return std::nullopt;
  }

  const json* prompt = f.get("prompt");
  if (prompt == nullptr) return f.bad("prompt", "you must provide a prompt"), std::nullopt;
  const json* p = prompt;
  // One prompt per request: a string, token ids, or a list holding exactly one of those.
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
  } else if (p->is_array() && !p->empty() && token_ids(*p, r.prompt_ids)) {
    r.prompt_is_text = false;
  } else if (p->is_array() && p->size() > 1 && ((*p)[0].is_string() || (*p)[0].is_array())) {
    return f.bad("prompt",
                 "one prompt per request: send several requests (or use n for several completions)"),
           std::nullopt;
  } else {
    return f.bad("prompt", "'prompt' must be a string or a non-empty array of token ids (integers >= 0)"),
           std::nullopt;
  }
  if (r.prompt_is_text && r.prompt_text.empty())
    return f.bad("prompt", "the prompt is empty: there is nothing to continue"), std::nullopt;
  if (!r.prompt_is_text && static_cast<int64_t>(r.prompt_ids.size()) > limits.max_prompt_tokens)
    return f.bad("prompt",
                 "the prompt has " + std::to_string(r.prompt_ids.size()) +
                     " tokens; this server takes at most " + std::to_string(limits.max_prompt_tokens),
                 400),
           std::nullopt;

  int64_t n = 1, logprobs = -1, top_k = 0, seed = 0;
  if (!f.integer("max_tokens", 0, limits.max_tokens, r.max_tokens)) return std::nullopt;
  if (!f.number("temperature", 0.0, 2.0, false, r.sampling.temperature)) return std::nullopt;
  if (!f.number("top_p", 0.0, 1.0, true, r.sampling.top_p)) return std::nullopt;
  if (!f.integer("top_k", -1, std::numeric_limits<int32_t>::max(), top_k)) return std::nullopt;
  r.sampling.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
  if (!f.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), seed))
    return std::nullopt;
  r.seeded = f.get("seed") != nullptr;
  r.sampling.seed = static_cast<uint64_t>(seed);
  if (!f.integer("n", 1, limits.max_n, n)) return std::nullopt;
  r.n = static_cast<int>(n);
  if (!f.integer("logprobs", 0, limits.max_logprobs, logprobs)) return std::nullopt;
  if (f.get("logprobs") != nullptr) r.logprobs = static_cast<int>(logprobs);
  if (!f.boolean("echo", r.echo) || !f.boolean("stream", r.stream) ||
      !f.boolean("return_token_ids", r.return_token_ids))
    return std::nullopt;
  if (r.echo && r.logprobs >= 0)
    return f.bad("echo", "echo with logprobs (log-probabilities of the prompt) is not supported"),
           std::nullopt;

  if (const json* s = f.get("stop")) {
    std::vector<json> items;
    if (s->is_string())
      items.push_back(*s);
    else if (s->is_array())
      items.assign(s->begin(), s->end());
    else
      return f.bad("stop", "'stop' must be a string or an array of strings"), std::nullopt;
    if (static_cast<int>(items.size()) > limits.max_stop)
      return f.bad("stop", "at most " + std::to_string(limits.max_stop) + " stop strings"), std::nullopt;
    for (const json& item : items) {
      if (!item.is_string() || item.get<std::string>().empty() ||
          item.get<std::string>().size() > limits.max_stop_bytes)
        return f.bad("stop", "each stop string must be a non-empty string of at most " +
                                 std::to_string(limits.max_stop_bytes) + " bytes"),
               std::nullopt;
      r.stop.push_back(item.get<std::string>());
    }
  }
  if (const json* so = f.get("stream_options")) {
    if (!so->is_object() || (so->contains("include_usage") && !(*so)["include_usage"].is_boolean()))
      return f.bad("stream_options", "'stream_options' must be an object {\"include_usage\": bool}"),
             std::nullopt;
    if (!r.stream) return f.bad("stream_options", "'stream_options' needs \"stream\": true"), std::nullopt;
    r.include_usage = so->value("include_usage", false);
  }
  if (const json* u = f.get("user"); u != nullptr && !u->is_string())
    return f.bad("user", "'user' must be a string"), std::nullopt;
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    double v = 0.0;
    if (!f.number(key, -2.0, 2.0, false, v)) return std::nullopt;
    if (v != 0.0) return f.bad(key, std::string("'") + key + "' is not supported (only 0)"), std::nullopt;
  }
  int64_t best_of = r.n;
  if (!f.integer("best_of", 1, limits.max_n, best_of)) return std::nullopt;
  if (best_of != r.n) return f.bad("best_of", "'best_of' other than n is not supported"), std::nullopt;
  if (const json* lb = f.get("logit_bias"); lb != nullptr && !(lb->is_object() && lb->empty()))
    return f.bad("logit_bias", "'logit_bias' is not supported"), std::nullopt;
  if (const json* sfx = f.get("suffix");
      sfx != nullptr && !(sfx->is_string() && sfx->get<std::string>().empty()))
    return f.bad("suffix", "'suffix' is not supported"), std::nullopt;
  return r;
}

}  // namespace bmojo
