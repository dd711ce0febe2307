// A /v1/completions body as the server receives it: parsed and checked, or refused with an error whose JSON
// can be written; what is accepted must be inside every limit.
#include <cstdlib>
#include <string>

#include "serve/api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const bmojo::RequestLimits limits;
  bmojo::ApiError error;
  const auto r = bmojo::parse_completion_request(body, "m", limits, error);
  if (!r) {
    if (error.status < 400 || error.status > 499 || error.message.empty()) std::abort();
    (void)error.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return 0;
  }
  const bool inside =
      r->model == "m" && r->max_tokens >= 0 && r->max_tokens <= limits.max_tokens && r->n >= 1 &&
      r->n <= limits.max_n && r->logprobs >= -1 && r->logprobs <= limits.max_logprobs &&
      static_cast<int>(r->stop.size()) <= limits.max_stop && r->sampling.temperature >= 0.0 &&
      r->sampling.temperature <= 2.0 && r->sampling.top_p > 0.0 && r->sampling.top_p <= 1.0 &&
      r->sampling.top_k >= 0 &&
      (r->prompt_is_text ? !r->prompt_text.empty()
                         : !r->prompt_ids.empty() &&
                               static_cast<int64_t>(r->prompt_ids.size()) <= limits.max_prompt_tokens);
  for (const std::string& s : r->stop)
    if (s.empty() || s.size() > limits.max_stop_bytes) std::abort();
  for (int32_t id : r->prompt_ids)
    if (id < 0) std::abort();
  if (!inside) std::abort();
  r->sampling.validate();
  return 0;
}
