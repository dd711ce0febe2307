// Data-parallel training under mpirun (OpenMPI on localhost, 2 ranks of 1 thread, --oversubscribe), driven
// as a user runs it: 2 ranks x batch b give the losses (and the distributed evaluation) of 1 process x
// batch 2b, and ranks times micro-batches those of their product; a resumed distributed run continues
// exactly, and on another number of ranks with the same global batch; a killed or hung rank ends the job
// with an intact checkpoint; ranks with different configs are refused naming the rank. Skipped when this
// build has no MPI or mpirun is missing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "train/data_parallel.hpp"

namespace bmojo {
namespace {

class Distributed : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    test::ScratchDirTest::SetUp();
    if (!mpi_built_in()) GTEST_SKIP() << "this build has no MPI (libopenmpi-dev not installed)";
    if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found";
  }
  // Runs a shell command line, returning its exit status and stderr; timeout bounds a hung job.
  int run(const std::string& cmd, std::string* err = nullptr) const {
    const std::string err_file = path("stderr.txt");
    const int rc = std::system(("timeout 120 " + cmd + " >" + path("stdout.txt") + " 2>" + err_file).c_str());
    if (err != nullptr) {
      std::ifstream in(err_file);
      err->assign(std::istreambuf_iterator<char>(in), {});
    }
    return rc;
  }
  // Root is allowed (these machines run as root); shared memory between the local ranks; under
  // AddressSanitizer, leak reports of OpenMPI's own start-up allocations are not ours to fix.
  static std::string env() {
    return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
           "ASAN_OPTIONS=detect_leaks=0 ";
  }
  static std::string mpirun(int ranks) {
    return env() + "mpirun --oversubscribe -np " + std::to_string(ranks) + " ";
  }
  static std::string train(int batch, int steps, const std::string& out, const std::string& extra = "") {
    return std::string(BMOJO_BINARY) + " train --threads 1 --steps " + std::to_string(steps) +
           " --set train.batch_size=" + std::to_string(batch) +
           " --set train.log_every=1 --set train.eval_batches=4 --set train.eval_every=0 --out " + out + " " +
           extra;
  }
  std::vector<double> losses(const std::string& dir, const char* key = "loss") const {
    std::vector<double> v;
    std::ifstream in(path(dir) + "/log.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains(key)) v.push_back(j[key].get<double>());
    }
    return v;
  }
  void one_rank_fails(const std::string& name, const std::string& signal, const std::string& extra,
                      const std::string& said);
  static double worst_relative(const std::vector<double>& a, const std::vector<double>& b, size_t from = 0) {
    double worst = 0.0;
    for (size_t i = 0; i < b.size(); ++i)
      worst = std::max(worst, std::fabs(a[from + i] - b[i]) / std::fabs(a[from + i]));
    return worst;
  }
};

// Summed in another order, the gradients differ by rounding (about 1e-9 relative) and so do the losses
// of a stack without eidetic selection (FF: window and fading tokens): 3e-9 at most over 20 steps, on
// AVX-512 and AVX2. A B layer's innovation test then flips a near tie now and then, a jump of 1e-6..1e-5
// that the run keeps, so a B stack is compared on its first step, before any update can differ: loss,
// innovation loss and the reduced gradient's norm. A rank that trained on its own half alone would be
// off by about 3e-3.
constexpr const char* kNoSelection = "--set model.layers=FF";

TEST_F(Distributed, TwoRanksGiveTheLossesOfOneProcessWithTheirCombinedBatch) {
  ASSERT_EQ(run(train(16, 20, path("one"), kNoSelection)), 0);
  std::string err;
  ASSERT_EQ(run(mpirun(2) + train(8, 20, path("two"), kNoSelection), &err), 0) << err;
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u) << "rank 0 alone writes the log";
  EXPECT_LT(worst_relative(a, b), 1e-7);
  std::ifstream in(path("stdout.txt"));
  const std::string out{std::istreambuf_iterator<char>(in), {}};
  EXPECT_NE(out.find("data parallel: 2 ranks x batch 8 = global batch 16"), std::string::npos) << out;
  EXPECT_EQ(out.find("bmojo train | layers"), out.rfind("bmojo train | layers")) << "rank 0 alone prints";
  // The evaluation is shared out (two of the four batches each) and reduced: the single process's result.
  const auto eval_a = losses("one", "eval_loss"), eval_b = losses("two", "eval_loss");
  ASSERT_EQ(eval_a.size(), 1u);
  ASSERT_EQ(eval_b.size(), 1u);
  EXPECT_LT(worst_relative(eval_a, eval_b), 1e-7);
  // The default B stack: its first step reduced over the ranks.
  ASSERT_EQ(run(train(16, 1, path("b_one"))), 0);
  ASSERT_EQ(run(mpirun(2) + train(8, 1, path("b_two")), &err), 0) << err;
  for (const char* key : {"loss", "innovation_loss", "grad_norm"}) {
    const auto x = losses("b_one", key), y = losses("b_two", key);
    ASSERT_EQ(x.size(), 1u) << key;
    ASSERT_EQ(y.size(), 1u) << key;
    EXPECT_LT(worst_relative(x, y), 1e-7) << key;
  }
}

// Ranks and micro-batches multiply: 2 ranks x 2 micro-batches of 4 rows = 1 process x 16 rows.
TEST_F(Distributed, RanksTimesMicroBatchesGiveTheLossesOfTheGlobalBatch) {
  ASSERT_EQ(run(train(16, 20, path("one"), kNoSelection)), 0);
  std::string err;
  ASSERT_EQ(
      run(mpirun(2) + train(4, 20, path("two"), std::string(kNoSelection) + " --set train.grad_accum=2"),
          &err),
      0)
      << err;
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  EXPECT_LT(worst_relative(a, b), 1e-7);
  std::ifstream in(path("stdout.txt"));
  const std::string out{std::istreambuf_iterator<char>(in), {}};
  EXPECT_NE(out.find("2 ranks x batch 4 x 2 micro-batches = global batch 16"), std::string::npos) << out;
}

