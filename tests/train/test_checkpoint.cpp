#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "test_util.hpp"
#include "train/checkpoint.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("bmojo_ckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

Config small(const std::string& layers = "AM", int d_model = 32) {
  Config c;
  c.model.vocab_size = 64;
  c.model.d_model = d_model;
  c.model.n_heads = 2;
  c.model.layers = layers;
  c.model.d_ff = 16;
  return c;
}

TEST(Checkpoint, RoundTripRestoresWeightsMomentsAndState) {
  TempDir dir;
  const Config c = small();
  Model model(c.model);
  model.init_weights(1);
  AdamW opt(model.layout().slab_size());
  for (size_t i = 0; i < opt.first_moment().size(); ++i) {
    opt.first_moment().data()[i] = 0.001f * static_cast<float>(i % 97);
    opt.second_moment().data()[i] = 0.002f * static_cast<float>(i % 89);
  }
  TrainingState st;
  st.step = 42;
  st.data_position = 43;
  st.rng = Rng(5).state();
  save_checkpoint(dir.file("c.safetensors"), c, model, &opt, st);
  EXPECT_FALSE(fs::exists(dir.file("c.safetensors.tmp")));

  const CheckpointInfo info = read_checkpoint_info(dir.file("c.safetensors"));
  EXPECT_EQ(config_to_json(info.config), config_to_json(c));
  Model loaded(info.config.model);
  AdamW opt2(loaded.layout().slab_size());
  const CheckpointInfo li = load_checkpoint(dir.file("c.safetensors"), loaded, &opt2);
  EXPECT_EQ(li.state.step, 42);
  EXPECT_EQ(li.state.data_position, 43u);
  EXPECT_EQ(li.state.rng, st.rng);
  EXPECT_EQ(opt2.steps_taken(), 42);
  for (const TensorSpec& t : model.layout().tensors()) {
    EXPECT_EQ(0, std::memcmp(model.params() + t.offset, loaded.params() + t.offset, t.numel * 4)) << t.name;
    EXPECT_EQ(0, std::memcmp(opt.first_moment().data() + t.offset, opt2.first_moment().data() + t.offset,
                             t.numel * 4));
    EXPECT_EQ(0, std::memcmp(opt.second_moment().data() + t.offset, opt2.second_moment().data() + t.offset,
                             t.numel * 4));
  }
}

TEST(Checkpoint, TruncatedFileIsReported) {
  TempDir dir;
  const Config c = small();
  Model model(c.model);
  model.init_weights(1);
  const std::string path = dir.file("c.safetensors");
  save_checkpoint(path, c, model, nullptr, TrainingState{});
  fs::resize_file(path, fs::file_size(path) / 2);
  EXPECT_NE(test::error_of([&] { read_checkpoint_info(path); }).find("truncated"), std::string::npos);
  fs::resize_file(path, 5);
  EXPECT_NE(test::error_of([&] { read_checkpoint_info(path); }).find("too short"), std::string::npos);
}

TEST(Checkpoint, ForeignFilesAreRejected) {
  TempDir dir;
  { std::ofstream(dir.file("text.safetensors")) << "this is not a checkpoint at all, just some text"; }
  EXPECT_NE(
      test::error_of([&] { read_checkpoint_info(dir.file("text.safetensors")); }).find("not a safetensors"),
      std::string::npos);
  // A well-formed safetensors file written by someone else: no bmojo metadata.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  {
    std::ofstream out(dir.file("other.safetensors"), std::ios::binary);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << std::string(8, '\0');
  }
  EXPECT_NE(test::error_of([&] {
              read_checkpoint_info(dir.file("other.safetensors"));
            }).find("not a bmojo checkpoint"),
            std::string::npos);
}

TEST(Checkpoint, ShapesThatDisagreeWithTheConfigAreNamed) {
  TempDir dir;
  const Config c = small("AM", 32);
  Model model(c.model);
  save_checkpoint(dir.file("c.safetensors"), c, model, nullptr, TrainingState{});
  Model wider(small("AM", 64).model);
  const std::string e = test::error_of([&] { load_checkpoint(dir.file("c.safetensors"), wider, nullptr); });
  EXPECT_NE(e.find("embedding"), std::string::npos) << e;
  EXPECT_NE(e.find("[64, 32]"), std::string::npos) << e;
  Model other(small("MA", 32).model);
  EXPECT_NE(
      test::error_of([&] { load_checkpoint(dir.file("c.safetensors"), other, nullptr); }).find("missing"),
      std::string::npos);
  AdamW opt(model.layout().slab_size());
  EXPECT_NE(test::error_of([&] {
              load_checkpoint(dir.file("c.safetensors"), model, &opt);
            }).find("no optimizer state"),
            std::string::npos);
}

TEST(Checkpoint, KilledWriterNeverLeavesABrokenCheckpoint) {
  TempDir dir;
  Config c = small("AAAA", 256);
  c.model.vocab_size = 8192;
  c.model.d_ff = 1024;
  Model model(c.model);
  model.init_weights(2);
  AdamW opt(model.layout().slab_size());
  const std::string path = dir.file("c.safetensors");
  save_checkpoint(path, c, model, &opt, TrainingState{});
  for (int attempt = 0; attempt < 3; ++attempt) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (;;) save_checkpoint(path, c, model, &opt, TrainingState{});
    }
    ::usleep(20000 + 15000 * attempt);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    Model loaded(c.model);
    AdamW o2(loaded.layout().slab_size());
    EXPECT_NO_THROW(load_checkpoint(path, loaded, &o2));
  }
}

}  // namespace
}  // namespace bmojo
