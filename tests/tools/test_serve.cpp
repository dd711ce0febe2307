// `bmojo serve` as a client meets it: the real server on a loopback port, spoken to over HTTP. Its
// completions match `bmojo generate`, a cache hit matches a cold request bit for bit, concurrent requests
// each get what they would get alone, a client that hangs up frees its slot, bad requests get the right
// 4xx JSON error and the server keeps serving, and SIGTERM stops it cleanly with the cache kept.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "serve/http_client.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::HttpReply;
using test::post_json;

// A checkpoint shared by the tests of this file: B (with eidetic memory), A and M layers, byte vocabulary.
const std::string& checkpoint() {
  static const std::string path =
      [] {
        const fs::path dir = fs::temp_directory_path() / ("bmojo_serve_model_" + std::to_string(::getpid()));
        fs::create_directories(dir);
        std::ofstream(dir / "c.json")
            << R"({"model": {"vocab_size": 300, "d_model": 32, "n_heads": 2, "layers": "BAM",
        "window": 16, "k": 2, "m": 8}, "train": {"steps": 3, "batch_size": 2, "eval_batches": 1},
        "data": {"seq_len": 32, "num_kv_pairs": 2}})";
        const std::string cmd = std::string(BMOJO_BINARY) + " train --config " + (dir / "c.json").string() +
                                " --out " + (dir / "run").string() + " --threads 1 > /dev/null 2>&1";
        EXPECT_EQ(std::system(cmd.c_str()), 0);
        std::atexit([] {
          std::error_code ec;
          fs::remove_all(fs::temp_directory_path() / ("bmojo_serve_model_" + std::to_string(::getpid())), ec);
        });
        return (dir / "run" / "checkpoint.safetensors").string();
      }();
  return path;
}

// Runs a shell command line; its stdout into out; returns pclose's status.
int run_command(const std::string& cmd, std::string& out) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  return ::pclose(p);
}

// A running `bmojo serve`: started with its arguments, the port read from its first line, stopped by
// SIGTERM (and waited for, with a bound) at the end.
class Server {
 public:
  explicit Server(const std::string& args, const std::string& log) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, STDERR_FILENO);
      ::close(out[0]);
      const std::string cmd =
          std::string("exec ") + BMOJO_BINARY + " serve " + checkpoint() + " --port 0 --threads 1 " + args;
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    const size_t at = line.find("127.0.0.1:");
    if (at != std::string::npos) port_ = std::atoi(line.c_str() + at + 10);
  }
  ~Server() { stop(); }
  int port() const { return port_; }
  // SIGTERM, then waits up to `seconds`; returns the exit code (-1: it had to be killed or did not exit).
  int stop(int seconds = 60) {
    if (pid_ <= 0) return exit_code_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < seconds * 20; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return exit_code_ = -1;
  }
  bool running() { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
};

class Serve : public test::ScratchDirTest {
 protected:
  json complete(int port, json body) {
    body["model"] = "model";
    const HttpReply r = post_json(port, "/v1/completions", body.dump());
    EXPECT_EQ(r.status, 200) << body.dump() << "\n" << r.body;
    return r.status == 200 ? json::parse(r.body) : json();
  }
  // A streamed completion: its chunks' text and token ids joined per choice, and the events.
  struct Streamed {
    std::vector<std::string> text;
    std::vector<std::vector<int32_t>> tokens;
    std::vector<std::string> finish;
    std::vector<std::string> events;
  };
  Streamed stream(int port, json body) {
    body["model"] = "model";
    body["stream"] = true;
    const HttpReply r = post_json(port, "/v1/completions", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.headers.count("content-type") ? r.headers.at("content-type") : "", "text/event-stream");
    Streamed s;
    const int n = body.value("n", 1);
    s.text.resize(n);
    s.tokens.resize(n);
    s.finish.resize(n);
    s.events = test::sse_events(r.body);
    for (const std::string& e : s.events) {
      if (e == "[DONE]") continue;
      const json j = json::parse(e);
      if (!j.contains("choices")) continue;  // an error event, or the usage
      for (const json& c : j["choices"]) {
        const int i = c["index"];
        s.text[i] += c["text"].get<std::string>();
        for (const json& t : c.value("token_ids", json::array())) s.tokens[i].push_back(t);
        if (!c["finish_reason"].is_null()) s.finish[i] = c["finish_reason"];
      }
    }
    return s;
  }
  json generate(const std::string& args) {
    const std::string cmd =
        std::string(BMOJO_BINARY) + " generate " + checkpoint() + " --json --threads 1 " + args;
    std::string out;
    EXPECT_EQ(run_command(cmd, out), 0) << cmd;
    return json::parse(out);
  }
  static std::string ids_text(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t t : ids) {
      if (!s.empty()) s += ' ';
      s += std::to_string(t);
    }
    return s;
  }
  std::string log() const { return path("serve.log"); }
};