// A run of 2 ranks continues on 1 process (or the other way) when the global batch stays; another
// global batch is refused, naming both.
TEST_F(Distributed, AResumeMayChangeTheWorldSizeButNotTheGlobalBatch) {
  std::string err;
  ASSERT_EQ(run(mpirun(2) + train(4, 12, path("whole"), kNoSelection), &err), 0) << err;
  ASSERT_EQ(run(mpirun(2) + train(4, 12, path("part"), std::string(kNoSelection) + " --stop-after 6"), &err),
            0)
      << err;
  const std::string ckpt =
      std::string(kNoSelection) + " --resume " + path("part") + "/checkpoint.safetensors";
  ASSERT_EQ(run(train(8, 12, path("rest"), ckpt), &err), 0) << err;
  const auto whole = losses("whole"), rest = losses("rest");
  ASSERT_EQ(rest.size(), 6u);
  EXPECT_LT(worst_relative(whole, rest, 6), 1e-7);
  EXPECT_NE(run(train(4, 12, path("bad"), ckpt), &err), 0);
  EXPECT_NE(err.find("global batch of 8 rows a step, this run's is 4"), std::string::npos) << err;
}

TEST_F(Distributed, ResumedRunContinuesExactly) {
  std::string err;
  ASSERT_EQ(run(mpirun(2) + train(4, 12, path("whole")), &err), 0) << err;
  ASSERT_EQ(run(mpirun(2) + train(4, 12, path("part"), "--stop-after 6"), &err), 0) << err;
  ASSERT_EQ(
      run(mpirun(2) + train(4, 12, path("rest"), "--resume " + path("part") + "/checkpoint.safetensors"),
          &err),
      0)
      << err;
  const auto whole = losses("whole"), rest = losses("rest");
  ASSERT_EQ(whole.size(), 12u);
  ASSERT_EQ(rest.size(), 6u);
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i], whole[6 + i]) << "step " << 7 + i;
}

// Starts a long 2-rank job writing a checkpoint every 5 steps, waits (at most 60 s) for the first one,
// sends `signal` to one rank (the newest process whose command line runs this job's training: mpirun's
// own line matches too, but the ranks start after it), and checks that no process of the job is left
// after at most 30 s, that the job's stderr says `said`, and that the checkpoint is whole: a fresh process
// reads it (an interrupted write would have left the old one).
void Distributed::one_rank_fails(const std::string& name, const std::string& signal, const std::string& extra,
                                 const std::string& said) {
  const std::string out = path(name), ckpt = out + "/checkpoint.safetensors";
  const std::string job = mpirun(2) + train(8, 100000, out, "--set train.checkpoint_every=5 " + extra) +
                          " >" + path("job_out.txt") + " 2>" + path("job_err.txt") + " & echo $!";
  FILE* p = ::popen(("timeout 120 sh -c '" + job + "'").c_str(), "r");
  ASSERT_NE(p, nullptr);
  ::pclose(p);
  bool have_checkpoint = false;
  for (int i = 0; i < 600 && !have_checkpoint; ++i) {
    have_checkpoint = std::filesystem::exists(ckpt);
    if (!have_checkpoint) ::usleep(100 * 1000);
  }
  ASSERT_TRUE(have_checkpoint) << "the job wrote no checkpoint";
  // "[t]rain": the pattern must not match the command line of the shell that runs pkill or pgrep.
  const std::string pattern = std::string(BMOJO_BINARY) + " [t]rain .*--out " + out;
  ASSERT_EQ(std::system(("pkill -" + signal + " -n -f '" + pattern + "'").c_str()), 0) << "no rank to signal";
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    gone = std::system(("pgrep -f '" + pattern + "' >/dev/null").c_str()) != 0;
    if (!gone) ::usleep(100 * 1000);
  }
  if (!gone) std::system(("pkill -9 -f '" + pattern + "'").c_str());
  EXPECT_TRUE(gone) << "ranks were still running 30 s after one got SIG" << signal;
  std::ifstream in(path("job_err.txt"));
  const std::string err{std::istreambuf_iterator<char>(in), {}};
  EXPECT_NE(err.find(said), std::string::npos) << err;
  EXPECT_EQ(run(std::string(BMOJO_BINARY) + " info --checkpoint " + ckpt), 0);
}

// A rank killed mid-run (SIGKILL) ends the whole job with an error within a bounded time.
TEST_F(Distributed, AKilledRankEndsTheJobAndLeavesTheCheckpointWhole) {
  one_rank_fails("killed", "KILL", "", "signal 9");
}

// A rank that hangs (SIGSTOP) ends the job with a clear error once another rank has waited
// --collective-timeout seconds for it.
TEST_F(Distributed, AHungRankEndsTheJobWithinTheTimeout) {
  one_rank_fails("hung", "STOP", "--collective-timeout 3", "one of them is hung or gone");
}

TEST_F(Distributed, RanksWithDifferentConfigsAreRefused) {
  std::string err;
  const std::string env =
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader ";
  const int rc = run(env + "mpirun --oversubscribe -np 1 " + train(4, 3, path("x")) + " : -np 1 " +
                         train(4, 3, path("x"), "--set train.lr=0.01"),
                     &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("rank 1 has another config than rank 0"), std::string::npos) << err;
}

}  // namespace
}  // namespace bmojo
