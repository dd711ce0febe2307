"""Side-by-side training speed: bmojo against the fast PyTorch formulation (reference/bmojo_fast.py) on the
same config, the same weights, the same number of steps, the same threads and the same BLAS settings.

Both sides run full training steps on batches of uniform random tokens with every position scored
(forward, backward, gradient clipping, AdamW). bmojo is timed by `bmojo bench`; PyTorch by this script in
a subprocess whose OpenMP and OpenBLAS pools are pinned to the same thread count and which, like bmojo,
runs without OPENBLAS_CORETYPE (so both OpenBLAS builds pick their AVX-512 kernels). Achieved GFLOP/s
counts bmojo's model FLOPs per token (src/model/flops.cpp) for both.

Usage: /usr/bin/python3 reference/bench_vs_torch.py --config configs/bench/attention_4l_256.json
                                                   [--steps 10] [--warmup 2] [--threads 2] [--bf16] [--json]
--bf16 runs bmojo with its bf16 matmul path (train.bf16_matmul); PyTorch stays fp32.
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
PEAK_GFLOPS = 560.0  # fp32, both cores of this machine (AMD Zen 5, AVX-512)


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
    print(json.dumps({"ms_per_step_median": median, "ms_per_step_min": min(ms), "ms_per_step_max": max(ms),
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
    ap.add_argument("--bf16", action="store_true", help="bmojo with its bf16 matmul path (PyTorch stays fp32)")
    ap.add_argument("--torch-bf16", action="store_true",
                    help="PyTorch under torch.autocast(cpu, bfloat16): its matrix products in bf16 through oneDNN")
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
    bm = json.loads(subprocess.run([args.binary, "bench", "--config", args.config, "--steps", str(args.steps),
                                    "--warmup", str(args.warmup), "--json"] + common
                                   + (["--set", "train.bf16_matmul=true"] if args.bf16 else []),
                                   check=True, capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        # The same initial weights on both sides: bmojo writes them, the reference reads them.
        subprocess.run([args.binary, "train", "--config", args.config, "--steps", "0", "--out", tmp] + common,
                       check=True, capture_output=True)
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        env.update({"OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
                    "MKL_NUM_THREADS": str(args.threads)})
        out = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), "--torch-side", "--config", args.config,
                              "--checkpoint", os.path.join(tmp, "checkpoint.safetensors"), "--steps",
                              str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
                             + (["--torch-bf16"] if args.torch_bf16 else []),
                             check=True, capture_output=True, text=True, env=env)
        pt = json.loads(out.stdout.strip().splitlines()[-1])
    flops = bm["model_flops_per_token"]
    result = {"config": os.path.relpath(args.config, ROOT), "layers": bm["layers"], "threads": args.threads,
              "bmojo_bf16_matmul": args.bf16,
              "blas_core": bm["blas_core"], "bmojo_tokens_per_s": bm["tokens_per_s"],
              "torch_tokens_per_s": pt["tokens_per_s"], "ratio": bm["tokens_per_s"] / pt["tokens_per_s"],
              "bmojo_gflops": bm["gflops"], "torch_gflops": flops * pt["tokens_per_s"] / 1e9,
              "peak_gflops": PEAK_GFLOPS, "bmojo_ms_per_step": bm["ms_per_step_median"],
              "torch_ms_per_step": pt["ms_per_step_median"], "torch_version": pt["torch"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['config']}: {bm['layers']}, T {bm['T']}, batch {bm['batch']}, {args.threads} threads, "
              f"{args.steps} steps (median)")
        print(f"  bmojo{' bf16' if args.bf16 else '     '}{bm['tokens_per_s']:9.0f} tokens/s  {bm['ms_per_step_median']:8.1f} ms/step  "
              f"{bm['gflops']:6.1f} GFLOP/s ({100 * bm['gflops'] / PEAK_GFLOPS:.0f}% of fp32 peak)")
        print(f"  PyTorch {pt['tokens_per_s']:9.0f} tokens/s  {pt['ms_per_step_median']:8.1f} ms/step  "
              f"{result['torch_gflops']:6.1f} GFLOP/s ({100 * result['torch_gflops'] / PEAK_GFLOPS:.0f}% of peak)"
              f"  [torch {pt['torch']}]")
        print(f"  ratio   {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
