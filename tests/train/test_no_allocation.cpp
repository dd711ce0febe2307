// The training step allocates nothing once its buffers exist: after a warm-up step, forward, backward,
// clipping and the AdamW update of every layer kind run without a single operator new. (The batch itself
// is built outside the step.) Counted by replacing the global operator new/delete of this test binary.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "data/mqar.hpp"
#include "model/model.hpp"
#include "train/adamw.hpp"
#include "train/train_step.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// These replace the global allocation functions, so memory from this operator new is always released by the
// std::free below. GCC's -Wmismatched-new-delete does not see the pair and warns on inlined calls (a false
// positive seen in the sanitizer build).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace bmojo {
namespace {

long allocations_in_step(const std::string& layers, int window) {
  Config c;
  c.model.vocab_size = 512;
  c.model.d_model = 32;
  c.model.n_heads = 2;
  c.model.layers = layers;
  c.model.window = window;
  c.model.d_ff = 64;
  c.model.eidetic_per_chunk = 2;
  c.model.eidetic_capacity = 8;
  c.data.task = "random";
  c.data.seq_len = 48;
  c.train.batch_size = 3;
  Model model(c.model);
  model.init_weights(1);
  AdamW opt(model.layout().slab_size());
  long counted = 0;
  for (int step = 0; step < 3; ++step) {
    const Batch b = make_batch(c.data, c.model.vocab_size, c.train.batch_size, 1, Split::kTrain, step);
    g_allocations = 0;
    g_counting = step > 0;  // the first step sizes the buffers
    train_step(model, opt, b.inputs.data(), b.targets.data(), b.B, b.T, 1e-3f, c.train);
    g_counting = false;
    counted += g_allocations;
  }
  return counted;
}

TEST(NoAllocation, TrainingStepOfEveryLayerKind) {
  EXPECT_EQ(allocations_in_step("AA", 0), 0) << "full attention";
  EXPECT_EQ(allocations_in_step("AA", 8), 0) << "window attention";
  EXPECT_EQ(allocations_in_step("MM", 0), 0) << "Mamba";
  EXPECT_EQ(allocations_in_step("FF", 8), 0) << "B'MOJO-F";
  EXPECT_EQ(allocations_in_step("BB", 8), 0) << "B'MOJO";
  EXPECT_EQ(allocations_in_step("BMAF", 8), 0) << "mixed";
}

}  // namespace
}  // namespace bmojo
