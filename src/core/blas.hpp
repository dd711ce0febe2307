// Matrix products go through BLAS (OpenBLAS, CBLAS interface). Row-major throughout.
#pragma once
#include <string>

namespace bmojo {

// C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C, row-major with leading dimensions.
void matmul(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc);

// The CPU kernel family OpenBLAS picked (e.g. "Cooperlake", "Haswell").
std::string blas_core_name();

// Sets the thread count for our OpenMP kernels and for OpenBLAS.
void set_num_threads(int threads);
int num_threads();
int num_cores();

}  // namespace bmojo
