#include "serve/http_server.hpp"

#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "core/error.hpp"

namespace bmojo {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

// Bodies may hold bytes that are not UTF-8 (a byte-level model's output): replaced, never thrown on.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(e.body()), "application/json");
}

ApiError error_for_status(int status) {
  switch (status) {
    case 404:
      return {404, "invalid_request_error", "no such endpoint", "", "not_found"};
    case 405:
      return {405, "invalid_request_error", "method not allowed on this endpoint", "", ""};
    case 408:
      return {408, "invalid_request_error", "the request was not received in time", "", "timeout"};
    case 413:
      return {413, "invalid_request_error", "the request body is too large", "", "payload_too_large"};
    case 414:
      return {414, "invalid_request_error", "the request URI is too long", "", ""};
    case 400:
      return {400, "invalid_request_error", "malformed HTTP request", "", ""};
    default:
      if (status >= 500) return {status, "server_error", "internal server error", "", ""};
      return {status, "invalid_request_error", "request refused", "", ""};
  }
}

size_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  size_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

// A choice's output accumulated for a non-streamed response (and for a streamed chunk).
struct ChoiceOut {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;
};

json logprobs_json(const std::vector<TokenLogprob>& lps, const Tokenizer& tok, size_t text_offset) {
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string piece = tok.decode(lp.token);
    tokens.push_back(piece);
    values.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [id, v] : lp.top) {
      const std::string alt = tok.decode(id);
      if (!top.contains(alt)) top[alt] = v;
    }
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += piece.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

}  // namespace

struct HttpServer::Impl {
  Scheduler& scheduler;
  PrefixCache& cache;
  const Tokenizer& tokenizer;
  const Model& model;
  ServerOptions o;
  httplib::Server svr;
  std::atomic<bool> refusing{false};
  std::atomic<int> responding{0};  // completion responses being written
  std::atomic<uint64_t> next_id{1};
  std::atomic<uint64_t> unseeded{0};
  const uint64_t seed_base = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  std::mutex status_mu;
  std::map<int, uint64_t> status_counts;

  Impl(Scheduler& s, PrefixCache& c, const Tokenizer& t, const Model& m, ServerOptions opt)
      : scheduler(s), cache(c), tokenizer(t), model(m), o(std::move(opt)) {}

  void routes();
  void completions(const std::string& body, httplib::Response& res);
  // A POST route whose body is read here, within --read-timeout as a whole (httplib's own timeout is per
  // read, so a client trickling a byte at a time would hold a thread for as long as it liked).
  void post(const std::string& pattern,
            std::function<void(const std::string& body, httplib::Response&)> handle);
  std::string metrics_text();
  std::optional<json> json_body(const std::string& body, httplib::Response& res) {
    ApiError e;
    std::optional<json> j = parse_json_object(body, o.limits, e);
    if (!j) send_error(res, e);
    return j;
  }
};

