#!/usr/bin/env python3
"""kill -9 during checkpoint and store writes: nothing good on disk is ever lost.

    python3 scripts/kill_test.py [--rounds 50] [--binary build/bmojo]

Checkpoints: `bmojo train` writes a checkpoint every step; it is killed with SIGKILL at a random moment, then
the checkpoint must load (`bmojo info --checkpoint`, which verifies the checksum) and its step must not go
backwards between rounds (each round resumes from the last one). Stores: `bmojo generate --store` writes
evicted entries in the background while it decodes; it is killed at a random moment, then the store is
reopened, a torn tail (if any) is cut off, and the number of intact entries must not go below the number
seen after the previous round. Prints one line per kind; exits non-zero on any loss.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bmojo"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="bmojo_kill_")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        cfg = os.path.join(work, "c.json")
        with open(cfg, "w") as f:
            json.dump({"model": {"vocab_size": 300, "d_model": 64, "n_heads": 2, "layers": "BM", "window": 4,
                                 "k": 2, "m": 2, "d_ff": 128},
                       "train": {"steps": 1000000, "batch_size": 4, "eval_every": 0, "log_every": 1,
                                 "checkpoint_every": 1},
                       "data": {"seq_len": 32, "num_kv_pairs": 2}}, f)
        out = os.path.join(work, "run")
        ckpt = os.path.join(out, "checkpoint.safetensors")
        # Checkpoints.
        last_step, bad, kills_mid_write = 0, 0, 0
        for r in range(args.rounds):
            cmd = [args.binary, "train", "--config", cfg, "--out", out, "--threads", "1"]
            if os.path.exists(ckpt):
                cmd += ["--resume", ckpt]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            time.sleep(rng.uniform(0.3, 1.2))
            if os.path.exists(ckpt + ".tmp"):
                kills_mid_write += 1
            p.send_signal(signal.SIGKILL)
            p.wait()
            if not os.path.exists(ckpt):
                continue
            info = run([args.binary, "info", "--json", "--checkpoint", ckpt], env=env)
            if info.returncode != 0:
                bad += 1
                print(f"round {r}: checkpoint does not load: {info.stderr.strip()}", file=sys.stderr)
                continue
            step = json.loads(info.stdout)["step"]
            if step < last_step:
                bad += 1
                print(f"round {r}: checkpoint went back from step {last_step} to {step}", file=sys.stderr)
            last_step = step
        print(f"checkpoints: {args.rounds} kill -9 during training with a checkpoint every step "
              f"({kills_mid_write} with a temporary file present at the kill), {bad} lost or broken, "
              f"last step {last_step}")
        # Stores: a model trained above, generating with a store.
        store = os.path.join(work, "store")
        record = 4 + 8 + 4 + 4 * 2 * 2 * 32 + 8  # magic, position, score, [k | v] of 2 KV heads of 32, checksum
        kept, store_bad, torn = 0, 0, 0
        prompt = " ".join(str(rng.randrange(300)) for _ in range(4000))
        for r in range(args.rounds):
            p = subprocess.Popen([args.binary, "generate", ckpt, "--ids", "-p", prompt, "-n", "100000",
                                  "--store", store, "--prefill-block", "1", "--threads", "1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            time.sleep(rng.uniform(0.2, 1.0))
            p.send_signal(signal.SIGKILL)
            p.wait()
            reopen = run([args.binary, "generate", ckpt, "--ids", "-p", "1", "-n", "1", "--store", store,
                          "--threads", "1"], env=env)
            if reopen.returncode != 0:
                store_bad += 1
                print(f"round {r}: store does not reopen: {reopen.stderr.strip()}", file=sys.stderr)
                continue
            torn += "dropped" in reopen.stderr
            path = os.path.join(store, "layer0.bmstore")
            n = (os.path.getsize(path) - 36) // record
            if n < kept:
                store_bad += 1
                print(f"round {r}: store went from {kept} to {n} entries", file=sys.stderr)
            kept = n
        print(f"stores: {args.rounds} kill -9 during background store writes, {torn} torn tails cut off on reopen, "
              f"{store_bad} rounds that lost committed entries, {kept} entries kept at the end")
        return 1 if bad or store_bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
