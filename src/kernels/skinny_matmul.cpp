#include "kernels/skinny_matmul.hpp"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/parallel.hpp"
#include "kernels/register_tile.hpp"

namespace bmojo {

namespace {

using namespace tile;  // NOLINT(google-build-using-namespace): the kernels' own vector helpers

// The register tiles sized to the vector register file (32 or 16 registers).
#if defined(__AVX512F__)
constexpr int kRowTileNT = 4;  // NT: 4 rows x 4 B rows = 16 accumulators
constexpr int kRowTileNN = 4;  // NN: 4 rows x 4 rows of B = 16 coefficients in registers
constexpr int kTileRows = 8;   // NN register tile: 8 rows x 3 vectors = 24 accumulators
constexpr int kTileVecs = 3;
#else
constexpr int kRowTileNT = 3;  // 12 accumulators
constexpr int kRowTileNN = 2;  // 8 coefficients
constexpr int kTileRows = 4;   // 4 rows x 3 vectors = 12 accumulators
constexpr int kTileVecs = 3;
#endif
constexpr int kStreamRows = 4;  // NN up to this many rows: B streamed row by row (bound by memory)
constexpr int kKBlock = 256;    // NN register tiles: rows of B per pass (its panel stays in L1/L2)
constexpr int kAhead = 8;       // NN register tiles: rows of B prefetched ahead
constexpr size_t kPartialBytes = 32 * 1024;  // NN: partial sums of a block of columns (in L2)
constexpr int kKRows = 4;                    // NN: rows of B per pass over the block's partial sums
// The same for a single row of A (one-sequence decode): 16 with AVX-512's 32 registers (measured there);
// the AVX2 build, whose 16 registers would spill, keeps 4.
#if defined(__AVX512F__)
constexpr int kKRowsOne = 16;
#else
constexpr int kKRowsOne = kKRows;
#endif
constexpr int kBRows = 4;  // NT: rows of B per group

inline float lane_sum(Vec v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Y[r, :nc] += sum_{i < KR} A[r, i] B[i, :nc] for rows r < R: each vector of B loaded once for the R
// rows (the KR x R coefficients in registers).
template <int R, int KR>
void nn_rows(const float* A, int lda, const float* b, int ldb, float* Y, int ldy, int nc, int nv) {
  float a[R][KR];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < KR; ++i) a[r][i] = A[static_cast<int64_t>(r) * lda + i];
  for (int v = 0; v < nv; ++v) {
    const int o = v * kLanes;
    Vec w[KR];
    for (int i = 0; i < KR; ++i) w[i] = load(b + static_cast<int64_t>(i) * ldb + o);
    for (int r = 0; r < R; ++r) {
      float* y = Y + static_cast<int64_t>(r) * ldy + o;
      Vec acc = load(y);
      for (int i = 0; i < KR; ++i) acc += a[r][i] * w[i];
      store(y, acc);
    }
  }
  for (int j = nv * kLanes; j < nc; ++j)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < KR; ++i)
        Y[static_cast<int64_t>(r) * ldy + j] += a[r][i] * b[static_cast<int64_t>(i) * ldb + j];
}

// P (M, N), row stride N = A[:, k0 .. k1) B[k0 .. k1, :], B stored (K, N): the rows of B are read once,
// in order (one contiguous stream per thread), in blocks of kKRows rows by as many columns as keep the
// block's partial sums for all M rows within kPartialBytes (in cache across the rows).
void nn_partial(int M, int N, int k0, int k1, const float* A, int lda, const float* B, int ldb, float* P) {
  const int cols = std::max(kLanes, static_cast<int>(kPartialBytes / (sizeof(float) * M)) / kLanes * kLanes);
  for (int cb = 0; cb < N; cb += cols) {
    const int nc = std::min(cols, N - cb), nv = nc / kLanes;
    float* Y = P + cb;
    for (int r = 0; r < M; ++r) std::fill_n(Y + static_cast<int64_t>(r) * N, nc, 0.0f);
    int k = k0;
    // One row of A: kKRowsOne rows of B per pass (16 loads in flight for one load and store of the partial
    // sums; the 106M-parameter model's one-sequence decode +4-8% over 4 rows on the Zen 4 of 2026-12-07).
    if (M == 1 && kKRowsOne != kKRows)
      for (; k + kKRowsOne <= k1; k += kKRowsOne)
        nn_rows<1, kKRowsOne>(A + k, lda, B + static_cast<int64_t>(k) * ldb + cb, ldb, Y, N, nc, nv);
    for (; k + kKRows <= k1; k += kKRows) {
      const float* b = B + static_cast<int64_t>(k) * ldb + cb;
      for (int r0 = 0; r0 < M; r0 += kRowTileNN)
        dispatch_rows<kRowTileNN>(std::min(kRowTileNN, M - r0), [&](auto R) {
          nn_rows<decltype(R)::value, kKRows>(A + static_cast<int64_t>(r0) * lda + k, lda, b, ldb,
                                              Y + static_cast<int64_t>(r0) * N, N, nc, nv);
        });
    }
    for (; k < k1; ++k) {
      const float* b = B + static_cast<int64_t>(k) * ldb + cb;
      for (int r = 0; r < M; ++r) {
        const float a0 = A[static_cast<int64_t>(r) * lda + k];
        float* y = Y + static_cast<int64_t>(r) * N;
        for (int j = 0; j < nc; ++j) y[j] += a0 * b[j];
      }
    }
  }
}

// C[0 .. R, 0 .. V vectors) (+)= alpha A[0 .. R, k0 .. k1) B[k0 .. k1, panel]: the accumulators stay in
// registers across the rows of B; `first` pass applies beta, later ones add.
template <int R, int V>
void nn_register_tile(int k0, int k1, float alpha, const float* A, int lda, const float* B, int ldb,
                      float beta, float* C, int ldc, bool first) {
  Vec acc[R][V] = {};
  for (int k = k0; k < k1; ++k) {
    const float* b = B + static_cast<int64_t>(k) * ldb;
    Vec w[V];
    for (int v = 0; v < V; ++v) {
      w[v] = load(b + v * kLanes);
      __builtin_prefetch(b + kAhead * static_cast<int64_t>(ldb) + v * kLanes);
    }
    for (int r = 0; r < R; ++r) {
      const float a = A[static_cast<int64_t>(r) * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      float* out = C + static_cast<int64_t>(r) * ldc + v * kLanes;
      const Vec add = alpha * acc[r][v];
      if (!first)
        store(out, load(out) + add);
      else
        store(out, beta == 0.0f ? add : beta * load(out) + add);
    }
}

// Columns [c0, c1) of C for all M rows, B stored (K, N), by register tiles: compute-bound products (tens of
// rows). Column panels of kTileVecs vectors (then single vectors, then plain loops for the last columns).
void nn_tiled(int M, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
              float* C, int ldc, int c0, int c1) {
  for (int k0 = 0; k0 < K; k0 += kKBlock) {
    const int k1 = std::min(K, k0 + kKBlock);
    const bool first = k0 == 0;
    int c = c0;
    const auto panel = [&](auto vecs) {
      constexpr int V = decltype(vecs)::value;
      for (int r0 = 0; r0 < M; r0 += kTileRows)
        dispatch_rows<kTileRows>(std::min(kTileRows, M - r0), [&](auto R) {
          nn_register_tile<decltype(R)::value, V>(k0, k1, alpha, A + static_cast<int64_t>(r0) * lda, lda,
                                                  B + c, ldb, beta, C + static_cast<int64_t>(r0) * ldc + c,
                                                  ldc, first);
        });
    };
    for (; c + kTileVecs * kLanes <= c1; c += kTileVecs * kLanes)
      panel(std::integral_constant<int, kTileVecs>{});
    for (; c + kLanes <= c1; c += kLanes) panel(std::integral_constant<int, 1>{});
    for (; c < c1; ++c)
      for (int r = 0; r < M; ++r) {
        float acc = 0.0f;
        for (int k = k0; k < k1; ++k)
          acc += A[static_cast<int64_t>(r) * lda + k] * B[static_cast<int64_t>(k) * ldb + c];
        float& out = C[static_cast<int64_t>(r) * ldc + c];
        out = first ? (beta == 0.0f ? alpha * acc : beta * out + alpha * acc) : out + alpha * acc;
      }
  }
}

// Rows [0, R) of A against B rows n0 .. n0 + kBRows (B stored (N, K)).
template <int R>
void nt_tile(int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
             int ldc) {
  Vec acc[R][kBRows] = {};
  int k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    Vec b[kBRows];
    for (int j = 0; j < kBRows; ++j) b[j] = load(B + static_cast<int64_t>(j) * ldb + k);
    for (int r = 0; r < R; ++r) {
      const Vec a = load(A + static_cast<int64_t>(r) * lda + k);
      for (int j = 0; j < kBRows; ++j) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kBRows; ++j) {
      float s = lane_sum(acc[r][j]);
      for (int kk = k; kk < K; ++kk)
        s += A[static_cast<int64_t>(r) * lda + kk] * B[static_cast<int64_t>(j) * ldb + kk];
      float& out = C[static_cast<int64_t>(r) * ldc + j];
      out = beta == 0.0f ? alpha * s : alpha * s + beta * out;
    }
}

}  // namespace

void skinny_matmul(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                   int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const bool threaded =
      omp_in_parallel() == 0 && omp_get_max_threads() > 1 && parallel_worth(static_cast<double>(N) * K);
  if (!trans_b && M > kStreamRows) {
    // One contiguous slice of columns per thread, on vector boundaries.
    const int vecs = (N + kLanes - 1) / kLanes;
#pragma omp parallel if (threaded)
    {
      const int parts = omp_get_num_threads(), p = omp_get_thread_num();
      const int c0 = std::min(N, static_cast<int>(static_cast<int64_t>(vecs) * p / parts) * kLanes);
      const int c1 = std::min(N, static_cast<int>(static_cast<int64_t>(vecs) * (p + 1) / parts) * kLanes);
      if (c1 > c0) nn_tiled(M, K, alpha, A, lda, B, ldb, beta, C, ldc, c0, c1);
    }
    return;
  }
  if (!trans_b) {
    // Each thread takes a contiguous range of B's rows (one unbroken stream from memory) into its own
    // partial product; then each sums a slice of columns over the partials into C.
    const int parts = threaded ? std::min(omp_get_max_threads(), std::max(1, K / 64)) : 1;
    thread_local std::vector<float> partial;  // the calling thread's, reused: no allocation per call
    const size_t size = static_cast<size_t>(M) * N;
    if (partial.size() < parts * size) partial.resize(parts * size);
    float* P = partial.data();
#pragma omp parallel num_threads(parts) if (parts > 1)
    {
      const int np = omp_get_num_threads(), p = omp_get_thread_num();
      nn_partial(M, N, static_cast<int>(static_cast<int64_t>(K) * p / np),
                 static_cast<int>(static_cast<int64_t>(K) * (p + 1) / np), A, lda, B, ldb, P + p * size);
#pragma omp barrier
      const int c0 = static_cast<int>(static_cast<int64_t>(N) * p / np),
                c1 = static_cast<int>(static_cast<int64_t>(N) * (p + 1) / np);
      for (int r = 0; r < M; ++r) {
        float* out = C + static_cast<int64_t>(r) * ldc;
        const float* row = P + static_cast<size_t>(r) * N;
#pragma omp simd
        for (int c = c0; c < c1; ++c) {
          float v = 0.0f;
          for (int q = 0; q < np; ++q) v += row[q * size + c];  // in thread order: reproducible
          out[c] = beta == 0.0f ? alpha * v : alpha * v + beta * out[c];
        }
      }
    }
    return;
  }
  const int groups = (N + kBRows - 1) / kBRows;
#pragma omp parallel for schedule(static) if (threaded)
  for (int g = 0; g < groups; ++g) {
    const int n0 = g * kBRows;
    if (n0 + kBRows > N) {  // the last rows of B, plain loops
      for (int n = n0; n < N; ++n)
        for (int r = 0; r < M; ++r) {
          float s = 0.0f;
          for (int k = 0; k < K; ++k)
            s += A[static_cast<int64_t>(r) * lda + k] * B[static_cast<int64_t>(n) * ldb + k];
          float& out = C[static_cast<int64_t>(r) * ldc + n];
          out = beta == 0.0f ? alpha * s : alpha * s + beta * out;
        }
      continue;
    }
    for (int r0 = 0; r0 < M; r0 += kRowTileNT)
      dispatch_rows<kRowTileNT>(std::min(kRowTileNT, M - r0), [&](auto R) {
        nt_tile<decltype(R)::value>(K, alpha, A + static_cast<int64_t>(r0) * lda, lda,
                                    B + static_cast<int64_t>(n0) * ldb, ldb, beta,
                                    C + static_cast<int64_t>(r0) * ldc + n0, ldc);
      });
  }
}

void skinny_matmul_reference(bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                             const float* B, int ldb, float beta, float* C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0.0;
      for (int k = 0; k < K; ++k)
        s += static_cast<double>(A[static_cast<int64_t>(m) * lda + k]) *
             (trans_b ? B[static_cast<int64_t>(n) * ldb + k] : B[static_cast<int64_t>(k) * ldb + n]);
      float& out = C[static_cast<int64_t>(m) * ldc + n];
      out = static_cast<float>(beta == 0.0f ? alpha * s : alpha * s + beta * static_cast<double>(out));
    }
}

}  // namespace bmojo
