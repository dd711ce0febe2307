#include "kernels/packed_matmul.hpp"

#include <omp.h>

#include <algorithm>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "kernels/register_tile.hpp"

namespace bmojo {

namespace {

using namespace tile;  // NOLINT(google-build-using-namespace): the kernels' own vector helpers
#if defined(__AVX512F__)
constexpr int kTileRows = 8;  // 8 rows x 3 vectors = 24 accumulators of 32 registers
#else
constexpr int kTileRows = 4;  // 4 rows x 3 vectors = 12 accumulators of 16 registers
#endif
constexpr int kVecs = PackedMatrix::kPanelColumns / kLanes;
static_assert(kVecs * kLanes == PackedMatrix::kPanelColumns);
// A panel is walked in chunks of kChunk rows (12 KB, held in L1), every row tile of A over one chunk
// before the next, so that a product of more rows than one tile still reads each panel from memory once,
// as one stream. The tiles' passes over a chunk share its prefetching: pass t of T asks for every T-th row
// kAhead rows on (past the chunk), so the stream runs while the later passes compute from L1.
constexpr int kChunk = 64;
constexpr int kAhead = 96;

// acc[0 .. R, 0 .. kPanelColumns) += A[0 .. R, k0 .. k1) panel[k0 .. k1): the R x kPanelColumns sums in
// registers across the chunk, kept in acc between chunks.
template <int R>
void panel_tile(int k0, int k1, const float* A, int lda, const float* panel, float* acc, int pass,
                int passes) {
  Vec sum[R][kVecs];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVecs; ++v)
      sum[r][v] = k0 == 0 ? Vec{} : load(acc + r * PackedMatrix::kPanelColumns + v * kLanes);
  // Rows until this pass's next prefetch (a counter: a division per row costs as much as the row's FMAs).
  int until = ((pass - k0) % passes + passes) % passes;
  for (int k = k0; k < k1; ++k) {
    const float* b = panel + static_cast<int64_t>(k) * PackedMatrix::kPanelColumns;
    Vec w[kVecs];
    for (int v = 0; v < kVecs; ++v) w[v] = load(b + v * kLanes);
    if (until == 0) {
      for (int v = 0; v < kVecs; ++v)
        __builtin_prefetch(b + kAhead * PackedMatrix::kPanelColumns + v * kLanes, 0, 1);
      until = passes;
    }
    --until;
    for (int r = 0; r < R; ++r) {
      const float a = A[static_cast<int64_t>(r) * lda + k];
      for (int v = 0; v < kVecs; ++v) sum[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVecs; ++v) store(acc + r * PackedMatrix::kPanelColumns + v * kLanes, sum[r][v]);
}

// out[0 .. M, 0 .. cols) = alpha A[0 .. M, :K] panel + beta out.
void panel_product(int M, int K, float alpha, const float* A, int lda, const float* panel, float beta,
                   float* C, int ldc, int cols) {
  alignas(64) float acc[kPackedMaxRows * PackedMatrix::kPanelColumns];
  const int passes = (M + kTileRows - 1) / kTileRows;
  const int chunk = passes == 1 ? K : kChunk;  // one tile needs no chunks (nor their stores and loads)
  for (int k0 = 0; k0 < K; k0 += chunk) {
    const int k1 = std::min(K, k0 + chunk);
    for (int t = 0; t < passes; ++t) {
      const int r0 = t * kTileRows;
      dispatch_rows<kTileRows>(std::min(kTileRows, M - r0), [&](auto R) {
        panel_tile<decltype(R)::value>(k0, k1, A + static_cast<int64_t>(r0) * lda, lda, panel,
                                       acc + r0 * PackedMatrix::kPanelColumns, t, passes);
      });
    }
  }
  for (int r = 0; r < M; ++r) {
    const float* sum = acc + r * PackedMatrix::kPanelColumns;
    float* out = C + static_cast<int64_t>(r) * ldc;
    if (cols == PackedMatrix::kPanelColumns) {
      for (int v = 0; v < kVecs; ++v) {
        const Vec add = alpha * load(sum + v * kLanes);
        store(out + v * kLanes, beta == 0.0f ? add : beta * load(out + v * kLanes) + add);
      }
    } else {  // the last, padded panel: only its real columns are C's
      for (int j = 0; j < cols; ++j) out[j] = beta == 0.0f ? alpha * sum[j] : beta * out[j] + alpha * sum[j];
    }
  }
}

}  // namespace

PackedMatrix::PackedMatrix(const float* B, bool trans_b, int N, int K, int ldb)
    : source_(B), trans_b_(trans_b), N_(N), K_(K), ldb_(ldb) {
  check(N > 0 && K > 0 && ldb >= (trans_b ? K : N), "PackedMatrix: bad shape or leading dimension");
  data_.resize(static_cast<size_t>(panels()) * K * kPanelColumns);  // zeros: the last panel's padding
  for (int p = 0; p < panels(); ++p) {
    float* out = data_.data() + static_cast<size_t>(p) * K * kPanelColumns;
    const int c0 = p * kPanelColumns, cols = std::min(kPanelColumns, N - c0);
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < cols; ++j)
        out[static_cast<size_t>(k) * kPanelColumns + j] =
            trans_b ? B[static_cast<int64_t>(c0 + j) * ldb + k] : B[static_cast<int64_t>(k) * ldb + c0 + j];
  }
}

void PackedWeights::add(const float* B, bool trans_b, int N, int K, int ldb) {
  if (find(B, trans_b, N, K, ldb) == nullptr) matrices_.emplace_back(B, trans_b, N, K, ldb);
}

const PackedMatrix* PackedWeights::find(const float* B, bool trans_b, int N, int K, int ldb) const {
  for (const PackedMatrix& m : matrices_)
    if (m.source() == B && m.trans_b() == trans_b && m.N() == N && m.K() == K && m.ldb() == ldb) return &m;
  return nullptr;
}

size_t PackedWeights::bytes() const {
  size_t n = 0;
  for (const PackedMatrix& m : matrices_) n += m.bytes();
  return n;
}

void packed_matmul(int M, float alpha, const float* A, int lda, const PackedMatrix& B, float beta, float* C,
                   int ldc) {
  const int N = B.N(), K = B.K(), panels = B.panels();
  if (M <= 0) return;
  // The work is M N K multiply-adds (a 16-row product of a 256 x 768 matrix is worth a second thread even
  // though one row of it is not).
  const bool threaded = omp_in_parallel() == 0 && omp_get_max_threads() > 1 && panels > 1 &&
                        parallel_worth(static_cast<double>(M) * N * K);
  // A contiguous range of panels per thread: one unbroken stream of the packed matrix each.
#pragma omp parallel if (threaded)
  {
    const int parts = omp_get_num_threads(), t = omp_get_thread_num();
    const int p0 = static_cast<int>(static_cast<int64_t>(panels) * t / parts),
              p1 = static_cast<int>(static_cast<int64_t>(panels) * (t + 1) / parts);
    for (int p = p0; p < p1; ++p) {
      const int c0 = p * PackedMatrix::kPanelColumns, cols = std::min(PackedMatrix::kPanelColumns, N - c0);
      for (int m0 = 0; m0 < M; m0 += kPackedMaxRows)
        panel_product(std::min(kPackedMaxRows, M - m0), K, alpha, A + static_cast<int64_t>(m0) * lda, lda,
                      B.panel(p), beta, C + static_cast<int64_t>(m0) * ldc + c0, ldc, cols);
    }
  }
}

void packed_matmul_reference(int M, float alpha, const float* A, int lda, const PackedMatrix& B, float beta,
                             float* C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < B.N(); ++n) {
      const float* panel = B.panel(n / PackedMatrix::kPanelColumns);
      double s = 0.0;
      for (int k = 0; k < B.K(); ++k)
        s += static_cast<double>(A[static_cast<int64_t>(m) * lda + k]) *
             panel[static_cast<int64_t>(k) * PackedMatrix::kPanelColumns + n % PackedMatrix::kPanelColumns];
      float& out = C[static_cast<int64_t>(m) * ldc + n];
      out = static_cast<float>(beta == 0.0f ? alpha * s : alpha * s + beta * static_cast<double>(out));
    }
}

}  // namespace bmojo
