// The HTTP side of `bmojo serve` (Debian's cpp-httplib): OpenAI's /v1/completions (plain and streamed as
// server-sent events), /v1/models, /health, /metrics (Prometheus text), /tokenize and /detokenize. Every
// body is checked where it enters (serve/api.hpp); errors are OpenAI-shaped JSON with the right status.
// Requests go to the scheduler (serve/scheduler.hpp); this side only waits for their updates and writes
// them out, and cancels a request whose client went away (a failed write).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "data/tokenizer.hpp"
#include "model/model.hpp"
#include "serve/api.hpp"
#include "serve/prefix_cache.hpp"
#include "serve/scheduler.hpp"

namespace bmojo {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;         // 0: any free port (bind() says which)
  std::string api_key;     // empty: no key needed
  std::string model_name;  // the id clients name in "model"
  RequestLimits limits;
  size_t max_body_bytes = size_t{1} << 20;
  int read_timeout_s = 10;   // a client that sends its request slower than this is cut off
  int write_timeout_s = 30;  // a client that does not read its response
  int keep_alive_s = 5;
  int http_threads = 0;  // 0: enough for every batch slot and queue place, plus a few
};

class HttpServer {
 public:
  HttpServer(Scheduler& scheduler, PrefixCache& cache, const Tokenizer& tokenizer, const Model& model,
             ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port. Throws bmojo::Error if the address cannot be bound.
  int bind();
  // Serves until stop() (from another thread).
  void serve();
  // New requests get 503 from now on (shutdown has begun); /health says so.
  void refuse_new();
  // Waits up to `seconds` until no completion response is being written (after the scheduler has
  // finished or cut short every request, their last words still have to reach the clients).
  void wait_for_responses(int seconds);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bmojo
