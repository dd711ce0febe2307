// Kernel microbenchmarks (Google Benchmark): matrix products (bmojo's fp32 split, OpenBLAS's own threading,
// OpenBLAS on one thread and on every thread independently, oneDNN f32, the bf16 path), the machine's
// measured fp32 peak, and the fast attention and selective-scan kernels against their references, forward and
// backward. Run: build/bmojo_kernel_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "core/blas.hpp"
#include "core/machine_peak.hpp"
#include "core/rng.hpp"
#include "core/runtime.hpp"
#include "kernels/attention.hpp"
#include "kernels/packed_matmul.hpp"
#include "kernels/skinny_matmul.hpp"
#include "kernels/ssm_scan.hpp"

namespace {

using namespace bmojo;

std::vector<float> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// Args: T, window, fading (0/1: the F layer's second key set). B=8, H=Hk=4, Dh=64 (the 4-layer width-256
// benchmark model).
template <bool kReference, bool kBackward>
void BM_Attention(benchmark::State& state) {
  AttentionDims d;
  d.B = 8, d.T = static_cast<int>(state.range(0)), d.H = 4, d.Hk = 4, d.Dh = 64;
  d.window = static_cast<int>(state.range(1));
  const int width = 3 * d.H * d.Dh, od = d.H * d.Dh;
  auto qkv = random_vector(static_cast<size_t>(d.B) * d.T * width, 1);
  auto kvf = random_vector(static_cast<size_t>(d.B) * d.T * 2 * od, 3);
  auto dout = random_vector(static_cast<size_t>(d.B) * d.T * od, 2);
  std::vector<float> out(dout.size()), lse(static_cast<size_t>(d.B) * d.H * d.T), g(qkv.size()),
      gf(kvf.size());
  AttentionInputs in;
  in.q = qkv.data(), in.ldq = width, in.k = in.q + od, in.v = in.k + od, in.ldkv = width;
  AttentionGrads gr;
  gr.dq = g.data(), gr.dk = gr.dq + od, gr.dv = gr.dk + od;
  if (state.range(2) != 0) {
    in.kf = kvf.data(), in.vf = in.kf + od, in.ldf = 2 * od;
    gr.dkf = gf.data(), gr.dvf = gr.dkf + od;
  }
  attention_forward(out.data(), od, lse.data(), in, d);
  for (auto _ : state) {
    if constexpr (kBackward) {
      (kReference ? attention_backward_reference : attention_backward)(gr, dout.data(), out.data(), od,
                                                                       lse.data(), in, d);
    } else {
      (kReference ? attention_forward_reference : attention_forward)(out.data(), od, lse.data(), in, d);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * d.B * d.T);
}

// Args: T, then optionally B and C (default B=8, C=512: d_model 256, expand 2), N=16. The MQAR grid's
// training shape is T 128, B 64, C 128 (d_model 64).
template <bool kReference, bool kBackward>
void BM_Scan(benchmark::State& state) {
  const int B = state.range(1) > 0 ? static_cast<int>(state.range(1)) : 8;
  const int C = state.range(2) > 0 ? static_cast<int>(state.range(2)) : 512;
  ScanDims d{B, static_cast<int>(state.range(0)), C, 16};
  const size_t n = static_cast<size_t>(d.B) * d.T * d.C;
  const int ldbc = 2 * d.N;
  auto x = random_vector(n, 3), dt = random_vector(n, 4),
       bc = random_vector(static_cast<size_t>(d.B) * d.T * ldbc, 5);
  auto A = random_vector(static_cast<size_t>(d.C) * d.N, 6), D = random_vector(d.C, 7),
       dy = random_vector(n, 8);
  for (auto& v : dt) v = 0.01f + 0.1f * (v > 0 ? v : -v);
  for (auto& v : A) v = -0.1f - (v > 0 ? v : -v);
  std::vector<float> y(n), dx(n), ddt(n), dA(A.size()), dbc(bc.size()), dD(d.C);
  for (auto _ : state) {
    if constexpr (kBackward) {
      auto fn = kReference ? selective_scan_backward_reference : selective_scan_backward;
      fn(dx.data(), ddt.data(), dA.data(), dbc.data(), dbc.data() + d.N, dD.data(), dy.data(), x.data(),
         dt.data(), A.data(), bc.data(), bc.data() + d.N, ldbc, D.data(), d);
    } else if constexpr (kReference) {
      selective_scan_forward_reference(y.data(), x.data(), dt.data(), A.data(), bc.data(), bc.data() + d.N,
                                       ldbc, D.data(), d);
    } else {
      selective_scan_forward(y.data(), x.data(), dt.data(), A.data(), bc.data(), bc.data() + d.N, ldbc,
                             D.data(), d);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * d.B * d.T);
}

// Args: M, N, K (row-major, no transposes). kMode 0: bmojo's fp32 matmul (large products split into one
// single-threaded OpenBLAS call per thread); 1: one cblas_sgemm call with OpenBLAS's own threads; 2:
// bmojo's bf16 path (oneDNN, operands converted every call); 3: one cblas_sgemm on one thread. Thread
// count: OMP_NUM_THREADS / the cores.
template <int kMode>
void BM_Matmul(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const auto A = random_vector(static_cast<size_t>(M) * K, 1),
             B = random_vector(static_cast<size_t>(K) * N, 2);
  std::vector<float> C(static_cast<size_t>(M) * N);
  set_matmul_bf16(kMode == 2);
  // OpenBLAS's OpenMP build sets OpenMP's thread count too: restored below.
  const int threads = num_threads();
  if (kMode == 3) openblas_set_num_threads(1);
  for (auto _ : state) {
    if constexpr (kMode == 1 || kMode == 3) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f,
                  C.data(), N);
    } else {
      matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    }
    benchmark::ClobberMemory();
  }
  set_matmul_bf16(false);
  if (kMode == 3) set_num_threads(threads);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

// Args: M, N, K. oneDNN's f32 matmul with its own threads (primitive built once, outside the timed loop).
void BM_MatmulOnednnF32(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  auto A = random_vector(static_cast<size_t>(M) * K, 1), B = random_vector(static_cast<size_t>(K) * N, 2);
  std::vector<float> C(static_cast<size_t>(M) * N);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc a_md({M, K}, dt::f32, {K, 1}), b_md({K, N}, dt::f32, {N, 1}),
      c_md({M, N}, dt::f32, {N, 1});
  const dnnl::matmul f32_matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), engine));
  dnnl::memory am(a_md, engine, A.data()), bm(b_md, engine, B.data()), cm(c_md, engine, C.data());
  for (auto _ : state) {
    f32_matmul.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream.wait();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

// Args: M, N, K. Every thread runs its own single-threaded sgemm on its own matrices, all at once: how well
// OpenBLAS's kernel scales across this machine's cores with nothing shared (GFLOP/s of all threads together;
// compare with matmul/openblas_1thread).
void BM_MatmulIndependentPerThread(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const int threads = num_threads();
  std::vector<std::vector<float>> A(threads), B(threads), C(threads);
  for (int t = 0; t < threads; ++t) {
    A[t] = random_vector(static_cast<size_t>(M) * K, 1 + t);
    B[t] = random_vector(static_cast<size_t>(K) * N, 10 + t);
    C[t].assign(static_cast<size_t>(M) * N, 0.0f);
  }
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A[t].data(), K, B[t].data(), N,
                  0.0f, C[t].data(), N);
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K * threads * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

// The machine's fp32 multiply-add peak now, on all threads and on one (what `bmojo bench` quotes against).
void BM_Peak(benchmark::State& state) {
  const int threads = state.range(0) == 0 ? num_threads() : static_cast<int>(state.range(0));
  double gflops = 0.0;
  for (auto _ : state) gflops = measure_fp32_peak(threads, 0.2).gflops;
  state.counters["GFLOP/s"] = gflops;
}

// Args: M, N, K, trans_b. Products with few rows against a large B (decode against a weight matrix):
// kSkinny true runs kernels/skinny_matmul.cpp, false one cblas_sgemm with OpenBLAS's threads;
// BM_PackedMatmul below, kernels/packed_matmul.cpp on a packed B. GB/s counts the bytes of B, read once per
// product.
template <bool kSkinny>
void BM_SkinnyMatmul(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const bool tb = state.range(3) != 0;
  // Several copies of B, used in turn, so B comes from memory rather than cache.
  constexpr int kCopies = 32;
  const auto A = random_vector(static_cast<size_t>(M) * K, 1);
  std::vector<std::vector<float>> B;
  for (int c = 0; c < kCopies; ++c) B.push_back(random_vector(static_cast<size_t>(K) * N, 2 + c));
  std::vector<float> C(static_cast<size_t>(M) * N);
  const int ldb = tb ? K : N;
  int turn = 0;
  for (auto _ : state) {
    const float* b = B[turn++ % kCopies].data();
    if constexpr (kSkinny)
      skinny_matmul(tb, M, N, K, 1.0f, A.data(), K, b, ldb, 0.0f, C.data(), N);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A.data(), K, b,
                  ldb, 0.0f, C.data(), N);
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * N * K * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
// The weight products of the 106M B model (d_model 768, d_inner 1536, d_ff 2048, vocab 4096): in_proj,
// out_proj, QKV, Wo and P, the MLP's two, the LM head (B^T); at 1, 4 and 16 rows.
void DecodeShapes(benchmark::internal::Benchmark* b) {
  for (int m : {1, 4, 8, 16})
    b->Args({m, 3072, 768, 0})
        ->Args({m, 768, 1536, 0})
        ->Args({m, 2304, 768, 0})
        ->Args({m, 768, 768, 0})
        ->Args({m, 4096, 768, 0})
        ->Args({m, 768, 2048, 0})
        ->Args({m, 4096, 768, 1});
  // The 4-layer width-256 models of the batched-decode table (docs/inference.md): QKV, the MLP's two, the
  // LM head (B^T).
  for (int m : {1, 4, 8, 16})
    b->Args({m, 768, 256, 0})->Args({m, 2048, 256, 0})->Args({m, 256, 1024, 0})->Args({m, 4096, 256, 1});
}
void BM_PackedMatmul(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const bool tb = state.range(3) != 0;
  constexpr int kCopies = 32;  // as above: B from memory
  const auto A = random_vector(static_cast<size_t>(M) * K, 1);
  std::vector<PackedMatrix> B;
  for (int c = 0; c < kCopies; ++c) {
    const auto b = random_vector(static_cast<size_t>(K) * N, 2 + c);
    B.emplace_back(b.data(), tb, N, K, tb ? K : N);
  }
  std::vector<float> C(static_cast<size_t>(M) * N);
  int turn = 0;
  for (auto _ : state) {
    packed_matmul(M, 1.0f, A.data(), K, B[turn++ % kCopies], 0.0f, C.data(), N);
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * N * K * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_SkinnyMatmul<true>)->Name("skinny/bmojo")->Apply(DecodeShapes);
BENCHMARK(BM_PackedMatmul)->Name("skinny/packed")->Apply(DecodeShapes);
BENCHMARK(BM_SkinnyMatmul<false>)->Name("skinny/openblas_sgemm")->Apply(DecodeShapes);
// 32 and 64 rows (decode of that many sequences) of the width-256 models' products: packed against sgemm,
// where matmul() sends them.
void WideBatchShapes(benchmark::internal::Benchmark* b) {
  for (int m : {32, 64})
    b->Args({m, 768, 256, 0})->Args({m, 2048, 256, 0})->Args({m, 256, 1024, 0})->Args({m, 4096, 256, 1});
}
BENCHMARK(BM_PackedMatmul)->Name("wide/packed")->Apply(WideBatchShapes);
BENCHMARK(BM_SkinnyMatmul<false>)->Name("wide/openblas_sgemm")->Apply(WideBatchShapes);

// Two shapes of the AAAA step (MLP products of 2048 tokens) and one that fits a core's L2.
void StepShapes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 1024, 256})->Args({2048, 256, 1024});
}
void StepShapesAndSmall(benchmark::internal::Benchmark* b) {
  StepShapes(b);
  b->Args({256, 256, 256});
}
// The MQAR grid's projections (d_model 64, 64 x 128 tokens a step): Mamba's input and output projections,
// attention's query/key/value projection.
void MqarShapes(benchmark::internal::Benchmark* b) {
  b->Args({8192, 256, 64})->Args({8192, 64, 128})->Args({8192, 192, 64});
}
BENCHMARK(BM_Matmul<0>)->Name("matmul/bmojo_fp32")->Apply(StepShapes);
BENCHMARK(BM_Matmul<1>)->Name("matmul/openblas_threads")->Apply(StepShapes);
BENCHMARK(BM_Matmul<2>)->Name("matmul/bmojo_bf16")->Apply(StepShapes);
BENCHMARK(BM_Matmul<3>)->Name("matmul/openblas_1thread")->Apply(StepShapesAndSmall)->Apply(MqarShapes);
BENCHMARK(BM_MatmulOnednnF32)->Name("matmul/onednn_fp32")->Apply(StepShapes)->Apply(MqarShapes);
BENCHMARK(BM_MatmulIndependentPerThread)
    ->Name("matmul/openblas_independent_per_thread")
    ->Apply(StepShapesAndSmall);
