// Named tensors laid out in one contiguous slab. Parameters, gradients and the two AdamW moments all use
// the same layout, so the optimizer, gradient clipping and checkpointing are each one pass over a buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bmojo {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats, from the start of the slab
  size_t numel = 0;
  bool weight_decay = false;
};

std::string shape_string(const std::vector<int64_t>& shape);

class ParameterLayout {
 public:
  // Appends a tensor; offsets are aligned to 16 floats (64 bytes) so every tensor starts on a cache line.
  size_t add(const std::string& name, std::vector<int64_t> shape, bool weight_decay);
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  const TensorSpec& find(const std::string& name) const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  size_t slab_size() const { return slab_size_; }
  size_t num_params() const;

 private:
  std::vector<TensorSpec> tensors_;
  std::map<std::string, size_t> index_;
  size_t slab_size_ = 0;
};

// A 64-byte aligned float buffer.
class Slab {
 public:
  Slab() = default;
  explicit Slab(size_t n) { resize(n); }
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;
  Slab(Slab&& other) noexcept;
  Slab& operator=(Slab&& other) noexcept;
  ~Slab();
  void resize(size_t n);  // contents become zero
  void zero();
  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bmojo