TEST_F(Serve, CompletionsMatchGenerateWithAndWithoutStreaming) {
  Server server("--model-name model", log());
  ASSERT_GT(server.port(), 0);
  const std::vector<int32_t> prompt = test::random_tokens(40, 256, 3);
  for (const std::string& sampling : {std::string("greedy"), std::string("sampled")}) {
    json body = {{"prompt", prompt}, {"max_tokens", 24}, {"return_token_ids", true}};
    std::string flags = "-n 24 --ids -p '" + ids_text(prompt) + "'";
    if (sampling == "greedy") {
      body["temperature"] = 0;
      flags += " -t 0";
    } else {
      body.update({{"temperature", 0.9}, {"top_k", 50}, {"top_p", 0.95}, {"seed", 11}});
      flags += " -t 0.9 --top-k 50 --top-p 0.95 --seed 11";
    }
    const json expected = generate(flags)["tokens"];
    const json plain = complete(server.port(), body);
    ASSERT_FALSE(plain.is_null());
    EXPECT_EQ(plain["choices"][0]["token_ids"], expected) << sampling;
    EXPECT_EQ(plain["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(plain["usage"]["prompt_tokens"], 40);
    EXPECT_EQ(plain["usage"]["completion_tokens"], 24);
    const Streamed s = stream(server.port(), body);
    EXPECT_EQ(json(s.tokens[0]), expected) << sampling;
    EXPECT_EQ(s.text[0], plain["choices"][0]["text"]);
    EXPECT_EQ(s.finish[0], "length");
    ASSERT_FALSE(s.events.empty());
    EXPECT_EQ(s.events.back(), "[DONE]");
  }
  // Text in, text out: the same text as generate prints, and n choices are seeds seed, seed + 1, ...
  const json text = complete(server.port(), {{"prompt", "hello"},
                                             {"max_tokens", 12},
                                             {"temperature", 1.0},
                                             {"seed", 5},
                                             {"n", 2},
                                             {"return_token_ids", true}});
  ASSERT_EQ(text["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const json g = generate("-p hello -n 12 -t 1 --seed " + std::to_string(5 + i));
    EXPECT_EQ(text["choices"][i]["token_ids"], g["tokens"]) << i;
    EXPECT_EQ(text["choices"][i]["text"], g["text"]) << i;
  }
  // A stop string (a printable byte the model produced): generation ends at the token that completes it,
  // and the text holds nothing from it on.
  const std::vector<int32_t> made = text["choices"][0]["token_ids"];
  size_t at = 0;
  while (at < made.size() && !(made[at] >= 'a' && made[at] <= 'z')) ++at;
  if (at < made.size()) {
    const std::string stop(1, static_cast<char>(made[at]));
    const json stopped = complete(server.port(), {{"prompt", "hello"},
                                                  {"max_tokens", 12},
                                                  {"temperature", 1.0},
                                                  {"seed", 5},
                                                  {"stop", stop},
                                                  {"return_token_ids", true}});
    EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(stopped["choices"][0]["token_ids"],
              json(std::vector<int32_t>(made.begin(), made.begin() + at + 1)));
    EXPECT_EQ(stopped["choices"][0]["text"].get<std::string>().find(stop), std::string::npos);
  }
  // echo and logprobs.
  const json lp =
      complete(server.port(), {{"prompt", "hello"}, {"max_tokens", 3}, {"temperature", 0}, {"logprobs", 3}});
  const json& l = lp["choices"][0]["logprobs"];
  ASSERT_EQ(l["tokens"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_LE(l["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_GE(l["top_logprobs"][i].size(), 1u);
    // Greedy: the chosen token is the most likely one.
    double best = -1e30;
    for (const auto& [tok, v] : l["top_logprobs"][i].items()) best = std::max(best, v.get<double>());
    EXPECT_DOUBLE_EQ(best, l["token_logprobs"][i].get<double>());
  }
  const json echo =
      complete(server.port(), {{"prompt", "hello"}, {"max_tokens", 3}, {"temperature", 0}, {"echo", true}});
  EXPECT_EQ(echo["choices"][0]["text"].get<std::string>().substr(0, 5), "hello");
  EXPECT_EQ(server.stop(), 0);
}

// --kv-storage bf16: the server's sequences keep their keys and values as bf16 and produce what generate
// produces with the same storage (greedy, token for token; the prompt runs past 2W, so window, fading and
// memory rows are all rounded).
TEST_F(Serve, Bf16KeysAndValuesServeWhatGenerateProducesWithThem) {
  Server server("--model-name model --kv-storage bf16", log());
  ASSERT_GT(server.port(), 0);
  const std::vector<int32_t> prompt = test::random_tokens(40, 256, 4);
  const json expected =
      generate("-n 16 -t 0 --kv-storage bf16 --ids -p '" + ids_text(prompt) + "'")["tokens"];
  const json got =
      complete(server.port(),
               {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}, {"return_token_ids", true}});
  ASSERT_FALSE(got.is_null());
  EXPECT_EQ(got["choices"][0]["token_ids"], expected);
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, ACacheHitGivesExactlyTheColdOutputAndSurvivesARestart) {
  const std::vector<int32_t> shared = test::random_tokens(150, 256, 7);
  std::vector<int32_t> a = shared, b = shared;
  for (int32_t t : test::random_tokens(30, 256, 8)) a.push_back(t);
  for (int32_t t : test::random_tokens(30, 256, 9)) b.push_back(t);
  const json body_b = {{"prompt", b}, {"max_tokens", 16}, {"temperature", 0.7},
                       {"seed", 3},   {"logprobs", 2},    {"return_token_ids", true}};
  json cold;
  {
    Server no_cache("--model-name model --prefill-block 16 --cache-mib 0", log());
    ASSERT_GT(no_cache.port(), 0);
    cold = complete(no_cache.port(), body_b);
    EXPECT_EQ(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  }
  const std::string flags =
      "--model-name model --prefill-block 16 --cache-every 32 --cache-dir " + path("cache");
  {
    Server server(flags, log());
    ASSERT_GT(server.port(), 0);
    complete(server.port(), {{"prompt", a}, {"max_tokens", 1}});
    const json hit = complete(server.port(), body_b);
    EXPECT_EQ(hit["usage"]["prompt_tokens_details"]["cached_tokens"], 128);  // the last multiple of 32 in 150
    EXPECT_EQ(hit["choices"], cold["choices"]);  // token ids, text, log-probabilities: identical
    const HttpReply m = test::http_request(server.port(), "GET", "/metrics");
    EXPECT_NE(m.body.find("bmojo_prefix_cache_hits_total 1"), std::string::npos) << m.body;
    EXPECT_EQ(server.stop(), 0);
  }
  size_t files = 0;
  for (const auto& f : fs::directory_iterator(path("cache"))) files += f.path().extension() == ".state";
  EXPECT_EQ(files, 6u) << "a's states at 32, 64, 96, 128 and 160, and b's at 160";
  // A damaged cache file is reported and skipped, never used.
  std::ofstream(path("cache/0000000000000000.state")) << "not a state";
  Server restarted(flags, log());
  ASSERT_GT(restarted.port(), 0);
  const json again = complete(restarted.port(), body_b);
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], 160) << "b's own state at 160 was kept";
  EXPECT_EQ(again["choices"], cold["choices"]);
  EXPECT_EQ(restarted.stop(), 0);
  std::ifstream in(log());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("skipped"), std::string::npos) << text;
}

TEST_F(Serve, ConcurrentRequestsEachGetWhatTheyWouldGetAlone) {
  Server server("--model-name model --max-batch 8 --prefill-block 32", log());
  ASSERT_GT(server.port(), 0);
  constexpr int kClients = 8;
  std::vector<json> bodies, alone;
  for (int i = 0; i < kClients; ++i) {
    bodies.push_back({{"prompt", test::random_tokens(10 + 37 * i, 256, 100 + i)},
                      {"max_tokens", 60 + 5 * i},
                      {"temperature", 1.0},
                      {"seed", i},
                      {"return_token_ids", true}});
    alone.push_back(complete(server.port(), bodies.back())["choices"][0]["token_ids"]);
  }
  const auto counter = [&](const std::string& name) {
    const std::string m = test::http_request(server.port(), "GET", "/metrics").body;
    const size_t at = m.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::atof(m.c_str() + at + name.size() + 2);
  };
  const double steps0 = counter("bmojo_steps_total"), sequences0 = counter("bmojo_step_sequences_total");
  std::vector<std::future<json>> together;
  for (int i = 0; i < kClients; ++i)
    together.push_back(std::async(std::launch::async, [&, i] {
      if (i % 2) return json(stream(server.port(), bodies[i]).tokens[0]);
      return complete(server.port(), bodies[i])["choices"][0]["token_ids"];
    }));
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(together[i].get(), alone[i]) << "client " << i;
  // They were served together: more than two sequences per step on average (alone: one).
  const double mean_batch =
      (counter("bmojo_step_sequences_total") - sequences0) / (counter("bmojo_steps_total") - steps0);
  EXPECT_GT(mean_batch, 2.0);
  const HttpReply m = test::http_request(server.port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("bmojo_requests_total{outcome=\"finished\"} 16"), std::string::npos) << m.body;
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, AClientThatHangsUpFreesItsSlotAndOverloadIsRefused) {
  Server server("--model-name model --max-batch 1 --max-queue 0 --max-tokens-limit 10000000", log());
  ASSERT_GT(server.port(), 0);
  // Round 0 streams (the hang-up shows at the next event); round 1 does not (the server writes a space a
  // second while a long request runs, and the hang-up shows at the next of those).
  for (int round = 0; round < 2; ++round) {
    const json endless = {
        {"model", "model"}, {"prompt", "hello"}, {"max_tokens", 10000000}, {"stream", round == 0}};
    const int fd = test::connect_loopback(server.port(), 30);
    ASSERT_GE(fd, 0);
    const std::string body = endless.dump();
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    char buf[4096];
    const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(got, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(got)).rfind("HTTP/1.1 200", 0), 0u)
        << std::string(buf, static_cast<size_t>(got));  // the response has begun
    // The one slot is taken: another request is refused at once, with a JSON error.
    const HttpReply busy =
        post_json(server.port(), "/v1/completions", R"({"model": "model", "prompt": "hi", "max_tokens": 2})");
    EXPECT_EQ(busy.status, 429) << busy.body;
    EXPECT_EQ(json::parse(busy.body)["error"]["code"], "queue_full");
    EXPECT_EQ(busy.headers.count("retry-after"), 1u);
    ::close(fd);  // hang up: the request is cancelled and the slot freed
    bool served = false;
    for (int i = 0; i < 100 && !served; ++i) {
      served = post_json(server.port(), "/v1/completions",
                         R"({"model": "model", "prompt": "hi", "max_tokens": 2})")
                   .status == 200;
      if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(served) << "the slot was not freed after the client hung up (round " << round << ")";
  }
  const HttpReply m = test::http_request(server.port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("bmojo_requests_total{outcome=\"cancelled\"} 2"), std::string::npos) << m.body;
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, BadRequestsGetTheRightErrorAndTheServerKeepsServing) {
  Server server(
      "--model-name model --api-key sekret --max-prompt-tokens 64 --max-body-bytes 4096 --read-timeout 1",
      log());
  ASSERT_GT(server.port(), 0);
  const std::vector<std::string> auth = {"Content-Type: application/json", "Authorization: Bearer sekret"};
  struct Case {
    std::string what, body;
    std::vector<std::string> headers;
    int status;
    std::string param;
  };
  const std::string nested = std::string(5000, '[') + std::string(5000, ']');
  const std::vector<Case> cases = {
      {"malformed JSON", R"({"model": "model", "prompt": )", auth, 400, ""},
      {"not an object", R"([1, 2])", auth, 400, ""},
      {"deeply nested",
       R"({"model": "model", "prompt": )" + std::string(40, '[') + "1" + std::string(40, ']') + "}", auth,
       400, ""},
      {"nested past the body limit", nested, auth, 413, ""},
      {"wrong type", R"({"model": "model", "prompt": "a", "max_tokens": "ten"})", auth, 400, "max_tokens"},
      {"unknown model", R"({"model": "gpt-9", "prompt": "a"})", auth, 404, "model"},
      {"negative max_tokens", R"({"model": "model", "prompt": "a", "max_tokens": -1})", auth, 400,
       "max_tokens"},
      {"huge max_tokens", R"({"model": "model", "prompt": "a", "max_tokens": 1e30})", auth, 400,
       "max_tokens"},
      {"prompt over the limit", R"({"model": "model", "prompt": ")" + std::string(100, 'x') + R"("})", auth,
       400, "prompt"},
      {"token outside the vocabulary", R"({"model": "model", "prompt": [1, 2, 300]})", auth, 400, "prompt"},
      {"empty prompt", R"({"model": "model", "prompt": ""})", auth, 400, "prompt"},
      {"unknown argument", R"({"model": "model", "prompt": "a", "best_guess": 1})", auth, 400, "best_guess"},
      {"temperature out of range", R"({"model": "model", "prompt": "a", "temperature": 7})", auth, 400,
       "temperature"},
      {"wrong content type",
       R"({"model": "model", "prompt": "a"})",
       {"Content-Type: text/plain", "Authorization: Bearer sekret"},
       415,
       ""},
      {"no API key", R"({"model": "model", "prompt": "a"})", {"Content-Type: application/json"}, 401, ""},
      {"wrong API key",
       R"({"model": "model", "prompt": "a"})",
       {"Content-Type: application/json", "Authorization: Bearer guess"},
       401,
       ""},
      {"body over the limit", R"({"model": "model", "prompt": ")" + std::string(5000, 'x') + R"("})", auth,
       413, ""},
  };
  for (const Case& c : cases) {
    const HttpReply r = test::http_request(server.port(), "POST", "/v1/completions", c.body, c.headers);
    EXPECT_EQ(r.status, c.status) << c.what << ": " << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << c.what << ": " << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << c.what;
    EXPECT_TRUE(j["error"]["type"].is_string()) << c.what;
    if (!c.param.empty()) {
      EXPECT_EQ(j["error"]["param"], c.param) << c.what;
    }
  }
  EXPECT_EQ(test::http_request(server.port(), "GET", "/nowhere", "", auth).status, 404);
  // A client that sends part of its body, or none of it, is cut off with 408 after the read timeout.
  for (const std::string& sent : {std::string(R"({"model": "mo)"), std::string()}) {
    const int fd = test::connect_loopback(server.port(), 30);
    ASSERT_GE(fd, 0);
    const std::string req =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Authorization: Bearer sekret\r\nContent-Length: 100\r\n\r\n" +
        sent;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    const auto t0 = std::chrono::steady_clock::now();
    const HttpReply r = test::read_reply(fd);
    ::close(fd);
    EXPECT_EQ(r.status, 408) << r.body;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  }
  // A client that trickles its body a byte at a time (each read well inside the timeout) is cut off too:
  // the whole body must arrive within the timeout.
  {
    const int fd = test::connect_loopback(server.port(), 30);
    ASSERT_GE(fd, 0);
    const std::string head =
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Authorization: Bearer sekret\r\nContent-Length: 100\r\n\r\n";
    ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 30; ++i) {  // a byte every 200 ms until the server answers
      pollfd answered{fd, POLLIN, 0};
      if (::poll(&answered, 1, 200) != 0 || ::send(fd, " ", 1, MSG_NOSIGNAL) != 1) break;
    }
    const HttpReply r = test::read_reply(fd);
    ::close(fd);
    EXPECT_EQ(r.status, 408) << r.body;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  }
  // Still serving, and /health needs no key.
  EXPECT_EQ(test::http_request(server.port(), "GET", "/health", "", {}).status, 200);
  const HttpReply ok = test::http_request(server.port(), "POST", "/v1/completions",
                                          R"({"model": "model", "prompt": "a", "max_tokens": 2})", auth);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.stop(), 0);
}

TEST_F(Serve, ModelsTokenizeMetricsAndAGracefulStop) {
  Server server(
      "--model-name model --store " + path("store") + " --max-tokens-limit 10000000 --shutdown-timeout 1",
      log());
  ASSERT_GT(server.port(), 0);
  const json models = json::parse(test::http_request(server.port(), "GET", "/v1/models").body);
  EXPECT_EQ(models["data"][0]["id"], "model");
  const json tok = json::parse(post_json(server.port(), "/tokenize", R"({"prompt": "héllo"})").body);
  EXPECT_EQ(tok["count"], 6);
  const json detok =
      json::parse(post_json(server.port(), "/detokenize", json{{"tokens", tok["tokens"]}}.dump()).body);
  EXPECT_EQ(detok["prompt"], "héllo");
  EXPECT_EQ(post_json(server.port(), "/detokenize", R"({"tokens": [1, -2]})").status, 400);
  // A long request is running when SIGTERM comes: it is cut short after the timeout, with an error event.
  auto running = std::async(std::launch::async, [&] {
    return stream(server.port(), {{"prompt", "hello"}, {"max_tokens", 10000000}});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const HttpReply m = test::http_request(server.port(), "GET", "/metrics");
  for (const char* name :
       {"bmojo_queue_depth", "bmojo_batch_sequences", "bmojo_state_bytes", "bmojo_prefix_cache_hits_total",
        "bmojo_generated_tokens_total", "bmojo_resident_memory_bytes"})
    EXPECT_NE(m.body.find(std::string("\n") + name + " "), std::string::npos) << name;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(server.stop(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  const Streamed s = running.get();
  ASSERT_GE(s.events.size(), 2u);
  EXPECT_EQ(s.events.back(), "[DONE]");
  EXPECT_NE(s.events[s.events.size() - 2].find("shutting_down"), std::string::npos)
      << s.events[s.events.size() - 2];
  // The B layer's evicted entries went to the store, flushed at the stop.
  ASSERT_TRUE(fs::exists(path("store/layer0.bmstore")));
  EXPECT_GT(fs::file_size(path("store/layer0.bmstore")), 4096u);
}

// A client no one here wrote: the official openai npm package (installed by scripts/install-deps.sh into
// tests/serve/clients/node_modules), driven by tests/serve/clients/openai_client.mjs.
TEST_F(Serve, TheOfficialOpenAIClientGetsWhatItExpects) {
  const std::string clients = std::string(BMOJO_SOURCE_DIR) + "/tests/serve/clients";
  ASSERT_TRUE(fs::exists(clients + "/node_modules/openai/package.json"))
      << "the openai npm package is missing: run scripts/install-deps.sh (it runs npm ci in " << clients
      << ")";
  Server server("--model-name model --api-key k1", log());
  ASSERT_GT(server.port(), 0);
  const std::string cmd =
      "node " + clients + "/openai_client.mjs " + std::to_string(server.port()) + " model k1 2>&1";
  std::string out;
  EXPECT_EQ(run_command(cmd, out), 0) << out;
  const json j = json::parse(out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_TRUE(j["ok"].get<bool>()) << out;
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace
}  // namespace bmojo
