// Where a training step's time goes, by kernel: `bmojo bench --profile`. Kernels open a Scope named after
// themselves; a scope's time is exclusive (a matrix product inside the attention kernel counts as "matmul",
// not "attention"). Off by default, when a Scope costs one load and a branch. Only the thread outside any
// parallel region records (kernels are entered from there and thread inside), so the shares add up to the
// step's wall time, the rest being the model's own bookkeeping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bmojo::profile {

void set_enabled(bool on);
bool enabled();

// Opens a scope for the kernel `name` (a string literal: kept by pointer) doing `flops` floating-point
// operations (0 when not counted).
class Scope {
 public:
  explicit Scope(const char* name, double flops = 0.0) {
    if (enabled()) open(name, flops);
  }
  ~Scope() {
    if (open_) close();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void open(const char* name, double flops);
  void close();
  bool open_ = false;
};

struct Entry {
  std::string name;
  double seconds = 0.0;  // exclusive wall time
  int64_t calls = 0;
  double flops = 0.0;
};

// Totals since the last reset, largest time first.
std::vector<Entry> totals();
void reset();

}  // namespace bmojo::profile
