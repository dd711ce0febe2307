// Kernel microbenchmarks (Google Benchmark): matrix products (bmojo's fp32 split, OpenBLAS's own threading,
// the bf16 path), and the fast attention and selective-scan kernels against their references, forward and
// backward. Run: build/bmojo_kernel_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "core/blas.hpp"
#include "core/rng.hpp"
#include "core/runtime.hpp"
#include "kernels/attention.hpp"
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

// Args: T. B=8, C=512 (d_model 256, expand 2), N=16.
template <bool kReference, bool kBackward>
void BM_Scan(benchmark::State& state) {
  ScanDims d{8, static_cast<int>(state.range(0)), 512, 16};
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
// bmojo's bf16 path (oneDNN, operands converted every call). Thread count: OMP_NUM_THREADS / the cores.
template <int kMode>
void BM_Matmul(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const auto A = random_vector(static_cast<size_t>(M) * K, 1),
             B = random_vector(static_cast<size_t>(K) * N, 2);
  std::vector<float> C(static_cast<size_t>(M) * N);
  set_matmul_bf16(kMode == 2);
  for (auto _ : state) {
    if constexpr (kMode == 1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f,
                  C.data(), N);
    } else {
      matmul(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    }
    benchmark::ClobberMemory();
  }
  set_matmul_bf16(false);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

BENCHMARK(BM_Matmul<0>)->Name("matmul/bmojo_fp32")->Args({2048, 1024, 256})->Args({2048, 256, 1024});
BENCHMARK(BM_Matmul<1>)->Name("matmul/openblas_threads")->Args({2048, 1024, 256})->Args({2048, 256, 1024});
BENCHMARK(BM_Matmul<2>)->Name("matmul/bmojo_bf16")->Args({2048, 1024, 256})->Args({2048, 256, 1024});

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
BENCHMARK(BM_Scan<false, false>)->Name("scan_forward/fast")->Arg(256)->Arg(1024);
BENCHMARK(BM_Scan<true, false>)->Name("scan_forward/reference")->Arg(256);
BENCHMARK(BM_Scan<false, true>)->Name("scan_backward/fast")->Arg(256)->Arg(1024);
BENCHMARK(BM_Scan<true, true>)->Name("scan_backward/reference")->Arg(256);

}  // namespace

int main(int argc, char** argv) {
  bmojo::ensure_native_blas_kernels(argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
