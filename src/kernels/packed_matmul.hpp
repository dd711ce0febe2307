// Weight matrices repacked for products with a few rows: C (M, N) = alpha A (M, K) op(B) + beta C for M up
// to kPackedMaxRows, the shape of a decode step over a batch of sequences (at 32 and 64 rows 1.2-2x
// OpenBLAS's sgemm, which packs B on every call: `--benchmark_filter=wide/`).
//
// skinny_matmul reads B where it lies, which suits one row (one contiguous stream of B's rows per thread).
// With more rows the work per byte of B calls for register tiles (rows x 48 columns of C kept in registers
// across K), and a tile walks B down its columns: a few cache lines per row of B, each row in another page,
// which the hardware prefetchers do not follow; 16-row products ran at 8-10 GB/s of B against 30 for one row
// (`bmojo_kernel_bench --benchmark_filter=skinny`; packed: 18-28 GB/s at 16 rows, 25-50 at 4). A PackedMatrix
// holds the same numbers in column panels, each panel's K rows of kPanelColumns floats stored one after
// another, so a tile reads one contiguous stream. Weights do not change during inference, so they are packed
// once (model.hpp, Model::packed_weights) and every decode step reads the packed copy.
//
// Two versions with one signature: the reference (the definition, on the matrix as packed) and the fast
// one (register tiles of the widest vectors the build targets).
#pragma once
#include <cstdint>
#include <vector>

#include "core/parameters.hpp"

namespace bmojo {

// Products with [kPackedMinRows, kPackedMaxRows] rows use a packed B when one is available (core/blas.cpp).
inline constexpr int kPackedMinRows = 2;
inline constexpr int kPackedMaxRows = 64;

class PackedMatrix {
 public:
  // Columns of op(B) per panel: three vectors of the widest ISA the build targets.
#if defined(__AVX512F__)
  static constexpr int kPanelColumns = 48;
#else
  static constexpr int kPanelColumns = 24;
#endif

  // op(B) (K, N) from B stored (K, N) with row stride ldb (trans_b false) or (N, K) (trans_b true). The last
  // panel is padded with zeros.
  PackedMatrix(const float* B, bool trans_b, int N, int K, int ldb);

  const float* source() const {
    return source_;
  }
  bool trans_b() const {
    return trans_b_;
  }
  int N() const {
    return N_;
  }
  int K() const {
    return K_;
  }
  int ldb() const {
    return ldb_;
  }
  int panels() const {
    return (N_ + kPanelColumns - 1) / kPanelColumns;
  }
  // Panel p: K rows of kPanelColumns floats, op(B)[k, p * kPanelColumns + j] at [k * kPanelColumns + j].
  const float* panel(int p) const {
    return data_.data() + static_cast<size_t>(p) * K_ * kPanelColumns;
  }
  size_t bytes() const {
    return data_.size() * sizeof(float);
  }

 private:
  const float* source_;
  bool trans_b_;
  int N_, K_, ldb_;
  Slab data_;
};

// The packed copies of one model's weight matrices, found by the address, layout and shape of the matrix
// they were packed from.
class PackedWeights {
 public:
  void add(const float* B, bool trans_b, int N, int K, int ldb);
  // The packed copy of op(B) for exactly this product's B, or null.
  const PackedMatrix* find(const float* B, bool trans_b, int N, int K, int ldb) const;
  size_t bytes() const;
  size_t size() const { return matrices_.size(); }

 private:
  std::vector<PackedMatrix> matrices_;
};

void packed_matmul(int M, float alpha, const float* A, int lda, const PackedMatrix& B, float beta, float* C,
                   int ldc);
void packed_matmul_reference(int M, float alpha, const float* A, int lda, const PackedMatrix& B, float beta,
                             float* C, int ldc);

}  // namespace bmojo
