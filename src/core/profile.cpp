#include "core/profile.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

namespace bmojo::profile {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_enabled{false};

struct Slot {
  const char* name;
  double seconds = 0.0;
  int64_t calls = 0;
  double flops = 0.0;
};

struct Frame {
  size_t slot;
  Clock::time_point start;
};

// Touched only by the thread outside parallel regions (Scope::open checks), so no locking.
std::vector<Slot> g_slots;
std::vector<Frame> g_stack;

size_t slot_for(const char* name) {
  for (size_t i = 0; i < g_slots.size(); ++i)
    if (g_slots[i].name == name || std::strcmp(g_slots[i].name, name) == 0) return i;
  g_slots.push_back({name});
  return g_slots.size() - 1;
}

}  // namespace

void set_enabled(bool on) {
  g_enabled = on;
}

bool enabled() {
  return g_enabled.load(std::memory_order_relaxed);
}

void Scope::open(const char* name, double flops) {
  if (omp_in_parallel()) return;
  const auto now = Clock::now();
  if (!g_stack.empty()) {
    Frame& parent = g_stack.back();
    g_slots[parent.slot].seconds += std::chrono::duration<double>(now - parent.start).count();
  }
  const size_t slot = slot_for(name);
  g_slots[slot].calls += 1;
  g_slots[slot].flops += flops;
  g_stack.push_back({slot, now});
  open_ = true;
}

void Scope::close() {
  if (g_stack.empty()) return;  // reset() while this scope was open: its time is dropped with the rest
  const auto now = Clock::now();
  const Frame top = g_stack.back();
  g_stack.pop_back();
  g_slots[top.slot].seconds += std::chrono::duration<double>(now - top.start).count();
  if (!g_stack.empty()) g_stack.back().start = now;
}

std::vector<Entry> totals() {
  std::vector<Entry> out;
  for (const Slot& s : g_slots) out.push_back({s.name, s.seconds, s.calls, s.flops});
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

void reset() {
  g_slots.clear();
  g_stack.clear();
}

}  // namespace bmojo::profile
