// The command-line tool as a user runs it: good runs print what they promise, bad input gets one clear
// error line and a non-zero exit, never a crash.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "test_util.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  bool signalled = false;
  std::string out, err;
};

class Cli : public test::ScratchDirTest {
 protected:
  void write(const std::string& name, const std::string& text) const { std::ofstream(path(name)) << text; }

  Result run(const std::string& args) const {
    const std::string err_file = path("stderr.txt");
    const std::string cmd = std::string(BMOJO_BINARY) + " " + args + " 2>" + err_file;
    Result r;
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (pipe == nullptr) {
      ADD_FAILURE() << "cannot start: " << cmd.substr(0, 200);
      return r;
    }
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
    const int status = ::pclose(pipe);
    r.signalled = WIFSIGNALED(status);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream in(err_file);
    r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return r;
  }

  // A clear failure: exits (no signal) with a non-zero code and says `needle` on stderr.
  void expect_error(const std::string& args, const std::string& needle) const {
    const Result r = run(args);
    EXPECT_FALSE(r.signalled) << args;
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_LT(r.exit_code, 128) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
  }

  std::string tiny_config() const {
    return R"({"model": {"vocab_size": 64, "d_model": 16, "n_heads": 2, "layers": "AM"},
               "train": {"steps": 4, "batch_size": 4, "eval_batches": 1, "log_every": 2},
               "data": {"seq_len": 16, "num_kv_pairs": 2}})";
  }
};