void HttpServer::Impl::routes() {
  svr.set_payload_max_length(o.max_body_bytes);
  svr.set_read_timeout(o.read_timeout_s, 0);
  svr.set_write_timeout(o.write_timeout_s, 0);
  svr.set_keep_alive_timeout(o.keep_alive_s);
  svr.set_keep_alive_max_count(1000);  // httplib's default closes a connection after 5 requests
  const SchedulerOptions& so = scheduler.options();
  const size_t threads = o.http_threads > 0 ? static_cast<size_t>(o.http_threads)
                                            : static_cast<size_t>(so.max_batch + so.max_queue + 8);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // No Nagle delay: a response is written in pieces (headers, body, stream events), and waiting for the
  // client's delayed ACK between them cost 40 ms a request on a kept-alive connection. Accepted sockets
  // inherit the option from the listening one.
  svr.set_socket_options([](int sock) {
    const int one = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  });

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!o.api_key.empty() && req.path != "/health") {
      const std::string auth = req.get_header_value("Authorization");
      if (auth != "Bearer " + o.api_key) {
        send_error(
            res, {401, "invalid_request_error",
                  auth.empty() ? "no API key: send 'Authorization: Bearer KEY'" : "the API key is not valid",
                  "", "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (req.method == "POST") {
      const std::string type = req.get_header_value("Content-Type");
      if (type.rfind("application/json", 0) != 0) {
        send_error(
            res, {415, "invalid_request_error",
                  "the body must be JSON (Content-Type: application/json), got '" + type.substr(0, 64) + "'",
                  "", "unsupported_media_type"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    send_error(res, error_for_status(res.status));
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, {500, "server_error", what, "", ""});
  });
  svr.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    std::lock_guard<std::mutex> lock(status_mu);
    ++status_counts[res.status];
  });

  post("/v1/completions",
       [this](const std::string& body, httplib::Response& res) { completions(body, res); });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json m = {{"id", o.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "bmojo"}};
    res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
  });
  svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != o.model_name) {
      send_error(res, {404, "invalid_request_error", "the model does not exist", "model", "model_not_found"});
      return;
    }
    res.set_content(dump({{"id", o.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "bmojo"}}),
                    "application/json");
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (refusing) {
      res.status = 503;
      res.set_content(dump({{"status", "shutting down"}}), "application/json");
      return;
    }
    res.set_content(dump({{"status", "ok"}}), "application/json");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  post("/tokenize", [this](const std::string& body, httplib::Response& res) {
    const std::optional<json> j = json_body(body, res);
    if (!j) return;
    const auto it = j->find("prompt");
    if (it == j->end() || !it->is_string() || j->size() != 1) {
      send_error(res, {400, "invalid_request_error", "send {\"prompt\": \"text\"}", "prompt", ""});
      return;
    }
    const std::vector<int32_t> ids = tokenizer.encode(it->get<std::string>());
    res.set_content(
        dump({{"tokens", ids}, {"count", ids.size()}, {"max_model_len", o.limits.max_prompt_tokens}}),
        "application/json");
  });
  post("/detokenize", [this](const std::string& body, httplib::Response& res) {
    const std::optional<json> j = json_body(body, res);
    if (!j) return;
    const auto it = j->find("tokens");
    std::vector<int32_t> ids;
    bool ok = it != j->end() && it->is_array() && j->size() == 1;
    for (size_t i = 0; ok && i < it->size(); ++i) {
      const json& t = (*it)[i];
      ok = t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() < model.config().vocab_size;
      if (ok) ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    if (!ok) {
      send_error(
          res, {400, "invalid_request_error",
                "send {\"tokens\": [ids]} with ids in [0, " + std::to_string(model.config().vocab_size) + ")",
                "tokens", ""});
      return;
    }
    res.set_content(dump({{"prompt", tokenizer.decode(ids)}}), "application/json");
  });
}

