// The long-term memory store (SPEC section 6): planted entries come back, exact and approximate search
// agree on clear winners, asynchronous writes never make the caller wait, a torn file reopens with its
// intact entries, a store of another model is refused, and a session feeds it the evicted entries.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "infer/memory_store.hpp"
#include "infer/session.hpp"
#include "model/model.hpp"
#include "test_util.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

class Store : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bmojo_store_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name = "layer.bmstore") const { return (dir_ / name).string(); }
  fs::path dir_;
};

constexpr int kHeads = 2, kDh = 8, kRow = 2 * kHeads * kDh;

// n random entries; entry `planted` gets, in head g, a key of 20 * e_g (a clear winner for query e_g).
void fill(MemoryStore& s, int n, int planted, uint64_t seed) {
  const auto data = test::random_vector(static_cast<size_t>(n) * kRow, seed, 0.3f);
  for (int i = 0; i < n; ++i) {
    std::vector<float> row(data.begin() + static_cast<int64_t>(i) * kRow, data.begin() + (i + 1) * kRow);
    if (i == planted)
      for (int g = 0; g < kHeads; ++g) {
        std::fill(row.begin() + g * kDh, row.begin() + (g + 1) * kDh, 0.0f);
        row[g * kDh + g] = 20.0f;
        row[(kHeads + g) * kDh] = 100.0f + g;  // value marks the entry
      }
    s.add(1000 + i, 0.5f, row.data());
  }
}

std::vector<float> unit_queries() {
  std::vector<float> q(kHeads * kDh, 0.0f);
  for (int g = 0; g < kHeads; ++g) q[g * kDh + g] = 1.0f;
  return q;
}

TEST_F(Store, PlantedEntriesAreRetrievedExactlyAndByTheIndex) {
  for (int n : {50, static_cast<int>(MemoryStore::kAnnThreshold) + 500}) {
    fs::remove_all(dir_);
    MemoryStore s(file(), 42, kHeads, kDh, true);
    fill(s, n, n / 3, 7);
    ASSERT_EQ(s.size(), static_cast<size_t>(n));
    const auto got = s.retrieve(unit_queries().data(), 4);
    ASSERT_EQ(got.size(), static_cast<size_t>(kHeads));
    for (int g = 0; g < kHeads; ++g) {
      ASSERT_EQ(got[g].size(), 4u) << n;
      EXPECT_EQ(got[g][0].position, 1000 + n / 3) << "head " << g << ", " << n << " entries";
      EXPECT_EQ(got[g][0].kv[kDh], 100.0f + g);  // the value of the head's own slice
    }
  }
}

TEST_F(Store, EntriesSurviveReopenAndATornTailIsDropped) {
  {
    MemoryStore s(file(), 42, kHeads, kDh, false);
    fill(s, 30, 12, 3);
    s.flush();
  }
  const auto full = fs::file_size(file());
  fs::resize_file(file(), full - 10);  // the last record torn in the middle
  std::string notice;
  {
    MemoryStore s(file(), 42, kHeads, kDh, true, &notice);
    EXPECT_EQ(s.loaded_from_disk(), 29u);
    EXPECT_NE(notice.find("dropped"), std::string::npos) << notice;
    const auto got = s.retrieve(unit_queries().data(), 1);
    EXPECT_EQ(got[0][0].position, -1) << "entries of an earlier run carry no position of this one";
    EXPECT_EQ(got[0][0].kv[kDh], 100.0f);
    fill(s, 5, -1, 4);  // appends after the intact records
  }
  {
    MemoryStore again(file(), 42, kHeads, kDh, true, &notice);
    EXPECT_EQ(again.size(), 34u);
    EXPECT_TRUE(notice.empty()) << notice;
  }
  // Garbage in the middle of one record: that record alone is lost, the ones after it are kept.
  const size_t record = (fs::file_size(file()) - MemoryStore::kHeaderBytes) / 34;
  {
    std::fstream f(file(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(MemoryStore::kHeaderBytes + 17 * record + record / 2));
    f.write("garbage!", 8);
  }
  MemoryStore cut(file(), 42, kHeads, kDh, true, &notice);
  EXPECT_EQ(cut.size(), 33u);
  EXPECT_NE(notice.find("skipped 1 damaged region"), std::string::npos) << notice;
}

TEST_F(Store, AsynchronousWritesNeverBlockTheCaller) {
  MemoryStore s(file(), 42, kHeads, kDh, false);
  s.set_write_delay_ms(300);  // a very slow disk
  const auto t0 = std::chrono::steady_clock::now();
  fill(s, 1000, 10, 5);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 150.0) << "add() waited for the writer";
  EXPECT_LT(s.size(), 1000u) << "nothing can be committed yet";
  s.flush();
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_EQ(s.retrieve(unit_queries().data(), 1)[1][0].position, 1010);
}