TEST_F(Cli, TrainEvalInfoEndToEnd) {
  write("c.json", tiny_config());
  Result r = run("train --config " + path("c.json") + " --out " + path("run") + " --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"loss", "accuracy", "tokens_per_s", "params", "steps"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["steps"], 4);
  EXPECT_NE(r.err.find("step 4/4"), std::string::npos) << "progress goes to stderr with --json";
  ASSERT_TRUE(fs::exists(path("run/checkpoint.safetensors")));
  ASSERT_TRUE(fs::exists(path("run/log.jsonl")));

  r = run("eval " + path("run/checkpoint.safetensors") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(r.out)["accuracy"].get<double>(), j["accuracy"].get<double>());

  r = run("info --checkpoint " + path("run/checkpoint.safetensors") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto info = nlohmann::json::parse(r.out);
  EXPECT_EQ(info["params"], j["params"]);
  EXPECT_NE(info["blas_core"].get<std::string>(), "Haswell") << "OPENBLAS_CORETYPE must not slow bmojo down";

  r = run("train --config " + path("c.json") + " --set train.steps=6 --resume " +
          path("run/checkpoint.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resuming at step 4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 6/6"), std::string::npos) << r.out;

  // --init: a new run from those weights (step 0 to its own steps, another task setting), written to its
  // own directory; --init with --resume, or weights of another shape, are refused.
  r = run("train --config " + path("c.json") + " --set data.gap=8 --steps 3 --init " +
          path("run/checkpoint.safetensors") + " --out " + path("tuned") + " --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["steps"], 3);
  EXPECT_NE(r.err.find("starting from the weights of " + path("run/checkpoint.safetensors")),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("step 3/3"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(path("tuned/checkpoint.safetensors")));
  expect_error("train --config " + path("c.json") + " --init " + path("run/checkpoint.safetensors") +
                   " --resume " + path("run/checkpoint.safetensors"),
               "excludes");
  expect_error("train --config " + path("c.json") + " --set model.d_model=32 --init " +
                   path("run/checkpoint.safetensors"),
               "but the config expects");
}

// `bench --profile`: each kernel's time is counted once (exclusive), so the shares add up to the step.
TEST_F(Cli, BenchProfileAccountsForTheStep) {
  write("c.json", tiny_config());
  const Result r = run("bench --config " + path("c.json") +
                       " --set model.layers=AMB --set model.window=4 --set model.k=2 --set model.m=3 --steps "
                       "2 --warmup 1 --profile --json --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("profile"));
  EXPECT_GT(j["measured_peak_gflops"].get<double>(), 0.0);
  double shares = 0.0;
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& row : j["profile"]) {
    by_name[row["kernel"].get<std::string>()] = row;
    EXPECT_GE(row["share"].get<double>(), 0.0);
    shares += row["share"].get<double>();
  }
  EXPECT_NEAR(shares, 1.0, 0.02) << "kernel shares plus 'other' must add up to the step";
  for (const char* kernel : {"matmul_fp32", "attention_forward", "attention_backward",
                             "selective_scan_forward", "selective_scan_backward", "innovation_forward",
                             "cross_entropy_forward_backward", "adamw_step", "other"})
    EXPECT_TRUE(by_name.count(kernel)) << kernel;
  EXPECT_GT(by_name["matmul_fp32"]["gflops"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(by_name["cross_entropy_forward_backward"]["calls_per_step"].get<double>(), 1.0);

  const Result text = run("bench --config " + path("c.json") + " --steps 1 --warmup 0 --profile --no-peak");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("profile (exclusive time per timed step)"), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("fp32 peak"), std::string::npos) << "--no-peak skips the measurement";
}

// `infer-bench --concurrent ... --profile`: one JSON line per sequence count, the first the baseline (1x),
// each with the batching bound and the decode steps' profile (one model_step per step: calls are counted
// per decode step, not per token or per repetition), and its shares adding up to the decode time;
// --profile alone is refused.
TEST_F(Cli, InferBenchConcurrentProfile) {
  write("c.json", tiny_config());
  const Result r =
      run("infer-bench --config " + path("c.json") +
          " --set model.layers=AB --set model.window=4 --set model.k=2 --set model.m=3 --contexts 9 "
          "--decode 3 --repeats 2 --concurrent 1,3 --profile --json --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<nlohmann::json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0]["sequences"].get<int>(), 1);
  EXPECT_EQ(lines[1]["sequences"].get<int>(), 3);
  EXPECT_DOUBLE_EQ(lines[0]["vs_one"].get<double>(), 1.0);
  // The batching bound: n (w + s) / (w + n s) from the weights' and one sequence's state bytes a step reads.
  EXPECT_DOUBLE_EQ(lines[0]["bound_vs_one"].get<double>(), 1.0);
  const double w = lines[1]["weight_read_bytes_per_step"], s = lines[1]["state_read_bytes_per_sequence_step"];
  EXPECT_GT(s, 0.0);
  EXPECT_LE(s, lines[1]["state_bytes_per_sequence"].get<double>());
  EXPECT_NEAR(lines[1]["bound_vs_one"].get<double>(), 3.0 * (w + s) / (w + 3.0 * s), 1e-9);
  EXPECT_GT(lines[1]["bound_vs_one"].get<double>(), 1.0);
  // The ratio within each of the 2 rounds: 1 for the baseline; for 3 sequences the ratio of the means is a
  // weighted mean of the rounds' ratios, so it lies between the least and the largest.
  ASSERT_EQ(lines[0]["vs_one_rounds"].size(), 2u);
  for (const auto& r : lines[0]["vs_one_rounds"]) EXPECT_DOUBLE_EQ(r.get<double>(), 1.0);
  const std::vector<double> rounds = lines[1]["vs_one_rounds"].get<std::vector<double>>();
  ASSERT_EQ(rounds.size(), 2u);
  const double ratio = lines[1]["vs_one"].get<double>();
  EXPECT_GE(ratio, *std::min_element(rounds.begin(), rounds.end()) * (1.0 - 1e-12));
  EXPECT_LE(ratio, *std::max_element(rounds.begin(), rounds.end()) * (1.0 + 1e-12));
  for (const auto& j : lines) {
    EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0.0);
    ASSERT_TRUE(j.contains("profile")) << j.dump();
    double shares = 0.0;
    std::map<std::string, nlohmann::json> by_name;
    for (const auto& row : j["profile"]) {
      by_name[row["kernel"].get<std::string>()] = row;
      shares += row["share"].get<double>();
    }
    EXPECT_NEAR(shares, 1.0, 0.02) << j.dump();
    for (const char* kernel :
         {"model_step", "attention_step", "bmojo_layer_step", "mamba_layer_step", "other"})
      EXPECT_TRUE(by_name.count(kernel)) << kernel << " in " << j.dump();
    EXPECT_DOUBLE_EQ(by_name["model_step"]["calls_per_step"].get<double>(), 1.0) << j.dump();
  }
  expect_error("infer-bench --config " + path("c.json") + " --contexts 9 --decode 2 --profile",
               "--concurrent");
  // --kv-storage bf16: the same run with the keys and values halved, so each sequence's state (and what a
  // step reads of it) is smaller and the bound of 3 sequences higher; anything but f32/bf16 is refused.
  const Result half =
      run("infer-bench --config " + path("c.json") +
          " --set model.layers=AB --set model.window=4 --set model.k=2 --set model.m=3 --contexts 9 "
          "--decode 3 --repeats 1 --concurrent 1,3 --json --threads 2 --kv-storage bf16 --bandwidth");
  ASSERT_EQ(half.exit_code, 0) << half.err;
  const nlohmann::json h = nlohmann::json::parse(half.out.substr(half.out.rfind('{')));
  // --bandwidth measures the read bandwidth and the fp32 peak too, and gives every count the flops cap:
  // peak / (FLOPs a token x one sequence's tokens/s), peak the larger of the measured and the nominal one,
  // the same for every count.
  const nlohmann::json h1 = nlohmann::json::parse(half.out.substr(0, half.out.find('\n')));
  ASSERT_TRUE(h.contains("flops_cap_vs_one")) << h.dump();
  EXPECT_GT(h["fp32_peak_gflops"].get<double>(), 0.1);
  EXPECT_GT(h["nominal_fp32_peak_gflops"].get<double>(), 0.1);
  EXPECT_GT(h["read_bandwidth_gb_per_s"].get<double>(), 0.1);
  const double flops = h["decode_flops_per_token"];
  EXPECT_GT(flops, 2.0 * lines[1]["weight_read_bytes_per_step"].get<double>() / sizeof(float) / 4.0);
  const double top =
      std::max(h["fp32_peak_gflops"].get<double>(), h["nominal_fp32_peak_gflops"].get<double>());
  EXPECT_NEAR(h["flops_cap_vs_one"].get<double>(),
              top * 1e9 / (flops * h1["decode_tokens_per_s"].get<double>()),
              1e-9 * h["flops_cap_vs_one"].get<double>());
  EXPECT_DOUBLE_EQ(h1["flops_cap_vs_one"].get<double>(), h["flops_cap_vs_one"].get<double>());
  EXPECT_FALSE(lines[1].contains("flops_cap_vs_one")) << "measured with --bandwidth only";
  EXPECT_EQ(h["kv_storage"], "bf16");
  EXPECT_EQ(lines[1]["kv_storage"], "f32");
  EXPECT_LT(h["state_bytes_per_sequence"].get<double>(), lines[1]["state_bytes_per_sequence"].get<double>());
  EXPECT_LT(h["state_read_bytes_per_sequence_step"].get<double>(), s);
  EXPECT_GT(h["bound_vs_one"].get<double>(), lines[1]["bound_vs_one"].get<double>());
  expect_error("infer-bench --config " + path("c.json") + " --contexts 9 --kv-storage fp8", "--kv-storage");
}

// Every letter in one stack, through train, eval (from the checkpoint, which carries the B knobs) and info.
TEST_F(Cli, MixedLetterPatternsTrainAndEvaluate) {
  write("c.json", tiny_config());
  const std::string knobs =
      " --set model.layers=BFMA --set model.window=4 --set model.k=2 --set model.m=3"
      " --set model.eviction=lowest_score --set model.tie_fading=false";
  Result r =
      run("train --config " + path("c.json") + knobs + " --out " + path("run") + " --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NE(r.err.find("innov"), std::string::npos) << "progress shows the innovation loss of B layers";
  r = run("eval " + path("run/checkpoint.safetensors") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(r.out)["accuracy"].get<double>(), j["accuracy"].get<double>());
  r = run("info --checkpoint " + path("run/checkpoint.safetensors") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto info = nlohmann::json::parse(r.out);
  EXPECT_EQ(info["config"]["model"]["layers"], "BFMA");
  EXPECT_EQ(info["config"]["model"]["eviction"], "lowest_score");
}

// Text end to end: tokenizer, token files, training on text, perplexity (parallel and streaming),
// the length sweep and generation with the trained tokenizer.
TEST_F(Cli, TextPipelineEndToEnd) {
  fs::create_directories(path("corpus"));
  std::string text;
  for (int i = 0; i < 400; ++i)
    text +=
        (i % 3 ? "the whale and the ship sailed the sea. " : "Our union is strong and our credit good.\n");
  write("corpus/a.txt", text);
  write("corpus/b.txt", text.substr(0, 9000));
  Result r =
      run("data tokenizer -i " + path("corpus") + " -o " + path("bpe.model") + " --vocab 300 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run("data encode -i " + path("corpus") + " -t " + path("bpe.model") + " -o " + path("t.bmtok"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run("data info " + path("t.bmtok") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto info = nlohmann::json::parse(r.out);
  EXPECT_EQ(info["documents"], 2);
  EXPECT_EQ(info["vocab_size"], 300);
  EXPECT_EQ(info["bytes"], text.size() + 9000);
  EXPECT_LT(info["tokens"].get<int64_t>(), static_cast<int64_t>(text.size() + 9000) / 2);
  write(
      "c.json",
      R"({"model": {"vocab_size": 300, "d_model": 16, "n_heads": 2, "layers": "BA", "window": 8, "k": 2, "m": 4},
                      "train": {"steps": 4, "batch_size": 2, "eval_batches": 2, "log_every": 2},
                      "data": {"task": "text", "seq_len": 32, "train_tokens": ")" +
          path("t.bmtok") + R"(", "tokenizer": ")" + path("bpe.model") + R"("}})");
  r = run("train -c " + path("c.json") + " -o " + path("run") + " --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("perplexity"), std::string::npos) << r.err;
  const std::string ckpt = path("run/checkpoint.safetensors");
  r = run("eval " + ckpt + " --all --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto parallel = nlohmann::json::parse(r.out);
  r = run("eval " + ckpt + " --all --streaming --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto streamed = nlohmann::json::parse(r.out);
  EXPECT_EQ(parallel["labelled"], streamed["labelled"]);
  EXPECT_EQ(parallel["labelled"].get<int64_t>(), (info["tokens"].get<int64_t>() - 1) / 32 * 32);
  EXPECT_NEAR(parallel["bits_per_byte"].get<double>(), streamed["bits_per_byte"].get<double>(), 1e-3);
  r = run("lengthgen " + ckpt + " --tokens " + path("t.bmtok") + " --multiples 1,2,4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lg = nlohmann::json::parse(r.out);
  EXPECT_EQ(lg["per_multiple"].size(), 3u);
  EXPECT_EQ(lg["buckets"].size(), 16u);  // 4T = 128 positions in buckets of T/4 = 8
  r = run("generate " + ckpt + " -p \"The whale\" -n 5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out).contains("text"));
  // The tokenizer is found next to the checkpoint even when the original is gone; a missing one is an error.
  fs::remove(path("bpe.model"));
  EXPECT_EQ(run("generate " + ckpt + " -p x -n 2 --json").exit_code, 0);
  fs::remove(path("run/tokenizer.model"));
  expect_error("generate " + ckpt + " -p x -n 2", "tokenizer it was trained with was not found");
  // Length sweep longer than any document.
  expect_error("lengthgen " + ckpt + " --tokens " + path("t.bmtok") + " --multiples 1,1000", "no document");
}

TEST_F(Cli, BadTextData) {
  write("c.json", R"({"model": {"vocab_size": 256, "d_model": 16, "n_heads": 2, "layers": "A"},
                      "train": {"steps": 1, "batch_size": 2},
                      "data": {"task": "text", "seq_len": 16, "train_tokens": "/nonexistent/x.bmtok"}})");
  expect_error("train -c " + path("c.json"), "/nonexistent/x.bmtok");
  write("d.json", R"({"model": {"vocab_size": 256, "d_model": 16, "n_heads": 2, "layers": "A"},
                      "data": {"task": "text"}})");
  expect_error("train -c " + path("d.json"), "data.train_tokens");
  write("junk.bmtok", "not a token file at all, but long enough to have a header.................");
  expect_error("data info " + path("junk.bmtok"), "bad magic");
  write("doc.txt", "short");
  ASSERT_EQ(run("data encode -i " + path("doc.txt") + " -o " + path("short.bmtok")).exit_code, 0);
  write("e.json", R"({"model": {"vocab_size": 256, "d_model": 16, "n_heads": 2, "layers": "A"},
                      "train": {"steps": 1, "batch_size": 2},
                      "data": {"task": "text", "seq_len": 16, "train_tokens": ")" +
                      path("short.bmtok") + R"("}})");
  expect_error("train -c " + path("e.json"), "fewer than seq_len + 1");
  expect_error("data encode -i " + path("missing_dir") + " -o " + path("x.bmtok"),
               "neither a file nor a directory");
  expect_error("data encode -i " + path("doc.txt") + " -t " + path("doc.txt") + " -o " + path("x.bmtok"),
               "not a SentencePiece model");
}

TEST_F(Cli, BadBmojoKnobs) {
  expect_error("info --set model.layers=BB --set model.window=0", "need 'model.window' >= 1");
  expect_error("info --set model.layers=BB --set model.window=4 --set model.k=5", "'model.k' (5) must be <=");
  expect_error("info --set model.layers=BB --set model.window=4 --set model.eviction=random",
               "model.eviction");
  expect_error("info --set model.m=-1", "'model.m' must be >= 0");
}

TEST_F(Cli, HelpForEveryCommand) {
  for (const char* cmd : {"", "train ", "eval ", "info ", "bench ", "generate ", "infer-bench ", "data ",
                          "data tokenizer ", "data encode ", "data info ", "lengthgen "}) {
    const Result r = run(std::string(cmd) + "--help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << cmd;
  }
}

TEST_F(Cli, MalformedConfig) {
  write("bad.json", R"({"model": {"d_model": 64,)");
  expect_error("train --config " + path("bad.json"), "not valid JSON");
}

TEST_F(Cli, UnknownConfigKey) {
  write("bad.json", R"({"model": {"d_modle": 64}})");
  expect_error("train --config " + path("bad.json"), "unknown key 'model.d_modle'");
  expect_error("train --set model.widht=3", "unknown key 'model.widht'");
}

TEST_F(Cli, WidthNotDivisibleByHeads) {
  expect_error("train --set model.d_model=66 --set model.n_heads=4", "divisible");
}

TEST_F(Cli, UnknownLayerLetter) {
  expect_error("info --set model.layers=AQ", "unknown layer letter 'Q'");
}

TEST_F(Cli, MissingCheckpoint) {
  expect_error("eval " + path("nope.safetensors"), "nope.safetensors");
}

TEST_F(Cli, TruncatedCheckpoint) {
  write("c.json", tiny_config());
  ASSERT_EQ(run("train --config " + path("c.json") + " --out " + path("run")).exit_code, 0);
  const std::string ckpt = path("run/checkpoint.safetensors");
  fs::resize_file(ckpt, fs::file_size(ckpt) - 100);
  expect_error("eval " + ckpt, "truncated");
  expect_error("train --config " + path("c.json") + " --resume " + ckpt, "truncated");
}

TEST_F(Cli, ForeignCheckpoint) {
  write("foreign.safetensors", "PK\x03\x04 this is a zip file, not a checkpoint");
  expect_error("eval " + path("foreign.safetensors"), "not a safetensors file");
}

TEST_F(Cli, CheckpointShapesDisagreeWithConfig) {
  write("c.json", tiny_config());
  ASSERT_EQ(run("train --config " + path("c.json") + " --out " + path("run")).exit_code, 0);
  expect_error("train --config " + path("c.json") + " --set model.d_model=32 --resume " +
                   path("run/checkpoint.safetensors"),
               "has shape");
}

TEST_F(Cli, BadFlags) {
  expect_error("train --threads 0", "--threads");
  expect_error("train --bogus", "bogus");
  expect_error("train --steps many", "--steps");
  expect_error("", "subcommand");
  expect_error("train --set nodot", "section.key=value");
}

// A tiny trained B'MOJO model to run generate on.
class Generate : public Cli {
 protected:
  void SetUp() override {
    Cli::SetUp();
    write("c.json", R"({"model": {"vocab_size": 300, "d_model": 16, "n_heads": 2, "layers": "BM", "window": 4,
                                   "k": 1, "m": 2},
                        "train": {"steps": 2, "batch_size": 2, "eval_batches": 1},
                        "data": {"seq_len": 16, "num_kv_pairs": 2}})");
    ASSERT_EQ(run("train --config " + path("c.json") + " --out " + path("run") + " --threads 1").exit_code,
              0);
    ckpt_ = path("run/checkpoint.safetensors");
  }
  std::string ckpt_;
};

TEST_F(Generate, SavedStateContinuesLikeTheWholePrompt) {
  const Result whole = run("generate " + ckpt_ + " --ids -p '1 2 3 4 5 6 7 8 9 10 11' -n 12 --json");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const Result first =
      run("generate " + ckpt_ + " --ids -p '1 2 3 4 5 6 7' -n 1 --save-state " + path("s.bin"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const Result rest =
      run("generate " + ckpt_ + " --ids -p '8 9 10 11' -n 12 --json --load-state " + path("s.bin"));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  const auto a = nlohmann::json::parse(whole.out), b = nlohmann::json::parse(rest.out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_EQ(a["tokens"].size(), 12u);
  EXPECT_EQ(b["position"], 22);
  // The same prompt from a file and from stdin.
  write("prompt.txt", "1 2 3 4 5 6 7 8 9 10 11\n");
  const Result file =
      run("generate " + ckpt_ + " --ids --prompt-file " + path("prompt.txt") + " -n 12 --json");
  const Result in = run("generate " + ckpt_ + " --ids -n 12 --json < " + path("prompt.txt"));
  ASSERT_EQ(file.exit_code, 0) << file.err;
  ASSERT_EQ(in.exit_code, 0) << in.err;
  EXPECT_EQ(nlohmann::json::parse(file.out)["tokens"], a["tokens"]);
  EXPECT_EQ(nlohmann::json::parse(in.out)["tokens"], a["tokens"]);
  EXPECT_GT(a["state_bytes"].get<int64_t>(), 0);
  // With bf16 keys and values: a smaller state, and its saved state (kept as bf16) continues like the whole
  // prompt run the same way.
  const Result half =
      run("generate " + ckpt_ + " --ids -p '1 2 3 4 5 6 7 8 9 10 11' -n 12 --json --kv-storage bf16");
  ASSERT_EQ(half.exit_code, 0) << half.err;
  ASSERT_EQ(run("generate " + ckpt_ + " --ids -p '1 2 3 4 5 6 7' -n 1 --kv-storage bf16 --save-state " +
                path("h.bin"))
                .exit_code,
            0);
  const Result half_rest =
      run("generate " + ckpt_ + " --ids -p '8 9 10 11' -n 12 --json --load-state " + path("h.bin"));
  ASSERT_EQ(half_rest.exit_code, 0) << half_rest.err;
  const auto h = nlohmann::json::parse(half.out);
  EXPECT_EQ(nlohmann::json::parse(half_rest.out)["tokens"], h["tokens"]);
  EXPECT_LT(h["state_bytes"].get<int64_t>(), a["state_bytes"].get<int64_t>());
  expect_error("generate " + ckpt_ + " --ids -p 1 --kv-storage f16", "--kv-storage");
}

TEST_F(Generate, TextPromptsStreamAndStopStringsAreNotPrinted) {
  const Result r = run("generate " + ckpt_ + " -p 'hello' -n 20 -t 0.9 --top-k 50 --top-p 0.95 --seed 7");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prefill"), std::string::npos);
  EXPECT_NE(r.err.find("decode"), std::string::npos);
  // Stop at the first byte the model produced: nothing of it is printed.
  const Result j = run("generate " + ckpt_ + " -p 'hello' -n 20 -t 0.9 --seed 7 --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto tokens = nlohmann::json::parse(j.out)["tokens"];
  const int first = tokens[0].get<int>();
  if (first < 256 && first != '\'' && first != 0) {
    const std::string stop(1, static_cast<char>(first));
    const Result s =
        run("generate " + ckpt_ + " -p 'hello' -n 20 -t 0.9 --seed 7 --json --stop '" + stop + "'");
    ASSERT_EQ(s.exit_code, 0) << s.err;
    const auto js = nlohmann::json::parse(s.out);
    EXPECT_EQ(js["stop_reason"], "stop_string");
    EXPECT_EQ(js["text"], "");
  }
  const Result ids = run("generate " + ckpt_ + " --ids -p '3 4' -n 5 --stop-id " + std::to_string(first) +
                         " --json -t 0.9 --seed 7");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
}

TEST_F(Generate, StreamingEvaluationAndStores) {
  const Result p = run("eval " + ckpt_ + " --json --batches 2");
  const Result s = run("eval " + ckpt_ + " --json --batches 2 --streaming --prefill-block 3");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const auto pj = nlohmann::json::parse(p.out), sj = nlohmann::json::parse(s.out);
  EXPECT_EQ(sj["mode"], "streaming");
  EXPECT_EQ(pj["accuracy"], sj["accuracy"]);
  EXPECT_NEAR(pj["loss"].get<double>(), sj["loss"].get<double>(), 1e-4);
  const Result st = run("eval " + ckpt_ + " --json --batches 1 --store " + path("evalstore") +
                        " --set data.gap=40 --set model.eviction=lowest_score");
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(nlohmann::json::parse(st.out)["mode"], "streaming+store");
  expect_error("eval " + ckpt_ + " --set model.d_model=32", "memory knobs");
  // generate with a store: a second run reopens what the first one wrote.
  std::string longp;
  for (int i = 0; i < 40; ++i) longp += std::to_string(i % 7 + 1) + " ";
  ASSERT_EQ(run("generate " + ckpt_ + " --ids -p '" + longp + "' -n 2 --store-sync --store " + path("gs"))
                .exit_code,
            0);
  EXPECT_TRUE(fs::exists(path("gs/layer0.bmstore")));
  EXPECT_GT(fs::file_size(path("gs/layer0.bmstore")), 100u);
  const auto size = fs::file_size(path("gs/layer0.bmstore"));
  fs::resize_file(path("gs/layer0.bmstore"), size - 3);  // a killed writer's torn record
  const Result again = run("generate " + ckpt_ + " --ids -p '1 2 3' -n 1 --store " + path("gs"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("dropped"), std::string::npos) << again.err;
}

TEST_F(Generate, BadInput) {
  expect_error("generate " + ckpt_ + " --ids -p '1 2 300'", "outside the vocabulary");
  expect_error("generate " + ckpt_ + " --ids -p '1 x 3'", "not a token id");
  expect_error("generate " + ckpt_ + " -p 'a' --top-p 0", "top-p");
  expect_error("generate " + ckpt_ + " -p 'a' -t -1", "temperature");
  expect_error("generate " + ckpt_ + " -p 'a' --prompt-file " + path("none.txt"), "prompt");
  // A state file from another model, a corrupted one, and one that is not a state at all.
  ASSERT_EQ(run("train --config " + path("c.json") + " --out " + path("other") + " --seed 99 --threads 1")
                .exit_code,
            0);
  ASSERT_EQ(run("generate " + path("other/checkpoint.safetensors") + " --ids -p '1 2' -n 1 --save-state " +
                path("other.bin"))
                .exit_code,
            0);
  expect_error("generate " + ckpt_ + " --ids -p '3' --load-state " + path("other.bin"), "different model");
  std::string bytes;
  {
    std::ifstream in(path("other.bin"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() / 2] ^= 1;
  std::ofstream(path("bad.bin"), std::ios::binary) << bytes;
  expect_error(
      "generate " + path("other/checkpoint.safetensors") + " --ids -p '3' --load-state " + path("bad.bin"),
      "corrupted");
  write("junk.bin", "junk");
  expect_error("generate " + ckpt_ + " --ids -p '3' --load-state " + path("junk.bin"),
               "not a bmojo inference state");
  // A model whose vocabulary cannot hold bytes needs --ids.
  write("small.json", R"({"model": {"vocab_size": 64, "d_model": 16, "n_heads": 2, "layers": "A"},
                          "train": {"steps": 1, "batch_size": 2, "eval_batches": 1},
                          "data": {"seq_len": 16, "num_kv_pairs": 2}})");
  ASSERT_EQ(
      run("train --config " + path("small.json") + " --out " + path("small") + " --threads 1").exit_code, 0);
  expect_error("generate " + path("small/checkpoint.safetensors") + " -p 'hi'", "--ids");
  expect_error("infer-bench --contexts 0", "contexts");
  // Stores: a directory that cannot be made, and a store written by another model.
  write("file.txt", "x");
  expect_error("generate " + ckpt_ + " --ids -p '1 2' --store " + path("file.txt") + "/sub",
               "cannot create directory");
  expect_error("eval " + ckpt_ + " --store " + path("file.txt") + "/sub", "cannot create directory");
  ASSERT_EQ(run("generate " + path("other/checkpoint.safetensors") +
                " --ids -p '1 2 3 4 5 6 7 8 9' -n 1 --store " + path("store"))
                .exit_code,
            0);
  expect_error("generate " + ckpt_ + " --ids -p '1 2' --store " + path("store"), "different model");
}

// Hostile input, one class at a time (issue 13): every case is a clear error, never a crash or a hang.
class Hostile : public Generate {
 protected:
  // Copies a checkpoint with its JSON header changed by edit (the tensor data kept as it is).
  void rewrite_header(const std::string& src, const std::string& dst,
                      const std::function<void(nlohmann::json&)>& edit) const {
    std::ifstream in(src, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t len = 0;
    std::memcpy(&len, bytes.data(), 8);
    nlohmann::json header = nlohmann::json::parse(bytes.substr(8, len));
    edit(header);
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const uint64_t n = text.size();
    std::string out(reinterpret_cast<const char*>(&n), 8);
    out += text + bytes.substr(8 + len);
    std::ofstream(dst, std::ios::binary) << out;
  }
  // The checkpoint with its metadata's config changed (and its checksum dropped, as an older bmojo wrote
  // it, so the config itself is what gets checked).
  std::string with_config(const std::string& name, const std::function<void(nlohmann::json&)>& edit) const {
    rewrite_header(ckpt_, path(name), [&](nlohmann::json& h) {
      nlohmann::json cfg = nlohmann::json::parse(h["__metadata__"]["config"].get<std::string>());
      edit(cfg);
      h["__metadata__"]["config"] = cfg.dump();
      h["__metadata__"].erase("checksum");
    });
    return path(name);
  }
  static std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }
};

TEST_F(Hostile, DeeplyNestedJsonAtEveryEntryPoint) {
  write("deep.json", "{\"model\": " + nested(200000) + "}");
  expect_error("info --config " + path("deep.json"), "nested deeper than 64");
  expect_error("info --set 'model.layers=" + nested(20000) + "'", "nested deeper than 64");
  // A checkpoint whose whole header is one deep array.
  const std::string text = nested(100000);
  const uint64_t n = text.size();
  std::ofstream(path("deep.safetensors"), std::ios::binary)
      << std::string(reinterpret_cast<const char*>(&n), 8) << text;
  expect_error("info --checkpoint " + path("deep.safetensors"), "nested deeper than 64");
  // And a checkpoint whose metadata's config is.
  rewrite_header(ckpt_, path("deepcfg.safetensors"), [&](nlohmann::json& h) {
    h["__metadata__"]["config"] = "{\"model\": " + nested(100000) + "}";
    h["__metadata__"].erase("checksum");
  });
  expect_error("eval " + path("deepcfg.safetensors"), "nested deeper than 64");
}

TEST_F(Hostile, InvalidConfigInCheckpointMetadataIsRefusedByEveryCommand) {
  const std::string bad =
      with_config("bad.safetensors", [](nlohmann::json& c) { c["model"]["n_heads"] = 3; });
  write("t.bin", std::string(64, '\0'));
  const std::string tokens = path("t.bin");
  for (const std::string& cmd :
       {"info --checkpoint " + bad, "eval " + bad, "generate " + bad + " --ids -p '1 2'",
        "lengthgen " + bad + " --tokens " + tokens,
        "parity-dump " + bad + " --tokens " + tokens + " --targets " + tokens + " --out " + path("o.st"),
        "train --config " + path("c.json") + " --resume " + bad})
    expect_error(cmd, "the config in its metadata is invalid");
  // Impossible training state.
  rewrite_header(ckpt_, path("neg.safetensors"), [](nlohmann::json& h) {
    h["__metadata__"]["step"] = "-3";
    h["__metadata__"].erase("checksum");
  });
  expect_error("info --checkpoint " + path("neg.safetensors"), "negative step");
  rewrite_header(ckpt_, path("junkstep.safetensors"), [](nlohmann::json& h) {
    h["__metadata__"]["step"] = "12abc";
    h["__metadata__"].erase("checksum");
  });
  expect_error("info --checkpoint " + path("junkstep.safetensors"), "step is not a number");
  // A checkpoint without a checksum (an older bmojo's) still loads, with a notice.
  const std::string old = with_config("old.safetensors", [](nlohmann::json&) {});
  const Result r = run("info --checkpoint " + old);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("has no checksum"), std::string::npos) << r.err;
}

TEST_F(Hostile, CheckpointCorruptionIsDetected) {
  std::ifstream in(ckpt_, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string flipped = bytes;
  flipped[flipped.size() - 5] ^= 0x10;  // one bit of the last tensor's data
  std::ofstream(path("flip.safetensors"), std::ios::binary) << flipped;
  expect_error("eval " + path("flip.safetensors"), "checksum mismatch");
  // The config edited, checksum left as it was.
  rewrite_header(ckpt_, path("edited.safetensors"), [](nlohmann::json& h) {
    nlohmann::json cfg = nlohmann::json::parse(h["__metadata__"]["config"].get<std::string>());
    cfg["model"]["tau"] = 0.5;
    h["__metadata__"]["config"] = cfg.dump();
  });
  expect_error("generate " + path("edited.safetensors") + " --ids -p '1'", "checksum mismatch");
  // Two tensors made to overlap, and one shifted to leave a hole (checksums dropped: the layout is checked).
  for (const auto& [name, shift, needle] : std::vector<std::tuple<std::string, int64_t, std::string>>{
           {"overlap.safetensors", -4, "overlapping"}, {"hole.safetensors", 4, "hole"}}) {
    rewrite_header(ckpt_, path(name), [&, shift = shift](nlohmann::json& h) {
      h["__metadata__"].erase("checksum");
      for (auto& [key, t] : h.items()) {
        if (key == "__metadata__" || t["data_offsets"][0].get<uint64_t>() == 0) continue;
        t["data_offsets"][0] = t["data_offsets"][0].get<int64_t>() + shift;
        t["data_offsets"][1] = t["data_offsets"][1].get<int64_t>() + shift;
        break;
      }
    });
    expect_error("info --checkpoint " + path(name), needle);
  }
}

TEST_F(Hostile, OutOfRangeNumbersAreErrors) {
  expect_error("generate " + ckpt_ + " --ids -p 1 -n 99999999999999999999", "out of range");
  expect_error("generate " + ckpt_ + " --ids -p 1 --seed 18446744073709551616", "out of range");
  expect_error("train --seed -1", "out of range");
  expect_error("train --steps 1e3", "not an integer");
  expect_error("train --threads 99999", "out of range");
  expect_error("info --set model.d_model=3000000000", "out of range");
  expect_error("info --set model.d_model=1.5", "expected an integer");
  expect_error("info --set train.seed=-5", "out of range");
  expect_error("info --set model.d_model=131072 --set model.n_heads=2", "above the limit");
  expect_error("info --set train.lr=1e999", "train.lr");
  // A config this machine cannot hold is refused with the figure before anything is allocated.
  expect_error("train --set model.d_model=8192 --set model.n_heads=64 --set model.vocab_size=1000000",
               "GiB; this machine has");
}

TEST_F(Hostile, Bf16ProductsWithoutTheCpuFeatureAreAClearError) {
  expect_error("--version >/dev/null; BMOJO_CPU_DISABLE=avx512bf16 " + std::string(BMOJO_BINARY) +
                   " train --steps 1 --set train.bf16_matmul=true",
               "need a CPU with AVX-512 BF16");
}

TEST_F(Hostile, NonRegularFilesAreRefusedAndNeverReplaced) {
  expect_error("info --config /dev/zero", "is a character device, not a regular file");
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  expect_error("eval " + path("fifo"), "is a FIFO, not a regular file");
  expect_error("generate " + ckpt_ + " --ids -p 1 --load-state " + path("fifo"), "FIFO");
  fs::create_directories(path("adir"));
  expect_error("generate " + ckpt_ + " --ids -p 1 --save-state " + path("adir"), "is a directory");
  EXPECT_TRUE(fs::is_directory(path("adir")));
  expect_error("generate " + ckpt_ + " --ids -p 1 --save-state /dev/null", "refusing to replace it");
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
}

TEST_F(Hostile, WriteErrorsExitNonZero) {
  expect_error("info >/dev/full", "writing to standard output failed");
  expect_error("generate " + ckpt_ + " --ids -p '1 2' -n 3 --json >/dev/full",
               "writing to standard output failed");
  // A training log that hits a file-size limit (a full disk, as far as the writer can tell).
  write("long.json", R"({"model": {"vocab_size": 64, "d_model": 16, "n_heads": 2, "layers": "A"},
                         "train": {"steps": 400, "batch_size": 2, "eval_batches": 1, "log_every": 1, "eval_every": 0},
                         "data": {"seq_len": 16, "num_kv_pairs": 2}})");
  const std::string cmd = "bash -c 'ulimit -f 4; exec " + std::string(BMOJO_BINARY) + " train --config " +
                          path("long.json") + " --threads 1 --out " + path("full") + "'";
  const Result r = run("--version >/dev/null; " + cmd);
  EXPECT_FALSE(r.signalled);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("training log"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  // A state file and a token file that cannot be written whole: an error, and nothing left under the name.
  const auto limited = [&](const std::string& args) {
    return "--version >/dev/null; bash -c 'ulimit -f 1; exec " + std::string(BMOJO_BINARY) + " " + args + "'";
  };
  expect_error(
      limited("generate " + ckpt_ + " --ids -p \"1 2 3 4 5 6 7 8 9\" -n 1 --save-state " + path("s.bin")),
      "state file: writing");
  EXPECT_FALSE(fs::exists(path("s.bin")));
  write("doc.txt", std::string(4000, 'x'));
  expect_error(limited("data encode -i " + path("doc.txt") + " -o " + path("t.bmtok")),
               "token file: writing");
  EXPECT_FALSE(fs::exists(path("t.bmtok")));
}

TEST_F(Hostile, DivergenceStopsAndKeepsTheLastGoodCheckpoint) {
  const std::string dir = path("run");  // Generate's run: a 2-step checkpoint
  const Result r = run("train --config " + path("c.json") + " --resume " + ckpt_ + " --out " + dir +
                       " --steps 40 --set train.lr=1e30 --set train.checkpoint_every=1 --threads 1");
  EXPECT_FALSE(r.signalled);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("training diverged at step"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is kept as it was"), std::string::npos) << r.err;
  const Result info = run("info --json --checkpoint " + ckpt_);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_GE(nlohmann::json::parse(info.out)["step"].get<int64_t>(), 2);
}

}  // namespace
}  // namespace bmojo
