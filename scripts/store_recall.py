#!/usr/bin/env python3
"""Long-term memory in storage on long-range recall (issue #4, SPEC section 6).

Takes a B'MOJO model trained on long-range MQAR (gap 64; configs/store_recall/b_long_range.json, the same
run as the MQAR suite's best long-range B) and evaluates it through streaming inference on gaps far longer
than training: as trained (lowest_score eviction keeps the surprising pair tokens against the predictable
filler, so the bounded memory alone holds them), and with memory settings under which the bounded eidetic
memory cannot keep the key-value pairs until the queries arrive:
  - fifo eviction with the trained m = 32 (the memory then holds only the last m / k = 4 chunks);
  - m = 4 with the trained lowest_score eviction (fewer slots than the 2K = 8 pair tokens);
each without a store and with a store (a fresh one per sequence, synchronous, r entries per KV head read at
every chunk boundary). Writes a markdown table to --out (default results/store_recall/results.md).

Usage: scripts/store_recall.py [--checkpoint CKPT] [--gaps 64,1024,4096] [--retrieve 8,16] [--batches 4]
                               [--threads N]
Without --checkpoint the model is trained first (about 12 minutes on one core), or reused from a previous
run of this script or of the MQAR suite.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bmojo")
CONFIG = os.path.join(ROOT, "configs", "store_recall", "b_long_range.json")


def run(args):
    out = subprocess.run([BIN] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"store_recall: bmojo {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "store_recall"))
    ap.add_argument("--gaps", default="64,1024,4096")
    ap.add_argument("--retrieve", default="8,16")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("store_recall: build first (scripts/build.sh)")
    threads = ["--threads", str(args.threads)] if args.threads else []
    os.makedirs(args.out, exist_ok=True)
    ckpt = args.checkpoint
    if not ckpt:
        suite = os.path.join(ROOT, "results", "mqar", "runs", "long_range", "B", "lr0.01", "checkpoint.safetensors")
        own = os.path.join(args.out, "model", "checkpoint.safetensors")
        ckpt = suite if os.path.exists(suite) else own
        if not os.path.exists(ckpt):
            print(f"training {CONFIG} into {os.path.dirname(own)} ...", flush=True)
            run(["train", "--config", CONFIG, "--out", os.path.dirname(own)] + threads)
    settings = [("as trained: lowest_score eviction, m = 32", []),
                ("fifo eviction, m = 32", ["--set", "model.eviction=fifo"]),
                ("lowest_score eviction, m = 4", ["--set", "model.m=4"])]
    gaps = [int(g) for g in args.gaps.split(",")]
    rs = [int(r) for r in args.retrieve.split(",")]
    rows = []
    for label, knobs in settings:
        for gap in gaps:
            base = ["eval", ckpt, "--json", "--batches", str(args.batches), "--set", f"data.gap={gap}"] + knobs + threads
            row = {"setting": label, "gap": gap}
            row["none"] = json.loads(run(base + ["--streaming"]))["accuracy"]
            for r in rs:
                store = os.path.join(args.out, "stores")
                row[f"r{r}"] = json.loads(run(base + ["--store", store, "--retrieve", str(r)]))["accuracy"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    trained = json.loads(run(["eval", ckpt, "--json", "--batches", str(args.batches)] + threads))["accuracy"]
    lines = ["# Long-range recall with the long-term memory store", "",
             f"Model: `{os.path.relpath(ckpt, ROOT)}` (trained at gap 64; accuracy there {trained:.3f}, parallel forward).",
             f"Command: `scripts/store_recall.py {' '.join(sys.argv[1:])}`", "",
             "| memory setting | gap | no store | " + " | ".join(f"store, r = {r}" for r in rs) + " |",
             "|---|---|---|" + "---|" * len(rs)]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['gap']} | {row['none']:.3f} | " +
                     " | ".join(f"{row[f'r{r}']:.3f}" for r in rs) + " |")
    path = os.path.join(args.out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