BENCHMARK(BM_Peak)->Name("peak/fp32_fma")->Arg(0)->Arg(1)->Iterations(1);

BENCHMARK(BM_Attention<false, false>)
    ->Name("attention_forward/fast")
    ->Args({256, 0, 0})
    ->Args({1024, 0, 0})
    ->Args({1024, 128, 0})
    ->Args({1024, 128, 1})
    ->Args({4096, 128, 1});
BENCHMARK(BM_Attention<true, false>)->Name("attention_forward/reference")->Args({256, 0, 0});
BENCHMARK(BM_Attention<false, true>)
    ->Name("attention_backward/fast")
    ->Args({256, 0, 0})
    ->Args({1024, 128, 0})
    ->Args({1024, 128, 1})
    ->Args({4096, 128, 1});
BENCHMARK(BM_Attention<true, true>)->Name("attention_backward/reference")->Args({256, 0, 0});
BENCHMARK(BM_Scan<false, false>)
    ->Name("scan_forward/fast")
    ->Args({256, 0, 0})
    ->Args({1024, 0, 0})
    ->Args({128, 64, 128});
BENCHMARK(BM_Scan<true, false>)->Name("scan_forward/reference")->Args({256, 0, 0});
BENCHMARK(BM_Scan<false, true>)
    ->Name("scan_backward/fast")
    ->Args({256, 0, 0})
    ->Args({1024, 0, 0})
    ->Args({128, 64, 128});
BENCHMARK(BM_Scan<true, true>)->Name("scan_backward/reference")->Args({256, 0, 0});

}  // namespace

int main(int argc, char** argv) {
  bmojo::ensure_native_blas_kernels(argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
