// The OpenAI-compatible request side of `bmojo serve`: a /v1/completions body parsed and validated
// completely where it enters (types, ranges, limits), before anything is sized from it, and errors in
// OpenAI's shape ({"error": {"message", "type", "param", "code"}}) with the HTTP status that goes with
// them. Pure functions of their input: tests and the fuzz harness call them directly.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "infer/sampler.hpp"

namespace bmojo {

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field, or empty
  std::string code;   // a machine-readable reason, or empty
  nlohmann::json body() const;
};

// The limits a request is checked against (each a `bmojo serve` flag).
struct RequestLimits {
  int64_t max_tokens = 4096;          // per request and choice
  int64_t max_prompt_tokens = 32768;  // after tokenization
  int max_n = 8;
  int max_logprobs = 20;
  int max_stop = 4;
  size_t max_stop_bytes = 256;
  int max_json_depth = 16;
};

struct CompletionRequest {
  std::string model;
  // The prompt as given: text (tokenized by the server) or token ids.
  bool prompt_is_text = true;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  int64_t max_tokens = 16;
  SamplingOptions sampling;  // temperature defaults to 1, as OpenAI's
  bool seeded = false;       // seed given (else the server picks one)
  std::vector<std::string> stop;
  int n = 1;
  int logprobs = -1;  // -1: none; else the number of top alternatives per token (0: only the chosen one)
  bool echo = false;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // bmojo extension: choices[i].token_ids
};

// Deepest nesting of arrays and objects in a JSON text (strings skipped), counted without parsing, so a
// hostile body cannot drive the parser deep.
int json_nesting_depth(const std::string& text);

// Parses and validates a /v1/completions body. `served_model` is the one model this server has.
// Returns the request, or sets `error` (status 400, 404 for an unknown model) and returns nothing.
std::optional<CompletionRequest> parse_completion_request(const std::string& body,
                                                          const std::string& served_model,
                                                          const RequestLimits& limits, ApiError& error);

// Parses a JSON object body with the depth limit; sets error for anything else.
std::optional<nlohmann::json> parse_json_object(const std::string& body, const RequestLimits& limits,
                                                ApiError& error);

}  // namespace bmojo
