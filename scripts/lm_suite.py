#!/usr/bin/python3
"""Language-modelling suite (issue #5): A, M, a Mamba/attention hybrid, F and B at about the same parameter
count, trained on the same tokens of real text; test perplexity and bits per byte, the length-generalisation
sweep (trained at T, evaluated at T, 2T, 4T, 8T), and training throughput at T = 2048.

  python3 scripts/lm_suite.py                 # everything: corpora, tokenizer, 5 trainings, evals, plots
  python3 scripts/lm_suite.py --models A,B    # a subset
  python3 scripts/lm_suite.py --steps 50      # a quick smoke run (numbers meaningless)
  python3 scripts/lm_suite.py --study --out results/lm_study   # the B'MOJO settings of configs/lm_study.json

Writes results/lm/<model>/ (checkpoint, log, eval.json, lengthgen.json), results/lm/bench.json and the
report results/lm/results.md with results/lm/lengthgen.svg and results/lm/valid_loss.svg. docs/lm.md
explains the set-up and quotes a run.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["A", "M", "hybrid", "F", "B"]
LABELS = {"A": "A (full attention)", "M": "M (Mamba)", "hybrid": "hybrid (MAMA)", "F": "F (B'MOJO-F)",
          "B": "B (B'MOJO)"}
COLORS = {"A": "#4c72b0", "M": "#dd8452", "hybrid": "#55a868", "F": "#8172b3", "B": "#c44e52"}


def run(cmd, log=None):
    print("[lm-suite] $ " + " ".join(cmd), flush=True)
    if log:
        with open(log, "w") as f:
            r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True)
    else:
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"lm_suite: command failed ({r.returncode}): {' '.join(cmd)}" + (f"; see {log}" if log else ""))
    return r.stdout


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output")


def prepare(binary, vocab):
    if not os.path.isdir(os.path.join(ROOT, "data/corpora/train")):
        run([sys.executable, "scripts/fetch_corpora.py"])
    os.makedirs(os.path.join(ROOT, "data/lm"), exist_ok=True)
    model = "data/lm/bpe4096.model"
    if not os.path.exists(os.path.join(ROOT, model)):
        print(run([binary, "data", "tokenizer", "-i", "data/corpora/train", "-o", model, "--vocab", str(vocab)]))
    for split in ("train", "valid", "test"):
        out = f"data/lm/{split}.bpe.bmtok"
        if not os.path.exists(os.path.join(ROOT, out)):
            print(run([binary, "data", "encode", "-i", f"data/corpora/{split}", "-t", model, "-o", out]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="build/bmojo")
    ap.add_argument("--models", default="", help="comma-separated subset (default: all of the suite or study)")
    ap.add_argument("--study", action="store_true",
                    help="run the B'MOJO variants of configs/lm_study.json (base config + --set overrides) "
                         "instead of the five models")
    ap.add_argument("--steps", type=int, default=0, help="override train.steps (0: the configs' value)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="results/lm")
    ap.add_argument("--lengthgen-docs", type=int, default=16)
    ap.add_argument("--bucket", type=int, default=128, help="positions per bucket of the length sweep")
    ap.add_argument("--bench-len", type=int, default=2048)
    ap.add_argument("--skip-train", action="store_true", help="reuse existing checkpoints")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--reuse-bench", action="store_true", help="report the bench.json of an earlier run")
    args = ap.parse_args()
    # Every run: its base config and the overrides on it (none for the suite's five models).
    if args.study:
        with open(os.path.join(ROOT, "configs", "lm_study.json")) as f:
            variants = json.load(f)["variants"]
        runs = {name: (f"configs/lm/{v['base']}.json", v["set"]) for name, v in variants.items()}
        LABELS.update({name: v["label"] for name, v in variants.items()})
    else:
        runs = {m: (f"configs/lm/{m}.json", {}) for m in MODELS}
    models = [m for m in args.models.split(",") if m] or list(runs)
    for m in models:
        if m not in runs:
            sys.exit(f"lm_suite: unknown model {m} (known: {', '.join(runs)})")

    def overrides(m):
        return [a for k, v in runs[m][1].items() for a in ("--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}")]
    binary = args.binary
    threads = ["--threads", str(args.threads)] if args.threads else []
    prepare(binary, 4096)
    out = os.path.join(ROOT, args.out)
    os.makedirs(out, exist_ok=True)
    results = {}
    for m in models:
        d = os.path.join(out, m)
        os.makedirs(d, exist_ok=True)
        ckpt = os.path.join(d, "checkpoint.safetensors")
        cfg = runs[m][0]
        r = {"config": cfg, "overrides": runs[m][1]}
        if not (args.skip_train and os.path.exists(ckpt)):
            if os.path.exists(os.path.join(d, "log.jsonl")):
                os.remove(os.path.join(d, "log.jsonl"))
            t0 = time.time()
            cmd = [binary, "train", "-c", cfg, "-o", d, "--json"] + overrides(m) + threads
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            s = last_json(run(cmd, log=os.path.join(d, "train.log")))
            s["wall_s"] = time.time() - t0
            with open(os.path.join(d, "train.json"), "w") as f:
                json.dump(s, f)
        with open(os.path.join(d, "train.json")) as f:
            r["train"] = json.load(f)
        ev = last_json(run([binary, "eval", ckpt, "--all", "--set", "data.valid_tokens=data/lm/test.bpe.bmtok",
                            "--json"] + threads))
        with open(os.path.join(d, "eval_test.json"), "w") as f:
            json.dump(ev, f)
        r["test"] = ev
        lg = os.path.join(d, "lengthgen.json")
        run([binary, "lengthgen", ckpt, "--tokens", "data/lm/test.bpe.bmtok", "--max-docs",
             str(args.lengthgen_docs), "--bucket", str(args.bucket), "-o", lg, "--json"] + threads, log=os.path.join(d, "lengthgen.log"))
        with open(lg) as f:
            r["lengthgen"] = json.load(f)
        with open(os.path.join(d, "log.jsonl")) as f:
            r["valid_curve"] = [(j["step"], j["eval_loss"]) for j in map(json.loads, f) if "eval_loss" in j]
        results[m] = r
        print(f"[lm-suite] {m}: test loss {ev['loss']:.4f} ppl {ev['perplexity']:.2f} bpb {ev['bits_per_byte']:.4f}",
              flush=True)
    bench = {}
    if args.reuse_bench and os.path.exists(os.path.join(out, "bench.json")):
        with open(os.path.join(out, "bench.json")) as f:
            bench = json.load(f)
    elif not args.skip_bench:
        for m in models:
            b = last_json(run([binary, "bench", "-c", runs[m][0]] + overrides(m) + ["--set",
                               f"data.seq_len={args.bench_len}", "--set", "train.batch_size=2", "--steps", "3",
                               "--warmup", "1", "--json"] + threads))
            bench[m] = b
        with open(os.path.join(out, "bench.json"), "w") as f:
            json.dump(bench, f, indent=1)
    report(out, models, results, bench, args)


def report(out, models, results, bench, args):
    T = next(iter(results.values()))["lengthgen"]["train_length"]
    plots.line_chart(os.path.join(out, "lengthgen.svg"), f"Loss per position, trained at T = {T} (test documents)",
               {m: [((b["start"] + b["end"]) / 2, b["loss"]) for b in results[m]["lengthgen"]["buckets"]]
                for m in models}, "position (tokens)", "loss (nats/token)", vline=T, vlabel="T",
                     labels=LABELS, colors=COLORS)
    rel = {}
    for m in models:
        lg = results[m]["lengthgen"]
        base = next(p["loss"] for p in lg["per_multiple"] if p["multiple"] == 1) if any(
            p["multiple"] == 1 for p in lg["per_multiple"]) else 0.0
        rel[m] = [((b["start"] + b["end"]) / 2, b["loss"] - base) for b in lg["buckets"]]
    plots.line_chart(os.path.join(out, "lengthgen_relative.svg"),
               "Loss per position minus the model's own mean loss over [0, T)", rel, "position (tokens)",
               "loss change (nats/token)", vline=T, vlabel="T", labels=LABELS, colors=COLORS)
    plots.line_chart(os.path.join(out, "valid_loss.svg"), "Validation loss during training",
               {m: results[m]["valid_curve"] for m in models}, "step", "loss (nats/token)", labels=LABELS,
                     colors=COLORS)
    lines = ["# Language-modelling suite results", "",
             f"Command: `python3 scripts/lm_suite.py{' --study' if args.study else ''}"
             f"{' --steps ' + str(args.steps) if args.steps else ''}`"
             f" ({'configs/lm_study.json: configs/lm/<base>.json with overrides' if args.study else 'configs/lm/*.json'})."
             f" Test split: {results[models[0]]['test']['labelled']} tokens.", "",
             "| model | params | train tok/s (T=512) | test loss | test ppl | test bits/byte |",
             "|---|---|---|---|---|---|"]
    for m in models:
        r = results[m]
        lines.append(f"| {LABELS[m]} | {r['train']['params']:,} | {r['train']['tokens_per_s']:,.0f} | "
                     f"{r['test']['loss']:.4f} | {r['test']['perplexity']:.2f} | {r['test']['bits_per_byte']:.4f} |")
    mults = [p["multiple"] for p in results[models[0]]["lengthgen"]["per_multiple"]]
    lines += ["", f"Length generalisation (trained at T = {T}; mean loss over positions [0, mT) of the same "
              f"{results[models[0]]['lengthgen']['documents']} test documents; in brackets the mean over [T, mT)):", "",
              "| model | " + " | ".join(f"{m}T" for m in mults) + " |", "|---|" + "---|" * len(mults)]
    for m in models:
        cells = []
        for p in results[m]["lengthgen"]["per_multiple"]:
            c = f"{p['loss']:.4f}"
            if "loss_beyond_T" in p:
                c += f" ({p['loss_beyond_T']:.4f})"
            cells.append(c)
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    if bench:
        lines += ["", f"Training throughput at T = {args.bench_len} (batch 2, `bmojo bench`, median of 3 steps):", "",
                  "| model | tokens/s | ms/step | GFLOP/s |", "|---|---|---|---|"]
        for m in models:
            b = bench[m]
            lines.append(f"| {LABELS[m]} | {b['tokens_per_s']:,.0f} | {b['ms_per_step_median']:.1f} | {b['gflops']:.1f} |")
        if "A" in bench and "B" in bench:
            lines.append(f"\nB / A training tokens/s at T = {args.bench_len}: "
                         f"{bench['B']['tokens_per_s'] / bench['A']['tokens_per_s']:.3f}")
    lines += ["", "![loss per position](lengthgen.svg)", "", "![loss change per position](lengthgen_relative.svg)", "", "![validation loss](valid_loss.svg)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
