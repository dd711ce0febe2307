// `bmojo serve CKPT`: the model behind an OpenAI-compatible HTTP API (src/serve/: the request checks, the
// continuous-batching scheduler, the prefix-state cache, the HTTP side). Binds to 127.0.0.1 unless told
// otherwise; SIGINT or SIGTERM stops it gracefully: new requests are refused, running ones get
// --shutdown-timeout to finish, then the store is flushed and the cache written to --cache-dir.
#include <pthread.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "cli_numbers.hpp"
#include "command.hpp"
#include "common_options.hpp"
#include "core/blas.hpp"
#include "core/error.hpp"
#include "data/tokenizer.hpp"
#include "infer/session.hpp"
#include "model/model.hpp"
#include "serve/http_server.hpp"
#include "serve/prefix_cache.hpp"
#include "serve/scheduler.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {

namespace {

struct ServeOptions {
  std::string checkpoint;
  ServerOptions http;
  SchedulerOptions scheduler;
  int64_t cache_mib = 1024;
  int64_t cache_every = 256;
  std::string cache_dir;
  std::string store_dir;
  int retrieve = 8;
  std::string kv_storage = "f32";
  int shutdown_timeout_s = 30;
  int threads = 0;
};

int run_serve(ServeOptions o) {
  // Signals are taken by one thread (sigwait), so every other thread (OpenMP's, the store's writers, the
  // scheduler, the connections), all started after this, has them blocked.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that went away is a failed write, not the end of the server
  set_num_threads(o.threads > 0 ? o.threads : num_cores());
  if (o.http.api_key.empty())
    if (const char* key = std::getenv("BMOJO_API_KEY")) o.http.api_key = key;
  const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
  Model model(info.config.model);
  load_checkpoint(o.checkpoint, model, nullptr);
  const Tokenizer tokenizer = Tokenizer::load(checkpoint_tokenizer_spec(o.checkpoint, info));
  if (o.http.model_name.empty()) o.http.model_name = std::filesystem::path(o.checkpoint).stem().string();
  o.http.limits.max_n = std::min(o.http.limits.max_n, o.scheduler.max_batch);

  // The sequences' template: empty, with the store (one per B layer, shared by every sequence) attached.
  const KvStorage storage = parse_kv_storage(o.kv_storage, "--kv-storage");
  Session store_owner(model, storage);
  if (!o.store_dir.empty())
    for (const std::string& notice : store_owner.attach_store(o.store_dir, o.retrieve, false))
      std::fprintf(stderr, "[serve] %s\n", notice.c_str());
  PrefixCache cache(static_cast<size_t>(o.cache_mib) << 20, o.cache_every);
  if (!o.cache_dir.empty()) {
    for (const std::string& notice : cache.load(o.cache_dir, model, storage))
      std::fprintf(stderr, "[serve] %s\n", notice.c_str());
    const PrefixCacheStats s = cache.stats();
    std::fprintf(stderr, "[serve] prefix cache: %zu entries (%.1f MiB) read from %s\n", s.entries,
                 s.bytes / 1048576.0, o.cache_dir.c_str());
  }

  Scheduler scheduler(model, tokenizer, cache, o.scheduler, store_owner.state());
  HttpServer server(scheduler, cache, tokenizer, model, o.http);
  const int port = server.bind();
  std::printf("[serve] %s (%s, %lld parameters) listening on http://%s:%d (max batch %d, queue %d)\n",
              o.http.model_name.c_str(), model.config().layers.c_str(),
              static_cast<long long>(model.num_params()), o.http.host.c_str(), port, o.scheduler.max_batch,
              o.scheduler.max_queue);
  std::fflush(stdout);

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "[serve] %s: refusing new requests, finishing running ones (up to %d s)\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", o.shutdown_timeout_s);
    server.refuse_new();
    scheduler.drain(std::chrono::seconds(o.shutdown_timeout_s));
    server.wait_for_responses(5);
    server.stop();
  });
  server.serve();
  signal_thread.join();
  store_owner.flush_stores();
  if (!o.cache_dir.empty()) {
    const size_t written = cache.save(o.cache_dir, model);
    std::fprintf(stderr, "[serve] prefix cache: %zu new entries written to %s\n", written,
                 o.cache_dir.c_str());
  }
  const SchedulerMetrics m = scheduler.metrics();
  std::fprintf(
      stderr,
      "[serve] stopped: %llu requests finished, %llu cancelled, %llu refused; %llu tokens generated\n",
      static_cast<unsigned long long>(m.requests_finished),
      static_cast<unsigned long long>(m.requests_cancelled),
      static_cast<unsigned long long>(m.requests_rejected),
      static_cast<unsigned long long>(m.generated_tokens));
  return 0;
}

}  // namespace

