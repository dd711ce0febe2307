#include "core/parameters.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "core/error.hpp"

namespace bmojo {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

size_t ParameterLayout::add(const std::string& name, std::vector<int64_t> shape, bool weight_decay) {
  check(!contains(name), "duplicate tensor name '" + name + "'");
  TensorSpec spec;
  spec.name = name;
  spec.numel = 1;
  for (int64_t d : shape) {
    check(d > 0, "tensor '" + name + "' has an empty dimension " + shape_string(shape));
    spec.numel *= static_cast<size_t>(d);
  }
  spec.shape = std::move(shape);
  spec.offset = slab_size_;
  spec.weight_decay = weight_decay;
  slab_size_ += (spec.numel + 15) / 16 * 16;
  index_[name] = tensors_.size();
  tensors_.push_back(spec);
  return spec.offset;
}

const TensorSpec& ParameterLayout::find(const std::string& name) const {
  auto it = index_.find(name);
  check(it != index_.end(), "no tensor named '" + name + "'");
  return tensors_[it->second];
}

size_t ParameterLayout::num_params() const {
  size_t n = 0;
  for (const auto& t : tensors_) n += t.numel;
  return n;
}

Slab::Slab(Slab&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Slab& Slab::operator=(Slab&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Slab::~Slab() {
  std::free(data_);
}

void Slab::resize(size_t n) {
  std::free(data_);
  data_ = nullptr;
  size_ = n;
  if (n == 0) return;
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (data_ == nullptr) throw std::bad_alloc();
  std::memset(data_, 0, bytes);
}

void Slab::zero() {
  if (data_) std::memset(data_, 0, size_ * sizeof(float));
}

}  // namespace bmojo
