// Data-parallel training under mpirun (OpenMPI on localhost, 2 ranks of 1 thread, --oversubscribe), driven
// as a user runs it: 2 ranks x batch b give the losses of 1 process x batch 2b; a resumed distributed run
// continues exactly; ranks with different configs are refused naming the rank. Skipped when this build
// has no MPI or mpirun is missing.
#include <gtest/gtest.h>
#include <unistd.h>

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
           " --set train.log_every=1 --set train.eval_batches=1 --set train.eval_every=0 --out " + out + " " +
           extra;
  }
  std::vector<double> losses(const std::string& dir) const {
    std::vector<double> v;
    std::ifstream in(path(dir) + "/log.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) v.push_back(j["loss"].get<double>());
    }
    return v;
  }
};

TEST_F(Distributed, TwoRanksGiveTheLossesOfOneProcessWithTheirCombinedBatch) {
  ASSERT_EQ(run(train(16, 20, path("one"))), 0);
  std::string err;
  ASSERT_EQ(run(mpirun(2) + train(8, 20, path("two")), &err), 0) << err;
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u) << "rank 0 alone writes the log";
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / std::fabs(a[i]));
  EXPECT_LT(worst, 1e-5);
  std::ifstream in(path("stdout.txt"));
  const std::string out{std::istreambuf_iterator<char>(in), {}};
  EXPECT_NE(out.find("data parallel: 2 ranks x batch 8 = global batch 16"), std::string::npos) << out;
  EXPECT_EQ(out.find("bmojo train | layers"), out.rfind("bmojo train | layers")) << "rank 0 alone prints";
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

// A rank killed mid-run (SIGKILL, after the first checkpoint) ends the whole job with an error within a
// bounded time, and the checkpoint on disk is whole: it loads.
TEST_F(Distributed, AKilledRankEndsTheJobAndLeavesTheCheckpointWhole) {
  const std::string out = path("killed"), ckpt = out + "/checkpoint.safetensors";
  const std::string job = mpirun(2) + train(8, 100000, out, "--set train.checkpoint_every=5") + " >" +
                          path("job_out.txt") + " 2>" + path("job_err.txt") + " & echo $!";
  FILE* p = ::popen(("timeout 120 sh -c '" + job + "'").c_str(), "r");
  ASSERT_NE(p, nullptr);
  ::pclose(p);
  // Wait (at most 60 s) for the first checkpoint, then kill -9 one rank: the newest process whose command
  // line runs this test's training (mpirun's own line matches too, but the ranks start after it).
  bool have_checkpoint = false;
  for (int i = 0; i < 600 && !have_checkpoint; ++i) {
    have_checkpoint = std::filesystem::exists(ckpt);
    if (!have_checkpoint) ::usleep(100 * 1000);
  }
  ASSERT_TRUE(have_checkpoint) << "the job wrote no checkpoint";
  // "[t]rain": the pattern must not match the command line of the shell that runs pkill or pgrep.
  const std::string pattern = std::string(BMOJO_BINARY) + " [t]rain .*--out " + out;
  ASSERT_EQ(std::system(("pkill -9 -n -f '" + pattern + "'").c_str()), 0) << "no rank to kill";
  // mpirun must end every rank: no bmojo of this job left after at most 30 s.
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    gone = std::system(("pgrep -f '" + pattern + "' >/dev/null").c_str()) != 0;
    if (!gone) ::usleep(100 * 1000);
  }
  if (!gone) std::system(("pkill -9 -f '" + pattern + "'").c_str());
  EXPECT_TRUE(gone) << "ranks were still running 30 s after one was killed";
  std::ifstream in(path("job_err.txt"));
  const std::string err{std::istreambuf_iterator<char>(in), {}};
  EXPECT_NE(err.find("signal 9"), std::string::npos) << err;
  // The checkpoint is whole: a fresh process reads it (an interrupted write would have left the old one).
  EXPECT_EQ(run(std::string(BMOJO_BINARY) + " info --checkpoint " + ckpt), 0);
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