Command serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve a checkpoint over an OpenAI-compatible HTTP API (continuous batching, prefix-state cache)");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--host", o->http.host, "Address to listen on (default 127.0.0.1: this machine only)");
  add_integer(cmd, "--port", o->http.port, "Port (default 8080; 0 = any free port, printed at start)", 0,
              65535);
  cmd->add_option("--api-key", o->http.api_key,
                  "Require 'Authorization: Bearer KEY' (default: $BMOJO_API_KEY, else no key)");
  cmd->add_option("--model-name", o->http.model_name,
                  "Model id clients send (default: the checkpoint's file name)");
  add_integer(cmd, "--max-batch", o->scheduler.max_batch, "Sequences decoded together (default 32)", 1, 4096);
  add_integer(cmd, "--max-queue", o->scheduler.max_queue,
              "Requests waiting for a slot before new ones get 429 (default 128)", 0, 1 << 20);
  add_integer(cmd, "--prefill-block", o->scheduler.prefill_block, "Prompt tokens per chunk (default 256)",
              int64_t{1}, kMaxPrefillBlock);
  add_integer(cmd, "--step-tokens", o->scheduler.step_tokens,
              "Tokens per batched step, decode and prefill together (default 512)", int64_t{1},
              int64_t{1} << 20);
  add_integer(cmd, "--max-tokens-limit", o->http.limits.max_tokens,
              "Largest max_tokens a request may ask (default 4096)", int64_t{0}, int64_t{1} << 30);
  add_integer(cmd, "--max-prompt-tokens", o->http.limits.max_prompt_tokens,
              "Longest prompt in tokens (default 32768)", int64_t{1}, int64_t{1} << 30);
  add_integer(cmd, "--max-n", o->http.limits.max_n, "Most completions per request (default 8)", 1, 4096);
  add_integer(cmd, "--max-body-bytes", o->http.max_body_bytes, "Largest request body (default 1 MiB)",
              size_t{64}, size_t{1} << 30);
  add_integer(cmd, "--read-timeout", o->http.read_timeout_s,
              "Seconds a client may take to send its request (default 10)", 1, 3600);
  add_integer(cmd, "--http-threads", o->http.http_threads,
              "Connection threads (default: max batch + max queue + 8)", 0, 65536);
  add_integer(cmd, "--cache-mib", o->cache_mib, "Prefix-state cache size in MiB (default 1024; 0 = off)",
              int64_t{0}, int64_t{1} << 30);
  add_integer(cmd, "--cache-every", o->cache_every,
              "Keep the prompt's state every this many tokens (a multiple of --prefill-block; default 256)",
              int64_t{1}, int64_t{1} << 30);
  cmd->add_option(
      "--cache-dir", o->cache_dir,
      "Keep the prefix-state cache in this directory across restarts (read at start, written at stop)");
  cmd->add_option("--store", o->store_dir,
                  "Long-term memory store directory for the B layers, shared by all requests");
  add_integer(cmd, "--retrieve", o->retrieve,
              "Store entries read per KV head at each chunk boundary (default 8)", 0, kMaxRetrieve);
  add_kv_storage_option(cmd, o->kv_storage);
  add_integer(cmd, "--shutdown-timeout", o->shutdown_timeout_s,
              "Seconds running requests get to finish after SIGINT/SIGTERM (default 30)", 0, 86400);
  add_integer(cmd, "--threads", o->threads, "Compute threads (default: all cores)", 1, kMaxThreads);
  return {cmd, [o] { return run_serve(*o); }};
}

}  // namespace bmojo
