"""Parity of bmojo against the independent PyTorch reference (issue #6).

For each layer letter and a mixed pattern: bmojo writes a checkpoint (`bmojo train --steps 0`), the weights
are moved well away from the initialisation here and written back, then for one batch bmojo's logits, loss,
innovation loss and every parameter gradient (`bmojo parity-dump`) must match the reference's (autograd),
and three AdamW steps on the batch must give the same objectives.

Usage: /usr/bin/python3 reference/parity_test.py [--binary build/bmojo] [--cases A,M,...] [--keep DIR]
Exits non-zero on any mismatch, printing the worst relative error per tensor.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bmojo_fast  # noqa: E402
import bmojo_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"vocab_size": 37, "d_model": 16, "n_heads": 2, "d_state": 4, "d_ff": 0}
CASES = {
    "A": {"layers": "AA", "window": 0, "d_ff": 24},
    "A_window_gqa": {"layers": "AA", "window": 4, "n_kv_heads": 1},
    "M": {"layers": "MM", "d_ff": 24},
    "F": {"layers": "FF", "window": 4},
    "F_untied": {"layers": "FF", "window": 5, "tie_fading": False, "n_kv_heads": 1},
    "B": {"layers": "BB", "window": 4, "k": 2, "m": 3, "eviction": "lowest_score", "lambda_innov": 0.5},
    "B_fifo_tau": {"layers": "BB", "window": 3, "k": 2, "m": 4, "tau": 0.8, "d_ff": 24},
    "mixed": {"layers": "BMAF", "window": 4, "k": 1, "m": 2, "d_ff": 24, "n_kv_heads": 1},
}
TOL_LOGITS, TOL_LOSS, TOL_GRAD, TOL_ADAM = 1e-4, 1e-5, 1e-3, 1e-4


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))


def run_case(binary, name, model_json, work):
    cfg = {"model": {**BASE, **model_json},
           "train": {"steps": 0, "batch_size": 2, "lr": 1e-2, "warmup_steps": 0, "eval_batches": 1},
           "data": {"seq_len": 16, "num_kv_pairs": 2}}
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    subprocess.run([binary, "train", "--config", os.path.join(d, "config.json"), "--out", d, "--threads", "1"],
                   check=True, capture_output=True)
    ckpt = os.path.join(d, "checkpoint.safetensors")
    tensors, meta = bmojo_ref.load_safetensors(ckpt)
    # Weights well away from the init: distinct innovation scores, a non-zero predictor P.
    gen = torch.Generator().manual_seed(7)
    params = {}
    for key, t in tensors.items():
        if key.startswith("optimizer."):
            continue
        if not key.endswith(("A_log", "dt_bias")):
            t = t + 0.2 * torch.randn(t.shape, generator=gen)
        params[key] = t
    bmojo_ref.save_safetensors(ckpt, params, meta)

    W = max(model_json.get("window", 0), 4)
    B, T, V = 2, 5 * W + 3, BASE["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[torch.rand(B, T, generator=gen) < 0.4] = bmojo_ref.IGNORE
    tokens.to(torch.int32).numpy().tofile(os.path.join(d, "tokens.bin"))
    targets.to(torch.int32).numpy().tofile(os.path.join(d, "targets.bin"))
    dump = os.path.join(d, "dump.safetensors")
    subprocess.run([binary, "parity-dump", ckpt, "--tokens", os.path.join(d, "tokens.bin"), "--targets",
                    os.path.join(d, "targets.bin"), "--batch", str(B), "--adam-steps", "3", "--out", dump,
                    "--threads", "1"], check=True, capture_output=True)
    got, _ = bmojo_ref.load_safetensors(dump)

    model = bmojo_ref.Reference(cfg["model"], params)
    logits, ce, inn = model(tokens, targets)
    (ce + inn).backward()
    errors = {"logits": (rel(got["logits"], logits.detach()), TOL_LOGITS),
              "loss": (rel(got["loss"], [ce.item()]), TOL_LOSS),
              "innovation_loss": (rel(got["innovation_loss"], [inn.item()]), TOL_LOSS)}
    for pname, param in model.params().items():
        errors["grad." + pname] = (rel(got["grad." + pname], param.grad), TOL_GRAD)

    # The fast formulation (the one the speed comparison runs) computes the same.
    fast = bmojo_fast.Fast(cfg["model"], params)
    flogits, fce, finn = fast(tokens, targets)
    (fce + finn).backward()
    errors["fast.logits"] = (rel(got["logits"], flogits.detach()), TOL_LOGITS)
    errors["fast.loss"] = (rel(got["loss"], [fce.item() + 0.0]), TOL_LOSS)
    errors["fast.worst_grad"] = (max(rel(got["grad." + n], q.grad) for n, q in fast.params().items()), TOL_GRAD)

    model = bmojo_ref.Reference(cfg["model"], params)
    opt = bmojo_ref.adamw_for(model, cfg["train"])
    objectives = []
    for _ in range(3):
        opt.zero_grad()
        _, ce, inn = model(tokens, targets)
        obj = ce + inn
        objectives.append(obj.item())
        obj.backward()
        torch.nn.utils.clip_grad_norm_(list(model.params().values()), 1.0)
        opt.step()
    errors["adam_objectives"] = (rel(got["adam_objectives"], objectives), TOL_ADAM)

    worst = max(errors.items(), key=lambda kv: kv[1][0] / kv[1][1])
    failed = {k: e for k, (e, tol) in errors.items() if not e <= tol}
    grad_worst = max(e for k, (e, _) in errors.items() if k.startswith("grad."))
    print(f"{name:>14}: logits {errors['logits'][0]:.1e}  loss {errors['loss'][0]:.1e}  "
          f"innovation {errors['innovation_loss'][0]:.1e}  worst grad {grad_worst:.1e}  "
          f"adam {errors['adam_objectives'][0]:.1e}  fast: logits {errors['fast.logits'][0]:.1e} "
          f"grad {errors['fast.worst_grad'][0]:.1e}"
          + ("" if not failed else f"  FAILED: {failed}"), flush=True)
    return not failed, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bmojo"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--keep", help="keep the work files in this directory")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        for name in args.cases.split(","):
            if name not in CASES:
                sys.exit(f"parity_test: unknown case '{name}' (have {', '.join(CASES)})")
            passed, _ = run_case(args.binary, name, CASES[name], work)
            ok = ok and passed
    print("parity: all cases match" if ok else "parity: MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
