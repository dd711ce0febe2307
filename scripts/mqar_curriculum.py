#!/usr/bin/env python3
"""Long-range MQAR through a curriculum (issue #17): can full attention learn the long-range task at all?

From scratch, full attention stays on the 1-of-K plateau of the long-range task (pairs, then G zero tokens,
then the queries) even with 4x the steps, while the same model solves the standard task. Here each model
first trains on the standard task (configs/mqar_suite/tasks/standard.json), its model is then evaluated
as it is at several gaps (zero-shot: it never saw one), and a second run starts from its weights
(`bmojo train --init`) on the long-range task (tasks/long_range.json). Same models, steps, stopping rule
(train.stop_accuracy) and held-out evaluation as scripts/mqar_suite.py; both stages of a model use its
learning rate (--lr, default 2.2e-3, the best on the standard task of both full attention and B in the
grid; --model-lrs for others, e.g. hybrid=1e-2). --standard-task and --long-range-task pick another pair of
the suite's tasks, e.g. standard_L128_K8 and long_range_L128_K8 (gap 128; give --gaps to match).

Writes under --out: <model>/seed<s>/{standard,long_range}/{config.json,result.json,...} (config.json and
result.json are tracked by git, as the suite's), <model>/seed<s>/zero_shot.json, and results.md: per model
and seed the standard accuracy, the zero-shot accuracy at each gap and the long-range accuracy after the
curriculum with the steps it took, then the mean and spread over seeds. Finished stages are reused.

Usage: scripts/mqar_curriculum.py [--out results/mqar_curriculum] [--models A_full,B] [--seeds 3]
                                  [--lr 2.1544e-3] [--model-lrs hybrid=1e-2] [--gaps 16,32,64] [--steps N]
                                  [--long-range-steps N]
                                  [--standard-task standard] [--long-range-task long_range]
                                  [--jobs 2] [--threads 1]
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqar_suite import ROOT, SUITE, load, mean_sd, merge, run_one  # noqa: E402


def stage_config(model, task, lr, seed, steps):
    c = merge(merge(load(os.path.join(SUITE, "common.json")), load(os.path.join(SUITE, "tasks", task + ".json"))),
              load(os.path.join(SUITE, "models", model + ".json")))
    c["train"]["lr"] = lr
    if seed:
        c["train"]["seed"] = seed
    if steps:
        c["train"]["steps"] = steps
    return c


def cached(config, run_dir):
    """Whether run_one would reuse run_dir for config."""
    paths = [os.path.join(run_dir, n) for n in ("result.json", "config.json")]
    return all(os.path.exists(p) for p in paths) and load(paths[1]) == config


def shots_cached(path, gaps):
    """Whether path holds the zero-shot accuracies of exactly these gaps."""
    return os.path.exists(path) and sorted(int(g) for g in load(path)) == sorted(gaps)


def zero_shot(binary, checkpoint, gaps, threads, path):
    """Accuracy of a checkpoint at each gap, without training (cached in path)."""
    if shots_cached(path, gaps):
        return {int(g): a for g, a in load(path).items()}
    out = {}
    for g in gaps:
        cmd = [binary, "eval", checkpoint, "--set", f"data.gap={g}", "--json", "--threads", str(threads)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"mqar_curriculum: {' '.join(cmd)} failed: {proc.stderr.strip()}")
        out[g] = json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"]
    with open(path, "w") as f:
        json.dump({str(g): a for g, a in out.items()}, f)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "mqar_curriculum"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bmojo"))
    ap.add_argument("--models", default="A_full,B")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model (train.seed 1..N-1 besides the default)")
    ap.add_argument("--lr", type=float, default=2.1544e-3, help="learning rate of both stages")
    ap.add_argument("--model-lrs", default="",
                    help="per-model learning rates instead of --lr, e.g. hybrid=1e-2 (each model's best on the "
                         "standard task)")
    ap.add_argument("--gaps", default="16,32,64", help="gaps of the zero-shot evaluation")
    ap.add_argument("--steps", type=int, default=0, help="override train.steps of both stages (0 = the configs')")
    ap.add_argument("--long-range-steps", type=int, default=0,
                    help="override train.steps of the long-range stage only (0 = as --steps), e.g. a model whose "
                         "standard stage needs the budget rule's 4x steps")
    ap.add_argument("--standard-task", default="standard",
                    help="the first stage's task (configs/mqar_suite/tasks/<name>.json)")
    ap.add_argument("--long-range-task", default="long_range",
                    help="the second stage's task, e.g. long_range_L128_K8 after standard_L128_K8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    model_lr = {m: args.lr for m in models}
    try:
        for item in (x for x in args.model_lrs.split(",") if x):
            name, _, value = item.partition("=")
            model_lr[name] = float(value)
    except ValueError as e:
        sys.exit(f"mqar_curriculum: bad --model-lrs: {e}")
    try:
        gaps = [int(g) for g in args.gaps.split(",") if g]
    except ValueError as e:
        sys.exit(f"mqar_curriculum: bad --gaps: {e}")
    for m in models:
        if not os.path.exists(os.path.join(SUITE, "models", m + ".json")):
            sys.exit(f"mqar_curriculum: unknown model '{m}'")
    for t in (args.standard_task, args.long_range_task):
        if not os.path.exists(os.path.join(SUITE, "tasks", t + ".json")):
            sys.exit(f"mqar_curriculum: unknown task '{t}'")
    if args.seeds < 1 or not os.path.exists(args.binary):
        sys.exit("mqar_curriculum: --seeds must be >= 1 and --binary must exist")

    def chain(model, seed):
        base = os.path.join(args.out, model, f"seed{seed}")
        std_dir, lr_dir = os.path.join(base, "standard"), os.path.join(base, "long_range")
        std_config = stage_config(model, args.standard_task, model_lr[model], seed, args.steps)
        lr_config = stage_config(model, args.long_range_task, model_lr[model], seed,
                                 args.long_range_steps or args.steps)
        shots_path = os.path.join(base, "zero_shot.json")
        ckpt = os.path.join(std_dir, "checkpoint.safetensors")
        if not os.path.exists(ckpt) and not (shots_cached(shots_path, gaps) and cached(lr_config, lr_dir)) and \
                os.path.exists(os.path.join(std_dir, "result.json")):
            # Stage 1's summary without its checkpoint (results/ keeps summaries only), which a later step
            # still needs: train it again (same config, same weights).
            os.remove(os.path.join(std_dir, "result.json"))
        std = run_one(args.binary, std_config, std_dir, args.threads)
        shots = zero_shot(args.binary, ckpt, gaps, args.threads, shots_path)
        lr = run_one(args.binary, lr_config, lr_dir, args.threads, ["--init", ckpt])
        print(f"{model} seed {seed}: standard {std['accuracy']:.3f} ({std['steps']} steps), zero-shot "
              + ", ".join(f"gap {g} {a:.3f}" for g, a in shots.items())
              + f", long range after it {lr['accuracy']:.3f} ({lr['steps']} steps)", flush=True)
        return std, shots, lr

    work = [(m, s) for m in models for s in range(args.seeds)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(work, pool.map(lambda w: chain(*w), work)))

    tasks = "" if (args.standard_task, args.long_range_task) == ("standard", "long_range") else \
        f" --standard-task {args.standard_task} --long-range-task {args.long_range_task}"
    gap = load(os.path.join(SUITE, "tasks", args.long_range_task + ".json"))["data"].get("gap", 0)
    lines = ["# Long-range MQAR through a curriculum", "",
             f"Command: `scripts/mqar_curriculum.py --out {os.path.relpath(args.out, ROOT)} --models {args.models} "
             f"--seeds {args.seeds} --lr {args.lr}" + (f" --model-lrs {args.model_lrs}" if args.model_lrs else "")
             + f" --gaps {args.gaps}" + (f" --steps {args.steps}" if args.steps else "")
             + (f" --long-range-steps {args.long_range_steps}" if args.long_range_steps else "")
             + tasks + f" --threads {args.threads} --jobs {args.jobs}`", "",
             f"Stage 1 trains on the standard task ({args.standard_task}); its model is evaluated as it is at each "
             f"gap (zero-shot); stage 2 starts from its weights on the long-range task ({args.long_range_task}, "
             f"gap {gap}). Accuracy on held-out batches; "
             "steps where a stage stopped at train.stop_accuracy.", "",
             "| model | lr | seed | standard (steps) | " + " | ".join(f"zero-shot gap {g}" for g in gaps)
             + " | long range after it (steps) |", "|---|---|---|---|" + "---|" * len(gaps) + "---|"]
    for m in models:
        for s in range(args.seeds):
            std, shots, lr = results[(m, s)]
            lines.append(f"| {m} | {model_lr[m]:g} | {s} | {std['accuracy']:.3f} ({std['steps']}) | "
                         + " | ".join(f"{shots[g]:.3f}" for g in gaps) + f" | {lr['accuracy']:.3f} ({lr['steps']}) |")
    lines += ["", "Mean ± standard deviation over seeds:", "",
              "| model | standard | " + " | ".join(f"zero-shot gap {g}" for g in gaps) + " | long range after it |",
              "|---|---|" + "---|" * len(gaps) + "---|"]
    for m in models:
        rs = [results[(m, s)] for s in range(args.seeds)]
        cells = [mean_sd([r[0]["accuracy"] for r in rs])] + [mean_sd([r[1][g] for r in rs]) for g in gaps] + \
                [mean_sd([r[2]["accuracy"] for r in rs])]
        lines.append(f"| {m} | " + " | ".join(f"{a:.3f} ± {d:.3f}" for a, d in cells) + " |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