void HttpServer::Impl::post(const std::string& pattern,
                            std::function<void(const std::string& body, httplib::Response&)> handle) {
  svr.Post(pattern, [this, handle](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader) {
    const std::string length = req.get_header_value("Content-Length");
    if (length.size() > 18 ||
        (!length.empty() && std::strtoull(length.c_str(), nullptr, 10) > o.max_body_bytes)) {
      res.set_header("Connection", "close");
      return send_error(res, error_for_status(413));
    }
    std::string body;
    const auto deadline = Clock::now() + std::chrono::seconds(o.read_timeout_s);
    bool late = false, too_large = false;
    const bool whole = reader([&](const char* data, size_t n) {
      if (body.size() + n > o.max_body_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      late = Clock::now() > deadline;
      return !late;
    });
    if (whole && !late) return handle(body, res);
    res.set_header("Connection", "close");
    if (too_large) return send_error(res, error_for_status(413));
    send_error(res, {408, "invalid_request_error",
                     "the request body did not arrive within " + std::to_string(o.read_timeout_s) + " s (" +
                         std::to_string(body.size()) + " bytes came)",
                     "", "timeout"});
  });
}

void HttpServer::Impl::completions(const std::string& body, httplib::Response& res) {
  // Counted until the response is written: the handler's own, or its content provider's release.
  struct Responding {
    std::atomic<int>& count;
    explicit Responding(std::atomic<int>& c) : count(c) { ++count; }
    ~Responding() { --count; }
  };
  auto responding_now = std::make_shared<Responding>(responding);
  ApiError err;
  std::optional<CompletionRequest> parsed = parse_completion_request(body, o.model_name, o.limits, err);
  if (!parsed) return send_error(res, err);
  const CompletionRequest r = std::move(*parsed);
  const int V = model.config().vocab_size;

  auto job = std::make_shared<Job>();
  job->prompt = r.prompt_is_text ? tokenizer.encode(r.prompt_text) : r.prompt_ids;
  if (static_cast<int64_t>(job->prompt.size()) > o.limits.max_prompt_tokens)
    return send_error(
        res, {400, "invalid_request_error",
              "the prompt has " + std::to_string(job->prompt.size()) + " tokens; this server takes at most " +
                  std::to_string(o.limits.max_prompt_tokens),
              "prompt", "context_length_exceeded"});
  if (job->prompt.empty())
    return send_error(res, {400, "invalid_request_error", "the prompt is empty", "prompt", ""});
  for (int32_t t : job->prompt)
    if (t >= V)
      return send_error(
          res,
          {400, "invalid_request_error",
           "prompt token " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(V) + ")" +
               (r.prompt_is_text ? ": this model's vocabulary is too small for text; send token ids" : ""),
           "prompt", ""});
  job->max_tokens = r.max_tokens;
  job->sampling = r.sampling;
  if (!r.seeded) job->sampling.seed = seed_base + 0x9E3779B97F4A7C15ULL * ++unseeded;
  job->stop = r.stop;
  job->n = r.n;
  job->logprobs = r.logprobs;

  switch (refusing ? Scheduler::Admission::kShuttingDown : scheduler.submit(job)) {
    case Scheduler::Admission::kQueued:
      break;
    case Scheduler::Admission::kQueueFull:
      res.set_header("Retry-After", "1");
      return send_error(
          res, {429, "rate_limit_error",
                "the server is at capacity (every batch slot and queue place is taken); retry later", "",
                "queue_full"});
    case Scheduler::Admission::kShuttingDown:
      return send_error(res, {503, "server_error", "the server is shutting down", "", "shutting_down"});
  }

  struct Stream {
    std::shared_ptr<Job> job;
    CompletionRequest r;
    std::string id, echo;
    int64_t created = 0;
    std::vector<ChoiceOut> choices;
    bool over = false, sent_echo = false;
  };
  auto st = std::make_shared<Stream>();
  st->job = job;
  st->r = r;
  st->id = "cmpl-" + std::to_string(next_id++);
  st->created = static_cast<int64_t>(std::time(nullptr));
  st->choices.resize(r.n);
  if (r.echo) st->echo = r.prompt_is_text ? r.prompt_text : tokenizer.decode(job->prompt);
  const auto usage = [st] {
    const int64_t p = static_cast<int64_t>(st->job->prompt.size()), c = st->job->completion_tokens();
    return json{{"prompt_tokens", p},
                {"completion_tokens", c},
                {"total_tokens", p + c},
                {"prompt_tokens_details", {{"cached_tokens", st->job->cached_tokens()}}}};
  };
  const auto collect = [st](std::vector<ChoiceUpdate>& updates) {
    for (ChoiceUpdate& u : updates) {
      ChoiceOut& c = st->choices[u.index];
      c.text += u.text;
      c.tokens.insert(c.tokens.end(), u.tokens.begin(), u.tokens.end());
      for (TokenLogprob& lp : u.logprobs) c.logprobs.push_back(std::move(lp));
      if (!u.finish_reason.empty()) c.finish_reason = u.finish_reason;
    }
  };
  const auto whole = [this, st, usage] {
    json choices = json::array();
    for (size_t i = 0; i < st->choices.size(); ++i) {
      const ChoiceOut& c = st->choices[i];
      json ch = {{"index", i},
                 {"text", st->echo + c.text},
                 {"logprobs", nullptr},
                 {"finish_reason", c.finish_reason}};
      if (st->r.logprobs >= 0) ch["logprobs"] = logprobs_json(c.logprobs, tokenizer, st->echo.size());
      if (st->r.return_token_ids) ch["token_ids"] = c.tokens;
      choices.push_back(ch);
    }
    return json{{"id", st->id},          {"object", "text_completion"}, {"created", st->created},
                {"model", o.model_name}, {"choices", choices},          {"usage", usage()}};
  };

  if (!r.stream) {
    // Most requests finish quickly: wait a little, then answer with the right status and a length. A longer
    // one is answered in chunks, a space every second (JSON allows leading whitespace), so that a client
    // that went away is noticed (the write fails) and its request cancelled.
    const auto until = Clock::now() + std::chrono::seconds(1);
    std::vector<ChoiceUpdate> updates;
    while (!st->over && Clock::now() < until) {
      st->over =
          job->wait(updates, std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
      collect(updates);
      updates.clear();
    }
    if (st->over) {
      if (const auto e = job->error()) return send_error(res, *e);
      res.set_content(dump(whole()), "application/json");
      return;
    }
    res.set_chunked_content_provider(
        "application/json",
        [st, whole, collect](size_t, httplib::DataSink& sink) {
          // Collects for a second (tokens arrive all the while), then writes one space.
          std::vector<ChoiceUpdate> updates;
          const auto until = Clock::now() + std::chrono::seconds(1);
          while (!st->over && Clock::now() < until) {
            st->over = st->job->wait(
                updates, std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
            collect(updates);
            updates.clear();
          }
          if (!st->over) return sink.write(" ", 1);
          const auto e = st->job->error();
          const std::string body = e ? dump(e->body()) : dump(whole());
          if (!sink.write(body.data(), body.size())) return false;
          sink.done();
          return true;
        },
        [st, responding_now](bool success) {
          if (!success || !st->over) st->job->cancel();
        });
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, usage](size_t, httplib::DataSink& sink) {
        const auto send = [&](const json& j) {
          const std::string event = "data: " + dump(j) + "\n\n";
          return sink.write(event.data(), event.size());
        };
        const auto chunk = [&](int index, const std::string& text, const json& logprobs, const json& finish,
                               const std::vector<int32_t>* tokens) {
          json ch = {{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}};
          if (tokens != nullptr) ch["token_ids"] = *tokens;
          return send({{"id", st->id},
                       {"object", "text_completion"},
                       {"created", st->created},
                       {"model", o.model_name},
                       {"choices", json::array({ch})}});
        };
        if (!st->sent_echo && !st->echo.empty()) {
          for (int i = 0; i < st->r.n; ++i)
            if (!chunk(i, st->echo, nullptr, nullptr, st->r.return_token_ids ? &st->job->prompt : nullptr))
              return false;
        }
        st->sent_echo = true;
        std::vector<ChoiceUpdate> updates;
        st->over = st->job->wait(updates, std::chrono::seconds(1));
        if (updates.empty() && !st->over) {
          static const char kKeepAlive[] = ": keep-alive\n\n";
          return sink.write(kKeepAlive, sizeof kKeepAlive - 1);
        }
        for (const ChoiceUpdate& u : updates) {
          json lp = nullptr;
          if (st->r.logprobs >= 0)
            lp = logprobs_json(u.logprobs, tokenizer, st->echo.size() + st->choices[u.index].text.size());
          const json finish = u.finish_reason.empty() ? json(nullptr) : json(u.finish_reason);
          if (!chunk(u.index, u.text, lp, finish, st->r.return_token_ids ? &u.tokens : nullptr)) return false;
          st->choices[u.index].text += u.text;
        }
        if (!st->over) return true;
        if (const auto e = st->job->error()) {
          if (!send(e->body())) return false;
        } else if (st->r.include_usage) {
          if (!send({{"id", st->id},
                     {"object", "text_completion"},
                     {"created", st->created},
                     {"model", o.model_name},
                     {"choices", json::array()},
                     {"usage", usage()}}))
            return false;
        }
        static const char kDone[] = "data: [DONE]\n\n";
        if (!sink.write(kDone, sizeof kDone - 1)) return false;
        sink.done();
        return true;
      },
      [st, responding_now](bool success) {
        if (!success || !st->over) st->job->cancel();
      });
}

std::string HttpServer::Impl::metrics_text() {
  const SchedulerMetrics m = scheduler.metrics();
  const PrefixCacheStats c = cache.stats();
  std::ostringstream out;
  const auto metric = [&](const char* name, const char* type, const char* help, auto value,
                          const std::string& labels = "") {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << labels << ' ' << value << '\n';
  };
  out << "# HELP bmojo_requests_total Completion requests by outcome\n# TYPE bmojo_requests_total counter\n";
  out << "bmojo_requests_total{outcome=\"finished\"} " << m.requests_finished << '\n';
  out << "bmojo_requests_total{outcome=\"cancelled\"} " << m.requests_cancelled << '\n';
  out << "bmojo_requests_total{outcome=\"failed\"} " << m.requests_failed << '\n';
  out << "bmojo_requests_total{outcome=\"rejected\"} " << m.requests_rejected << '\n';
  {
    std::lock_guard<std::mutex> lock(status_mu);
    out << "# HELP bmojo_http_responses_total HTTP responses by status\n# TYPE bmojo_http_responses_total "
           "counter\n";
    for (const auto& [status, count] : status_counts)
      out << "bmojo_http_responses_total{status=\"" << status << "\"} " << count << '\n';
  }
  metric("bmojo_prompt_tokens_total", "counter", "Prompt tokens of admitted requests", m.prompt_tokens);
  metric("bmojo_cached_prompt_tokens_total", "counter", "Prompt tokens resumed from the prefix-state cache",
         m.cached_prompt_tokens);
  metric("bmojo_prefill_tokens_total", "counter", "Prompt tokens run through the model", m.prefill_tokens);
  metric("bmojo_generated_tokens_total", "counter", "Tokens generated", m.generated_tokens);
  metric("bmojo_steps_total", "counter", "Batched steps", m.steps);
  metric("bmojo_step_rows_total", "counter", "Token rows over all steps", m.step_rows);
  metric("bmojo_step_sequences_total", "counter",
         "Sequences over all steps (divided by steps: the mean batch)", m.step_sequences);
  metric("bmojo_step_seconds_total", "counter", "Seconds spent in steps", m.step_seconds);
  metric("bmojo_queue_depth", "gauge", "Requests waiting for a batch slot", m.queue_depth);
  metric("bmojo_active_requests", "gauge", "Requests being prefilled or decoded", m.active_requests);
  metric("bmojo_active_sequences", "gauge", "Sequences in the batch", m.active_sequences);
  metric("bmojo_batch_sequences", "gauge", "Sequences in the last step", m.last_batch_sequences);
  metric("bmojo_state_bytes", "gauge", "Recurrent state of the active sequences, bytes", m.state_bytes);
  metric("bmojo_prefix_cache_entries", "gauge", "Prefix-state cache entries", c.entries);
  metric("bmojo_prefix_cache_bytes", "gauge", "Prefix-state cache bytes", c.bytes);
  metric("bmojo_prefix_cache_capacity_bytes", "gauge", "Prefix-state cache capacity", c.capacity);
  metric("bmojo_prefix_cache_hits_total", "counter", "Prompts resumed from a cached prefix", c.hits);
  metric("bmojo_prefix_cache_misses_total", "counter", "Prompts with no cached prefix", c.misses);
  metric("bmojo_prefix_cache_evictions_total", "counter", "Entries evicted (least recently used)", c.evicted);
  metric("bmojo_resident_memory_bytes", "gauge", "Resident memory of the server process", resident_bytes());
  return out.str();
}

HttpServer::HttpServer(Scheduler& scheduler, PrefixCache& cache, const Tokenizer& tokenizer,
                       const Model& model, ServerOptions options)
    : impl_(std::make_unique<Impl>(scheduler, cache, tokenizer, model, std::move(options))) {
  impl_->routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const ServerOptions& o = impl_->o;
  const int port = o.port == 0 ? impl_->svr.bind_to_any_port(o.host)
                               : (impl_->svr.bind_to_port(o.host, o.port) ? o.port : -1);
  check(port > 0, "serve: cannot listen on " + o.host + ":" + std::to_string(o.port) +
                      " (in use, not an address of this machine, or not allowed)");
  return port;
}

void HttpServer::serve() {
  impl_->svr.listen_after_bind();
}

void HttpServer::refuse_new() {
  impl_->refusing = true;
}

void HttpServer::wait_for_responses(int seconds) {
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  while (impl_->responding > 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

void HttpServer::stop() {
  impl_->svr.stop();
}

}  // namespace bmojo
