"""Side-by-side training speed: bmojo against the fast PyTorch formulation (reference/bmojo_fast.py) on the
same config, the same weights, the same number of steps, the same threads and the same BLAS settings.

Both sides run full training steps on batches of uniform random tokens with every position scored
(forward, backward, gradient clipping, AdamW). bmojo is timed by `bmojo bench`; PyTorch by this script in
a subprocess whose OpenMP and OpenBLAS pools are pinned to the same thread count and which, like bmojo,
runs without OPENBLAS_CORETYPE (so both OpenBLAS builds pick their AVX-512 kernels). Achieved GFLOP/s
counts bmojo's model FLOPs per token (src/model/flops.cpp) for both.

Usage: /usr/bin/python3 reference/bench_vs_torch.py --config configs/bench/attention_4l_256.json
                                                   [--steps 10] [--warmup 2] [--threads 2] [--bf16] [--torch-bf16]
                                                   [--plain-malloc] [--repeat N] [--profile] [--json]
--bf16 runs bmojo with its bf16 matmul path (train.bf16_matmul); --torch-bf16 runs PyTorch's forward under
torch.autocast(cpu, bfloat16) (its matrix products in bf16 through oneDNN, backward following). Without
them both sides are fp32. Both sides run with the glibc malloc settings of MALLOC_TUNABLES unless
--plain-malloc.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# glibc malloc settings for both sides: keep freed memory in the heap instead of returning it to the kernel
# and mapping it again. PyTorch allocates every activation afresh, and on days when this machine's page faults
# are expensive, plain glibc settings cost it up to half its speed (2.5k against 4.7k tokens/s on AAAA,
# same minute); the standard advice for PyTorch on CPU (a caching malloc) amounts to this. bmojo allocates
# nothing in its training step, so it is not affected. --plain-malloc turns this off.
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:"
                   "glibc.malloc.top_pad=268435456")


def torch_side(args):
    """Runs in the pinned subprocess: prints one JSON line with the PyTorch timings."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bmojo_fast
    import bmojo_ref

    torch.set_num_threads(args.threads)
    tensors, meta = bmojo_ref.load_safetensors(args.checkpoint)
    config = json.loads(meta["config"])
    params = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    model = bmojo_fast.Fast(config["model"], params)
    opt = bmojo_ref.adamw_for(model, config["train"])
    B, T, V = config["train"]["batch_size"], config["data"]["seq_len"], config["model"]["vocab_size"]
    gen = torch.Generator().manual_seed(1)
    ms = []
    for i in range(args.warmup + args.steps):
        tokens = torch.randint(0, V, (B, T), generator=gen)
        targets = torch.randint(0, V, (B, T), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.torch_bf16):
            _, ce, inn = model(tokens, targets)
        (ce + inn).backward()
        torch.nn.utils.clip_grad_norm_(list(model.params().values()), config["train"].get("grad_clip", 1.0))
        opt.step()
        if i >= args.warmup:
            ms.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(ms)
    profile = None
    if args.torch_profile:
        # Where PyTorch's step goes: self CPU time per operator over 3 more steps; the matrix products
        # (mm, addmm, bmm) are the part bmojo runs on the same OpenBLAS in fp32.
        with torch.autograd.profiler.profile() as prof:
            for _ in range(3):
                tokens = torch.randint(0, V, (B, T), generator=gen)
                targets = torch.randint(0, V, (B, T), generator=gen)
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.torch_bf16):
                    _, ce, inn = model(tokens, targets)
                (ce + inn).backward()
                torch.nn.utils.clip_grad_norm_(list(model.params().values()),
                                               config["train"].get("grad_clip", 1.0))
                opt.step()
        ops = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages()), key=lambda x: -x[1])
        total = sum(t for _, t in ops)
        gemm = sum(t for k, t in ops if k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"))
        profile = {"gemm_share": gemm / total, "top": [[k, t / total] for k, t in ops[:12]]}
    # The machine's state: PyTorch's own sgemm into a preallocated output (no allocation in the loop).
    a, b, c = torch.randn(2048, 1024), torch.randn(1024, 1024), torch.empty(2048, 1024)
    for _ in range(3):
        torch.mm(a, b, out=c)
    t0 = time.perf_counter()
    for _ in range(10):
        torch.mm(a, b, out=c)
    sgemm = 2 * 2048 * 1024 * 1024 * 10 / (time.perf_counter() - t0) / 1e9
    print(json.dumps({"sgemm_gflops": sgemm, "profile": profile, "ms_per_step_median": median, "ms_per_step_min": min(ms), "ms_per_step_max": max(ms),
                      "tokens_per_s": B * T / (median / 1000), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bmojo"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bmojo with its bf16 matmul path (train.bf16_matmul)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate the two sides this many times and report the medians (default 1)")
    ap.add_argument("--torch-bf16", action="store_true",
                    help="PyTorch under torch.autocast(cpu, bfloat16): its matrix products in bf16 through oneDNN")
    ap.add_argument("--profile", "--torch-profile", dest="torch_profile", action="store_true",
                    help="also print where each side's step goes: bmojo's kernel shares (bmojo bench --profile) "
                         "and PyTorch's operator shares over 3 more steps")
    ap.add_argument("--plain-malloc", action="store_true",
                    help="run both sides with glibc's default malloc settings (see MALLOC_TUNABLES)")
    ap.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_side:
        return torch_side(args)

    with open(args.config) as f:
        config = json.load(f)
    if config.get("data", {}).get("task") != "random":
        sys.exit("bench_vs_torch: use a config with data.task = random (every position scored on both sides)")
    common = ["--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update({"OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
                "MKL_NUM_THREADS": str(args.threads)})
    if not args.plain_malloc:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    bench_cmd = ([args.binary, "bench", "--config", args.config, "--steps", str(args.steps), "--warmup",
                  str(args.warmup), "--json"] + common + (["--profile"] if args.torch_profile else []) + (["--set", "train.bf16_matmul=true"] if args.bf16 else []))
    bm_runs, pt_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # The same initial weights on both sides: bmojo writes them, the reference reads them.
        subprocess.run([args.binary, "train", "--config", args.config, "--steps", "0", "--out", tmp] + common,
                       check=True, capture_output=True)
        torch_cmd = (["/usr/bin/python3", os.path.abspath(__file__), "--torch-side", "--config", args.config,
                      "--checkpoint", os.path.join(tmp, "checkpoint.safetensors"), "--steps", str(args.steps),
                      "--warmup", str(args.warmup), "--threads", str(args.threads)]
                     + (["--torch-bf16"] if args.torch_bf16 else [])
                     + (["--torch-profile"] if args.torch_profile else []))
        # Alternate the two sides so that a change in the machine's speed hits both alike.
        for _ in range(args.repeat):
            bm_runs.append(json.loads(subprocess.run(bench_cmd, check=True, capture_output=True, text=True,
                                                     env=env).stdout))
            out = subprocess.run(torch_cmd, check=True, capture_output=True, text=True, env=env)
            pt_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    bm = dict(bm_runs[0])
    pt = dict(pt_runs[0])
    for side, runs in ((bm, bm_runs), (pt, pt_runs)):
        side["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in runs)
        side["ms_per_step_median"] = statistics.median(r["ms_per_step_median"] for r in runs)
    bm["gflops"] = bm["model_flops_per_token"] * bm["tokens_per_s"] / 1e9
    # The nominal fp32 peak of the CPU this ran on, as `bmojo bench` derives it (features x measured clock).
    peak_gflops = statistics.median(r["nominal_peak_gflops"] for r in bm_runs)
    flops = bm["model_flops_per_token"]
    result = {"config": os.path.relpath(args.config, ROOT), "layers": bm["layers"], "threads": args.threads,
              "bmojo_bf16_matmul": args.bf16, "torch_bf16_autocast": args.torch_bf16,
              "malloc_tunables": not args.plain_malloc, "repeat": args.repeat,
              "blas_core": bm["blas_core"], "bmojo_tokens_per_s": bm["tokens_per_s"],
              "torch_tokens_per_s": pt["tokens_per_s"], "ratio": bm["tokens_per_s"] / pt["tokens_per_s"],
              "bmojo_runs_tokens_per_s": [r["tokens_per_s"] for r in bm_runs],
              "torch_runs_tokens_per_s": [r["tokens_per_s"] for r in pt_runs],
              "bmojo_gflops": bm["gflops"], "torch_gflops": flops * pt["tokens_per_s"] / 1e9,
              "peak_gflops": peak_gflops, "bmojo_ms_per_step": bm["ms_per_step_median"],
              "torch_ms_per_step": pt["ms_per_step_median"], "torch_version": pt["torch"],
              "torch_sgemm_gflops": pt["sgemm_gflops"], "torch_profile": pt_runs[-1]["profile"],
              "measured_peak_gflops": statistics.median(r["measured_peak_gflops"] for r in bm_runs),
              "bmojo_profile": bm_runs[-1].get("profile")}
    if result["torch_profile"]:
        # The most bmojo could gain with matrix products as fast as PyTorch's and nothing else costing time.
        result["ratio_bound_same_matmul_speed"] = 1.0 / result["torch_profile"]["gemm_share"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['config']}: {bm['layers']}, T {bm['T']}, batch {bm['batch']}, {args.threads} threads, "
              f"{args.steps} steps (median)")
        print(f"  bmojo{' bf16' if args.bf16 else '     '}{bm['tokens_per_s']:9.0f} tokens/s  {bm['ms_per_step_median']:8.1f} ms/step  "
              f"{bm['gflops']:6.1f} GFLOP/s ({100 * bm['gflops'] / peak_gflops:.0f}% of fp32 peak, "
              f"{100 * bm['gflops'] / result['measured_peak_gflops']:.0f}% of the "
              f"{result['measured_peak_gflops']:.0f} measured now)")
        print(f"  PyTorch{' bf16' if args.torch_bf16 else '     '}{pt['tokens_per_s']:7.0f} tokens/s  {pt['ms_per_step_median']:8.1f} ms/step  "
              f"{result['torch_gflops']:6.1f} GFLOP/s ({100 * result['torch_gflops'] / peak_gflops:.0f}% of peak)"
              f"  [torch {pt['torch']}]")
        if args.repeat > 1:
            print(f"  (medians of {args.repeat} alternating runs: bmojo "
                  f"{', '.join(f'{x:.0f}' for x in result['bmojo_runs_tokens_per_s'])}; PyTorch "
                  f"{', '.join(f'{x:.0f}' for x in result['torch_runs_tokens_per_s'])})")
        if result["bmojo_profile"]:
            rows = result["bmojo_profile"]
            mm = sum(r["share"] for r in rows if r["kernel"].startswith("matmul"))
            print(f"  bmojo profile (bmojo bench --profile): matrix products {100 * mm:.0f}%; top: "
                  + ", ".join(f"{r['kernel']} {100 * r['share']:.1f}%" for r in rows[:8]))
        if result["torch_profile"]:
            prof = result["torch_profile"]
            print(f"  PyTorch profile (self CPU time, 3 steps): matrix products {100 * prof['gemm_share']:.0f}%; top: "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in prof["top"]))
            print(f"  bound: with matrix products only as fast as PyTorch's and nothing else, bmojo would be "
                  f"{result['ratio_bound_same_matmul_speed']:.2f}x")
        print(f"  ratio   {result['ratio']:.2f}x   (machine state: PyTorch's sgemm 2048x1024x1024 at "
              f"{result['torch_sgemm_gflops']:.0f} GFLOP/s; about 460 on a good day)")


if __name__ == "__main__":
    main()
