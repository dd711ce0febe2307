#!/usr/bin/python3
"""Language-modelling suite (issue #5): A, M, a Mamba/attention hybrid, F and B at about the same parameter
count, trained on the same tokens of real text; test perplexity and bits per byte, the length-generalisation
sweep (trained at T, evaluated at T, 2T, 4T, 8T), and training throughput at T = 512 and 2048.

  python3 scripts/lm_suite.py                 # everything: corpora, tokenizer, 5 trainings, evals, plots
  python3 scripts/lm_suite.py --models A,B    # a subset
  python3 scripts/lm_suite.py --steps 50      # a quick smoke run (numbers meaningless)
  python3 scripts/lm_suite.py --study --out results/lm_study   # the B'MOJO settings of configs/lm_study.json
  python3 scripts/lm_suite.py --corpora DIR --data DIR --vocab 400 --set data.seq_len=32 ...   # other text

Writes results/lm/<model>/ (checkpoint, log, train.json, eval_valid.json, eval_test.json, lengthgen.json),
results/lm/bench.json (training tokens/s at each --bench-lens, each model alone) and the report
results/lm/results.md with lengthgen.svg, lengthgen_relative.svg and valid_loss.svg. docs/lm.md explains
the set-up and quotes a run. A model whose train.json records the same config, overrides and
steps is not trained again (an interrupted suite continues with the next model); --retrain forces it.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402
from mqar_suite import machine  # noqa: E402

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


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def valid_curve(log):
    """(step, validation loss) of each evaluation in a training log.jsonl."""
    with open(log) as f:
        return [(j["step"], j["eval_loss"]) for j in map(json.loads, f) if "eval_loss" in j]


def prepare(binary, vocab, corpora, data):
    """Tokenizer and token files under `data` from the documents under `corpora` (fetched first when the
    default folder is missing). Returns the --set overrides that point a config at them."""
    if not os.path.isdir(os.path.join(ROOT, corpora, "train")):
        if corpora != "data/corpora":
            sys.exit(f"lm_suite: no documents under {corpora}/train")
        run([sys.executable, "scripts/fetch_corpora.py"])
    os.makedirs(os.path.join(ROOT, data), exist_ok=True)
    model = f"{data}/bpe{vocab}.model"
    if not os.path.exists(os.path.join(ROOT, model)):
        print(run([binary, "data", "tokenizer", "-i", f"{corpora}/train", "-o", model, "--vocab", str(vocab)]))
    for split in ("train", "valid", "test"):
        out = f"{data}/{split}.bpe.bmtok"
        if not os.path.exists(os.path.join(ROOT, out)):
            print(run([binary, "data", "encode", "-i", f"{corpora}/{split}", "-t", model, "-o", out]))
    if data == "data/lm" and vocab == 4096:
        return []  # the configs' own paths
    return [a for k, v in (("data.train_tokens", f"{data}/train.bpe.bmtok"), ("data.valid_tokens",
            f"{data}/valid.bpe.bmtok"), ("data.tokenizer", model)) for a in ("--set", f"{k}={v}")]


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
    ap.add_argument("--corpora", default="data/corpora", help="documents, one file each, under train/valid/test")
    ap.add_argument("--data", default="data/lm", help="where the tokenizer and the token files are written")
    ap.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary of the tokenizer")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every training and benchmark (repeatable)")
    ap.add_argument("--lengthgen-docs", type=int, default=16)
    ap.add_argument("--bucket", type=int, default=128, help="positions per bucket of the length sweep")
    ap.add_argument("--bench-lens", default="512,2048",
                    help="sequence lengths of the training benchmark (each at 4096 tokens a step)")
    ap.add_argument("--retrain", action="store_true", help="train again even where a finished run matches")
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

    binary = args.binary
    threads = ["--threads", str(args.threads)] if args.threads else []
    common = prepare(binary, args.vocab, args.corpora, args.data) + [a for kv in args.set for a in ("--set", kv)]

    def overrides(m):
        return common + [a for k, v in runs[m][1].items()
                         for a in ("--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}")]
    test_tokens = f"{args.data}/test.bpe.bmtok"
    out = os.path.join(ROOT, args.out)
    os.makedirs(out, exist_ok=True)
    results = {}
    for m in models:
        d = os.path.join(out, m)
        os.makedirs(d, exist_ok=True)
        ckpt = os.path.join(d, "checkpoint.safetensors")
        cfg = runs[m][0]
        r = {"config": cfg, "overrides": runs[m][1]}
        key = {"config": cfg, "overrides": runs[m][1], "steps": args.steps}
        if common:
            key["common"] = common
        done = os.path.join(d, "train.json")
        # A finished run is one whose train.json matches this run; its checkpoint is needed only for evaluations
        # that are not cached (git keeps the summaries, not the checkpoints, so a suite continues elsewhere).
        evals = [os.path.join(d, n) for n in ("eval_valid.json", "eval_test.json", "lengthgen.json")]
        finished = (os.path.exists(done) and json.load(open(done)).get("run") == key and
                    (os.path.exists(ckpt) or all(map(os.path.exists, evals))))
        trained = args.retrain or not finished
        if trained:
            if os.path.exists(os.path.join(d, "log.jsonl")):
                os.remove(os.path.join(d, "log.jsonl"))
            t0 = time.time()
            cmd = [binary, "train", "-c", cfg, "-o", d, "--json"] + overrides(m) + threads
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            s = last_json(run(cmd, log=os.path.join(d, "train.log")))
            s["wall_s"] = time.time() - t0
            s["run"] = key
            s["machine"] = machine()
            s["valid_curve"] = valid_curve(os.path.join(d, "log.jsonl"))
            write_json(done, s)
        with open(done) as f:
            r["train"] = json.load(f)
        # Runs finished before train.json held the curve have it only in their (untracked) log.
        r["valid_curve"] = r["train"].get("valid_curve", [])
        if not r["valid_curve"] and os.path.exists(os.path.join(d, "log.jsonl")):
            r["valid_curve"] = valid_curve(os.path.join(d, "log.jsonl"))

        def cached(name, produce):
            # The evaluations of a run that was not trained again are reused.
            path = os.path.join(d, name)
            if trained or not os.path.exists(path):
                produce(path)
            with open(path) as f:
                return json.load(f)

        r["valid"] = cached("eval_valid.json", lambda p: write_json(p, last_json(run(
            [binary, "eval", ckpt, "--all", "--json"] + threads))))
        r["test"] = cached("eval_test.json", lambda p: write_json(p, last_json(run(
            [binary, "eval", ckpt, "--all", "--set", f"data.valid_tokens={test_tokens}", "--json"] + threads))))
        r["lengthgen"] = cached("lengthgen.json", lambda p: run(
            [binary, "lengthgen", ckpt, "--tokens", test_tokens, "--max-docs", str(args.lengthgen_docs),
             "--bucket", str(args.bucket), "-o", p, "--json"] + threads, log=os.path.join(d, "lengthgen.log")))
        results[m] = r
        t = r["test"]
        print(f"[lm-suite] {m}: test loss {t['loss']:.4f} ppl {t['perplexity']:.2f} bpb {t['bits_per_byte']:.4f}",
              flush=True)
    bench = {}
    if args.reuse_bench and os.path.exists(os.path.join(out, "bench.json")):
        with open(os.path.join(out, "bench.json")) as f:
            bench = json.load(f)
    elif not args.skip_bench:
        # Each model alone on the machine (the runs above are finished), 4096 tokens a step at every T.
        for m in models:
            bench[m] = {}
            for T in (int(t) for t in args.bench_lens.split(",") if t):
                bench[m][str(T)] = last_json(run(
                    [binary, "bench", "-c", runs[m][0]] + overrides(m) +
                    ["--set", f"data.seq_len={T}", "--set", f"train.batch_size={max(1, 4096 // T)}", "--steps", "3",
                     "--warmup", "1", "--json"] + threads))
        write_json(os.path.join(out, "bench.json"), bench)
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
             f"Command: `python3 scripts/lm_suite.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`"
             f" ({'configs/lm_study.json: configs/lm/<base>.json with overrides' if args.study else 'configs/lm/*.json'})."
             f" Test split: {results[models[0]]['test']['labelled']} tokens.", "",
             "| model | params | train wall (s) | valid loss | valid ppl | valid bits/byte | test loss | test ppl "
             "| test bits/byte |", "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        r = results[m]
        v, t = r["valid"], r["test"]
        lines.append(f"| {LABELS[m]} | {r['train']['params']:,} | {r['train'].get('wall_s', 0):,.0f} | "
                     f"{v['loss']:.4f} | {v['perplexity']:.2f} | {v['bits_per_byte']:.4f} | "
                     f"{t['loss']:.4f} | {t['perplexity']:.2f} | {t['bits_per_byte']:.4f} |")
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
        lens = sorted({int(T) for m in models for T in bench.get(m, {})})
        lines += ["", "Training throughput, each model alone (`bmojo bench`, 4096 tokens a step, median of 3 steps):",
                  "", "| model | " + " | ".join(f"tokens/s at T = {T} | GFLOP/s" for T in lens) + " |",
                  "|---|" + "---|---|" * len(lens)]
        for m in models:
            cells = []
            for T in lens:
                b = bench.get(m, {}).get(str(T))
                cells += [f"{b['tokens_per_s']:,.0f}", f"{b['gflops']:.1f}"] if b else ["", ""]
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        for T in lens:
            if str(T) in bench.get("A", {}) and str(T) in bench.get("B", {}):
                lines.append(f"\nB / A training tokens/s at T = {T}: "
                             f"{bench['B'][str(T)]['tokens_per_s'] / bench['A'][str(T)]['tokens_per_s']:.3f}")
    lines += ["", "![loss per position](lengthgen.svg)", "", "![loss change per position](lengthgen_relative.svg)", "", "![validation loss](valid_loss.svg)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