TEST_F(Store, RefusesAnotherModelsStoreAndUnwritablePlaces) {
  { MemoryStore s(file(), 42, kHeads, kDh, true); }
  try {
    MemoryStore other(file(), 43, kHeads, kDh, true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MemoryStore(file(), 42, kHeads, kDh + 2, true), Error);
  std::ofstream(file("plain.txt")) << "x";
  try {
    MemoryStore bad(file("plain.txt") + "/sub/layer.bmstore", 42, kHeads, kDh, true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create directory"), std::string::npos) << e.what();
  }
  std::ofstream(file("junk.bmstore")) << "definitely not a store, but long enough to have a header......";
  EXPECT_THROW(MemoryStore(file("junk.bmstore"), 42, kHeads, kDh, true), Error);
}

ModelConfig store_model() {
  return test::small_bm_config();
}

TEST_F(Store, SessionsWriteEvictedEntriesAndReadThemBack) {
  Model m(store_model());
  test::randomize_model(m, 4);
  const auto tokens = test::random_tokens(45, 37, 6);
  const int V = 37;
  std::vector<float> plain(45 * V), with_r0(45 * V), with_r2(45 * V);
  Session a(m);
  a.feed(tokens.data(), 45, plain.data(), true, 7);

  Session b(m);
  b.attach_store(file("r0"), 0, true);
  b.feed(tokens.data(), 45, with_r0.data(), true, 7);
  EXPECT_EQ(plain, with_r0) << "a store nothing is read from changes nothing";
  // 11 complete chunks promote one entry each; m = 2 keeps two, the rest were evicted into the store.
  ASSERT_TRUE(b.stores()[0]);
  EXPECT_EQ(b.stores()[0]->size(), 9u);
  EXPECT_FALSE(b.stores()[1]) << "M layers have no store";

  Session c(m);
  c.attach_store(file("r2"), 2, true);
  c.feed(tokens.data(), 45, with_r2.data(), true, 7);
  EXPECT_GT(test::relative_error(with_r2, plain), 1e-3) << "retrieved entries are attended";
  // Nothing can have been evicted before chunk 3 completes: the first 12 positions are untouched.
  EXPECT_LT(test::relative_error(with_r2.data(), plain.data(), 12 * V), 1e-6);

  // Prefill in other block sizes reads the same entries.
  Session d(m);
  std::vector<float> one_by_one(45 * V);
  d.attach_store(file("r2b"), 2, true);
  d.feed(tokens.data(), 45, one_by_one.data(), true, 1);
  EXPECT_LT(test::relative_error(one_by_one, with_r2), 1e-4);

  // A later run reopens the store (once this one has closed it: a store has one writer at a time): its
  // entries are there before anything is evicted.
  c = Session(m);
  Session e(m);
  e.attach_store(file("r2"), 2, true);
  EXPECT_EQ(e.stores()[0]->loaded_from_disk(), 9u);
}

TEST_F(Store, StateWithRetrievedEntriesSavesAndContinuesExactly) {
  Model m(store_model());
  test::randomize_model(m, 5);
  const auto tokens = test::random_tokens(40, 37, 8);
  Session whole(m);
  whole.attach_store(file("a"), 2, true);
  std::vector<float> ref(40 * 37), got(19 * 37);
  whole.feed(tokens.data(), 40, ref.data(), true, 3);

  Session first(m);
  first.attach_store(file("b"), 2, true);
  first.feed(tokens.data(), 21, nullptr, false, 3);
  first.save(file("state.bin"));
  first = Session(m);  // closes the store: one writer at a time
  Session second(m);
  second.attach_store(file("b"), 2, true);  // the same store, reopened
  second.load(file("state.bin"));
  second.feed(tokens.data() + 21, 19, got.data(), true, 3);
  EXPECT_LT(test::relative_error(got.data(), ref.data() + 21 * 37, 19 * 37), 1e-5);
}

}  // namespace
}  // namespace bmojo

namespace bmojo {
namespace {

TEST_F(Store, ASecondWriterIsRefused) {
  MemoryStore first(file(), 42, kHeads, kDh, true);
  try {
    MemoryStore second(file(), 42, kHeads, kDh, true);
    ADD_FAILURE() << "two writers opened one store";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another writer"), std::string::npos) << e.what();
  }
}

// A background write that fails (here: a file-size limit, which the writer sees like a full disk) is
// raised by flush(), and the file still ends on a record boundary: a reopen keeps what was written.
TEST_F(Store, AFailedBackgroundWriteIsReportedAndTheFileStaysWhole) {
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  {
    MemoryStore s(file(), 42, kHeads, kDh, false);
    const size_t record = 4 + 8 + 4 + sizeof(float) * kRow + 8;
    rlimit small = old;
    small.rlim_cur = MemoryStore::kHeaderBytes + 3 * record + record / 2;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    std::vector<float> kv(kRow, 1.0f);
    for (int i = 0; i < 3; ++i) s.add(i, 1.0f, kv.data());
    s.flush();
    // The writer fails in the background; the failure surfaces at the next call, an add if the writer got
    // there first (it races the loop), else the flush.
    EXPECT_THROW(
        {
          for (int i = 3; i < 10; ++i) s.add(i, 1.0f, kv.data());
          s.flush();
        },
        Error);
    ::setrlimit(RLIMIT_FSIZE, &old);
    EXPECT_EQ(s.size(), 3u);
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::string notice;
  MemoryStore again(file(), 42, kHeads, kDh, true, &notice);
  EXPECT_EQ(again.loaded_from_disk(), 3u);
  EXPECT_TRUE(notice.empty()) << notice;
}

}  // namespace
}  // namespace bmojo
