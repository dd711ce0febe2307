#!/usr/bin/python3
"""The MQAR experiment suite (issue #3): every model of configs/mqar_suite/models on every task of
configs/mqar_suite/tasks, a learning-rate sweep per pair with the best run reported, and an ablation over
the eidetic capacity m of the B model on the long-range task.

Writes under --out: runs/<task>/<model>/lr<lr>/{config.json,result.json,log.jsonl,train.log},
results.md (tables), recall.svg (best accuracy per model and task) and capacity.svg (accuracy against m).
Every run stops at the first evaluation (every 500 steps) whose accuracy reaches train.stop_accuracy
(0.99, configs/mqar_suite/common.json), so a solved task costs only the steps it took; each result
records the steps run. After the sweep, the budget rule (--solved): a cell whose best accuracy is below the
threshold is rerun at its best learning rate with 4x the steps (stopping as every run does), the same
rule for every model; then each cell's best run is repeated with --seeds seeds (train.seed 1..N-1
besides the sweep's) for the mean and the spread. Each cell (task, model) goes through its sweep, budget
rule and seeds before the next cell of that worker starts, the cheapest tasks first (sequence length plus
gap), the capacity ablation after its task's cells (each m: its learning rates, then the best of them with
the same --seeds, mean and spread in the table): a grid stopped part-way leaves whole cells behind.
The tasks include the SPEC's (L, K) grid: (64, 4), (128, 8), (256, 16), standard and long-range.
Finished runs (result.json present, same config) are reused, so an interrupted suite continues where it
stopped. Each run's config.json and result.json (a few hundred bytes, with the machine it ran on) are
tracked by git under results/ (.gitignore), so a grid too long for one sitting can be continued on another
machine from a clone; logs and checkpoints stay untracked.

--report trains nothing: it writes results.md and the charts (recall.svg, seeds.svg with each cell's seeds,
capacity.svg) from the runs finished so far, marking the runs and cells not finished yet.

Usage: scripts/mqar_suite.py [--out results/mqar] [--lrs 1e-4,4.6e-4,2.2e-3,1e-2] [--steps N]
                             [--threads N] [--jobs N] [--models A_full,B] [--tasks long_range]
                             [--seeds 3] [--solved 0.9]
                             [--capacities 0,8,16,32,64] [--capacity-lrs 2.2e-3] [--report]
Charts are drawn by scripts/plots.py (matplotlib).
"""
import argparse
import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "configs", "mqar_suite")
# SPEC section 8: learning rate swept over logspace(-4, -2, 4).
DEFAULT_LRS = [1e-4, 4.6416e-4, 2.1544e-3, 1e-2]


def load(path):
    with open(path) as f:
        return json.load(f)


def merge(base, extra):
    out = json.loads(json.dumps(base))
    for section, values in extra.items():
        if section == "label":
            continue
        out.setdefault(section, {}).update(values)
    return out


def mean_sd(xs):
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(xs) / len(xs)
    return mean, (sum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5


def names(folder):
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))


def finished(config, run_dir):
    """The summary of a finished run of this config in run_dir (its result.json), or None where there is none
    yet; a finished run of another config there stops the suite (see run_one)."""
    result_path = os.path.join(run_dir, "result.json")
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(result_path) and os.path.exists(config_path):
        old = load(config_path)
        if old == config:
            return load(result_path)
        # A finished run is never replaced silently: two settings can name one directory (learning rates
        # that print alike), and a rerun would overwrite a result that docs and git hold.
        changed = [f"{section}.{key}: {old.get(section, {}).get(key)} -> {config[section].get(key)}"
                   for section in sorted(set(old) | set(config)) if isinstance(config.get(section), dict)
                   for key in sorted(set(old.get(section, {})) | set(config[section]))
                   if old.get(section, {}).get(key) != config[section].get(key)]
        sys.exit(f"mqar_suite: {run_dir} holds a finished run of another config ({'; '.join(changed) or 'layout'}); "
                 "give the settings it was run with, or remove that directory to run it again")
    return None


# A run writes its checkpoint this often, so one cut off (a session's end, a kill) continues from there.
CHECKPOINT_EVERY = 500


def checkpoint_step(path):
    """The step a bmojo checkpoint was saved at (its safetensors metadata), or None if it cannot be read: such
    a file is not resumed from, the run starts again and overwrites it."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 1 << 24:
                return None
            step = json.loads(f.read(n))["__metadata__"]["step"]
        return int(step) if str(step).isdigit() else None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def log_entries(path):
    """A run's log.jsonl as (line, entry) pairs, the lines that are JSON objects only; none when it is absent."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    pairs = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            pairs.append((line, entry))
    return pairs


def keep_log_until(path, step):
    """Drops the lines of a run's log.jsonl written after its checkpoint's step (the resumed run writes them
    again)."""
    if not os.path.exists(path):
        return
    kept = [line for line, entry in log_entries(path) if entry.get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(kept)


def logged_seconds(path, step):
    """The training time of a run's steps up to `step` as its log.jsonl tells it (each progress line's
    ms_per_step times the steps since the line before; evaluations not counted): the part of a resumed run's
    time that its result.json's wall_s, the resuming process's own clock, leaves out."""
    seconds, prev = 0.0, 0
    for _, entry in log_entries(path):
        at, ms = entry.get("step"), entry.get("ms_per_step")
        if isinstance(at, int) and isinstance(ms, (int, float)) and prev < at <= step:
            seconds += (at - prev) * ms / 1000
            prev = at
    return seconds


def run_wall_s(run_dir, result):
    """A finished run's whole wall time: its result's wall_s, plus for a resumed run the logged time of the
    steps before it was resumed."""
    wall = result.get("wall_s", 0)
    if isinstance(result.get("resumed_at_step"), int):
        wall += logged_seconds(os.path.join(run_dir, "log.jsonl"), result["resumed_at_step"])
    return wall


def run_one(binary, config, run_dir, threads, extra_args=()):
    """Trains one config (extra_args: more `bmojo train` flags, e.g. --init); returns the summary dict (cached
    in result.json). A run of this config that was cut off continues exactly from its last checkpoint
    (`train --resume`, which replaces an --init in extra_args: the checkpoint holds the weights)."""
    done = finished(config, run_dir)
    if done is not None:
        return done
    result_path = os.path.join(run_dir, "result.json")
    config_path = os.path.join(run_dir, "config.json")
    ckpt = os.path.join(run_dir, "checkpoint.safetensors")
    log_path = os.path.join(run_dir, "log.jsonl")
    resume_step = None
    if os.path.exists(ckpt) and os.path.exists(config_path) and load(config_path) == config:
        resume_step = checkpoint_step(ckpt)
    os.makedirs(run_dir, exist_ok=True)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)
    extra = list(extra_args)
    if resume_step is not None:
        keep_log_until(log_path, resume_step)
        if "--init" in extra:
            i = extra.index("--init")
            del extra[i:i + 2]
        extra += ["--resume", ckpt]
        print(f"mqar_suite: {run_dir}: continuing from its checkpoint at step {resume_step}", flush=True)
    elif os.path.exists(log_path):
        os.remove(log_path)  # a cut-off run's log without a checkpoint to continue from
    cmd = [binary, "train", "--config", config_path, "--json", "--threads", str(threads), "--out", run_dir,
           "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}", *extra]
    start = time.time()
    with open(os.path.join(run_dir, "train.log"), "a" if resume_step is not None else "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        sys.exit(f"mqar_suite: run failed ({' '.join(cmd)}); see {run_dir}/train.log")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_s"] = time.time() - start  # of this process only, when resumed
    if resume_step is not None:
        summary["resumed_at_step"] = resume_step
    summary["machine"] = machine()
    with open(result_path, "w") as f:
        json.dump(summary, f)
    return summary


def machine():
    """The CPU a run's wall time was measured on (runs of one grid may come from several machines): its name,
    family and model (a virtual machine may name only the vendor), widest vector unit and core count."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        return "unknown"
    flags = fields.get("flags", "").split()
    vector = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}, {vector}), {os.cpu_count()} cpus")


def lr_label(lr):
    return f"{lr:.2g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "mqar"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bmojo"))
    ap.add_argument("--lrs", default=",".join(str(x) for x in DEFAULT_LRS))
    ap.add_argument("--steps", type=int, default=0, help="override train.steps (0 = the configs' value)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (default: all cores)")
    ap.add_argument("--models", default="", help="comma-separated subset of configs/mqar_suite/models")
    ap.add_argument("--tasks", default="", help="comma-separated subset of configs/mqar_suite/tasks")
    ap.add_argument("--seeds", type=int, default=1,
                    help="seeds of each cell's best run, after the budget rule, and of each m's best run in the "
                         "capacity ablation: 1 = the sweep's seed alone; N reruns it with train.seed 1..N-1 and "
                         "reports the mean and spread (default 1)")
    ap.add_argument("--solved", type=float, default=0.9,
                    help="budget rule: a cell whose best accuracy is below this gets its best learning rate rerun "
                         "with 4x the steps, for every model alike (default 0.9; 0 = never)")
    ap.add_argument("--capacities", default="0,8,16,32,64", help="m values for the ablation ('' = skip)")
    ap.add_argument("--capacity-task", default="long_range")
    ap.add_argument("--capacity-lrs", default="", help="learning rates of the ablation ('' = those of --lrs)")
    ap.add_argument("--report", action="store_true",
                    help="train nothing: write results.md and the charts from the runs already finished under "
                         "--out, for the same options (a grid part-way: the cells and runs not finished yet are "
                         "marked as such)")
    args = ap.parse_args()

    if not args.report and not os.path.exists(args.binary):
        sys.exit(f"mqar_suite: {args.binary} not found; build first (scripts/build.sh)")
    try:
        lrs = [float(x) for x in args.lrs.split(",") if x]
        capacities = [int(x) for x in args.capacities.split(",") if x]
        capacity_lrs = [float(x) for x in args.capacity_lrs.split(",") if x] or lrs
    except ValueError as e:
        sys.exit(f"mqar_suite: bad --lrs or --capacities: {e}")
    common = load(os.path.join(SUITE, "common.json"))
    models = args.models.split(",") if args.models else names(os.path.join(SUITE, "models"))
    tasks = args.tasks.split(",") if args.tasks else names(os.path.join(SUITE, "tasks"))
    for m in models:
        if not os.path.exists(os.path.join(SUITE, "models", m + ".json")):
            sys.exit(f"mqar_suite: unknown model '{m}' (have {', '.join(names(os.path.join(SUITE, 'models')))})")
    for t in tasks:
        if not os.path.exists(os.path.join(SUITE, "tasks", t + ".json")):
            sys.exit(f"mqar_suite: unknown task '{t}' (have {', '.join(names(os.path.join(SUITE, 'tasks')))})")

    def config_for(model, task, lr, extra_model=None):
        m, t = load(os.path.join(SUITE, "models", model + ".json")), load(os.path.join(SUITE, "tasks", task + ".json"))
        c = merge(merge(common, t), m)
        c["train"]["lr"] = lr
        if args.steps:
            c["train"]["steps"] = args.steps
        if extra_model:
            c["model"].update(extra_model)
        return c, m["label"], t["label"]

    base_capacity = merge(common, load(os.path.join(SUITE, "models", "B.json")))["model"].get("m")
    labels = {}
    for task in tasks:
        for model in models:
            _, labels[model], labels[task] = config_for(model, task, lrs[0])

    # The tasks cheapest first (tokens a step: sequence length plus gap), so that whole cells -- sweep,
    # budget rule, seeds -- are finished early in a grid that takes several sittings.
    def cost(task):
        t = load(os.path.join(SUITE, "tasks", task + ".json"))["data"]
        return t.get("seq_len", 64) + t.get("gap", 0)
    order = sorted(tasks, key=lambda t: (cost(t), tasks.index(t)))

    # The tables' columns: by sequence length, the standard task before the long-range ones.
    def size(task):
        t = load(os.path.join(SUITE, "tasks", task + ".json"))["data"]
        return t.get("seq_len", 64), t.get("gap", 0), task
    tasks = sorted(tasks, key=size)

    # The budget rule, the same for every model: a cell not solved at its best learning rate is rerun there
    # with 4x the steps (stopping, as every run, at the first evaluation that reaches train.stop_accuracy);
    # the cell keeps its best run and reports the steps that run used.
    def rerun(task, model, lr, factor, seed):
        c, _, _ = config_for(model, task, lr)
        c["train"]["steps"] *= factor
        if seed:
            c["train"]["seed"] = seed
        tag = "lr" + lr_label(lr) + (f"_x{factor}" if factor > 1 else "") + (f"_seed{seed}" if seed else "")
        return c, os.path.join(args.out, "runs", task, model, tag)

    lock = threading.Lock()
    first_pass = len(tasks) * len(models) * len(lrs) + len(capacities) * len(capacity_lrs)
    done = [0]
    pending = {}  # (task, model) or m -> what of it has not finished yet (--report)

    def get(c, run_dir):
        """A run's summary: trained now if not finished (or, with --report, None)."""
        return finished(c, run_dir) if args.report else run_one(args.binary, c, run_dir, args.threads)

    def sweep_run(what, c, run_dir):
        s = get(c, run_dir)
        if args.report:
            return s
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{first_pass}] {what}: accuracy {s['accuracy']:.3f} ({s.get('steps', 0)} steps, "
                  f"{s['tokens_per_s']:.0f} tok/s)", flush=True)
        return s

    best = {}  # (task, model) -> (accuracy, lr, summary)
    steps_used = {}  # (task, model) -> (factor of the best run, its steps, largest factor tried)
    spread = {}  # (task, model) -> (mean, std, n)
    seed_accs = {}  # (task, model) -> the accuracy of each seed
    ablation = {}  # m -> (accuracy, lr)

    def cell(task, model):
        """One cell from start to end: the learning-rate sweep, the budget rule, the seeds."""
        missing = []
        for lr in lrs:
            c, _, _ = config_for(model, task, lr)
            s = sweep_run(f"{task:>10} {model:>8} lr {lr_label(lr):>7}", c,
                          os.path.join(args.out, "runs", task, model, "lr" + lr_label(lr)))
            if s is None:  # --report: not finished
                missing.append("lr " + lr_label(lr))
                continue
            if (task, model) not in best or s["accuracy"] > best[(task, model)][0]:
                best[(task, model)] = (s["accuracy"], lr, s)
        if missing:
            # A sweep not finished has no best learning rate yet, so no budget run or seeds to look for.
            pending[(task, model)] = missing if len(missing) < len(lrs) else ["not started"]
            if (task, model) in best:
                acc, lr, summary = best[(task, model)]
                steps_used[(task, model)] = (1, summary.get("steps", 0), 1)
            return
        acc, lr, summary = best[(task, model)]
        factor = best_factor = 1
        if acc < args.solved:
            factor = 4
            c, run_dir = rerun(task, model, lr, factor, 0)
            s = get(c, run_dir)
            if s is None:
                pending[(task, model)] = [f"the budget run (lr {lr_label(lr)}, x{factor} steps)"]
                factor = 1
            else:
                if not args.report:
                    print(f"budget rule: {task} {model} lr {lr_label(lr)} x{factor} steps: accuracy "
                          f"{s['accuracy']:.3f} ({s.get('steps', 0)} steps)", flush=True)
                if s["accuracy"] > acc:
                    acc, summary, best_factor = s["accuracy"], s, factor
        steps_used[(task, model)] = (best_factor, summary.get("steps", 0), factor)
        best[(task, model)] = (acc, lr, summary)
        if (task, model) in pending:
            return
        # Seeds: the cell's best run again with train.seed 1 .. N-1 at the steps it ended with.
        if args.seeds > 1:
            accs = [acc]
            for seed in range(1, args.seeds):
                c, run_dir = rerun(task, model, lr, best_factor, seed)
                s = get(c, run_dir)
                if s is None:
                    pending.setdefault((task, model), []).append(f"seed {seed}")
                else:
                    accs.append(s["accuracy"])
            spread[(task, model)] = (*mean_sd(accs), len(accs))
            seed_accs[(task, model)] = accs

    def capacity_dir(cap, lr, seed=0):
        # The ablation reuses the main B runs at the B model's own m.
        tag = "lr" + lr_label(lr) + (f"_seed{seed}" if seed else "")
        if cap == base_capacity:
            return os.path.join(args.out, "runs", args.capacity_task, "B", tag)
        return os.path.join(args.out, "runs", "capacity_" + args.capacity_task, f"m{cap}", tag)

    def capacity_config(cap, lr, seed=0):
        c, _, tl = config_for("B", args.capacity_task, lr, {"m": cap})
        if seed:
            c["train"]["seed"] = seed
        labels[args.capacity_task] = tl
        return c

    def cap_lrs(cap):
        """The ablation's learning rates for m. At the B model's own m its runs are B's cell, whose directories
        are named by the rounded rate (lr_label): a capacity rate that names one of them is the cell's own."""
        if cap != base_capacity:
            return capacity_lrs
        return [next((x for x in lrs if lr_label(x) == lr_label(lr)), lr) for lr in capacity_lrs]

    def capacity_best_lr(cap):
        """The ablation's learning rate for m (the first of the best, as in a cell's sweep) and the accuracy of
        each finished rate (with --report, None where none has finished)."""
        paths = {lr: os.path.join(capacity_dir(cap, lr), "result.json") for lr in cap_lrs(cap)}
        accs = {lr: load(p)["accuracy"] for lr, p in paths.items() if os.path.exists(p)}
        if not accs:
            return None, accs
        return max((lr for lr in cap_lrs(cap) if lr in accs), key=lambda lr: accs[lr]), accs

    def capacity_cell(cap):
        """One m of the ablation: its learning rates, then the best of them again with train.seed 1 .. N-1."""
        if cap == base_capacity and "B" in models and args.capacity_task in tasks and set(cap_lrs(cap)) <= set(lrs):
            return  # the B cell of that task runs these (never twice at once) and seeds its own best run
        if args.report:
            return
        for lr in cap_lrs(cap):
            sweep_run(f"capacity m={cap:>3} lr {lr_label(lr):>7}", capacity_config(cap, lr), capacity_dir(cap, lr))
        lr, _ = capacity_best_lr(cap)
        for seed in range(1, args.seeds):
            s = run_one(args.binary, capacity_config(cap, lr, seed), capacity_dir(cap, lr, seed), args.threads)
            print(f"capacity m={cap} lr {lr_label(lr)} seed {seed}: accuracy {s['accuracy']:.3f}", flush=True)

    # Every piece of work in order: each task's cells, the capacity ablation right after its task's cells.
    work = []
    for task in order:
        work += [(cell, (task, model)) for model in models]
        if task == args.capacity_task:
            work += [(capacity_cell, (cap,)) for cap in capacities]
    if args.capacity_task not in order:
        work += [(capacity_cell, (cap,)) for cap in capacities]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for f in [pool.submit(fn, *a) for fn, a in work]:
            f.result()  # a failed run stops the suite with its message
    capacity_spread = {}  # m -> (mean, std, n): the best learning rate's seeds that exist
    for cap in capacities:
        lr, accs = capacity_best_lr(cap)
        missing = [f"lr {lr_label(x)}" for x in cap_lrs(cap) if x not in accs]
        if missing:
            pending[cap] = missing
        if lr is None:
            continue
        ablation[cap] = (accs[lr], lr)
        seeds = [accs[lr]] + [load(p)["accuracy"] for p in
                              (os.path.join(capacity_dir(cap, lr, seed), "result.json") for seed in range(1, args.seeds))
                              if os.path.exists(p)]
        capacity_spread[cap] = (*mean_sd(seeds), len(seeds))

    os.makedirs(args.out, exist_ok=True)
    dash = "–"
    lines = ["# MQAR results", "",
             f"Command: `scripts/mqar_suite.py --out {os.path.relpath(args.out, ROOT)} --lrs {args.lrs}"
             + (f" --steps {args.steps}" if args.steps else "")
             + (f" --models {args.models}" if args.models else "")
             + (f" --tasks {args.tasks}" if args.tasks else "")
             + f" --capacities {args.capacities}" + (f" --capacity-lrs {args.capacity_lrs}" if args.capacity_lrs else "")
             + f" --seeds {args.seeds} --solved {args.solved} --threads {args.threads} --jobs {args.jobs}"
             + (" --report" if args.report else "") + "`", ""]
    if args.report:
        cells_done = sum(1 for t in tasks for m in models if (t, m) in best and (t, m) not in pending)
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        lines += [f"A report of the runs finished so far (`--report`, {now}): "
                  f"{cells_done} of {len(tasks) * len(models)} cells complete; {dash} marks what has not run, "
                  "\"Not finished yet\" at the end lists the rest, and the charts show the complete cells only.", ""]
    lines += ["Best final accuracy over the learning-rate sweep (learning rate of the best run in brackets); "
              "each run evaluates on held-out batches at its last step.", "",
              "| model | params | " + " | ".join(labels[t] for t in tasks) + " |",
              "|---|---|" + "---|" * len(tasks)]
    for model in models:
        params = next((best[(t, model)][2]["params"] for t in tasks if (t, model) in best), 0)
        cells = []
        for t in tasks:
            if (t, model) not in best:
                cells.append(dash)
                continue
            acc, lr, _ = best[(t, model)]
            cells.append(f"{acc:.3f} ({lr_label(lr)})" + (" (so far)" if (t, model) in pending else ""))
        lines.append(f"| {labels[model]} | {params or dash} | " + " | ".join(cells) + " |")
    lines += ["", f"Budget rule: a cell below accuracy {args.solved} at its best learning rate was rerun there with 4x "
              "the steps; every run stops at the first evaluation reaching train.stop_accuracy. The steps each "
              "cell's best run used (the largest multiple of the base steps tried in brackets):", "",
              "| model | " + " | ".join(labels[t] for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for model in models:
        lines.append(f"| {labels[model]} | " + " | ".join(
            f"{steps_used[(t, model)][1]} (x{steps_used[(t, model)][2]} tried)" if (t, model) in steps_used else dash
            for t in tasks) + " |")
    if spread:
        lines += ["", f"Seeds: each cell's best run with {args.seeds} seeds, mean ± standard deviation (the number of "
                  "seeds finished):", "",
                  "| model | " + " | ".join(labels[t] for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
        for model in models:
            lines.append(f"| {labels[model]} | " + " | ".join(
                (f"{spread[(t, model)][0]:.3f} ± {spread[(t, model)][1]:.3f} ({spread[(t, model)][2]})"
                 if spread[(t, model)][2] > 1 else f"{spread[(t, model)][0]:.3f} (1)")
                if (t, model) in spread else dash for t in tasks) + " |")
    lines += ["", "All runs (accuracy per learning rate; the steps where a run stopped early):", "",
              "| task | model | " + " | ".join(lr_label(lr) for lr in lrs) + " |",
              "|---|---|" + "---|" * len(lrs)]
    for t in tasks:
        for model in models:
            cells = []
            for lr in lrs:
                path = os.path.join(args.out, "runs", t, model, "lr" + lr_label(lr), "result.json")
                if not os.path.exists(path):
                    cells.append(dash)
                    continue
                r = load(path)
                stopped = r.get("steps", 0) < config_for(model, t, lr)[0]["train"]["steps"]
                cells.append(f"{r['accuracy']:.3f}" + (f" ({r['steps']} steps)" if stopped else ""))
            lines.append(f"| {t} | {model} | " + " | ".join(cells) + " |")
    if ablation:
        lines += ["", f"Eidetic capacity ablation (B model, {labels[args.capacity_task]}):", "",
                  "| m | best accuracy | lr | seeds of that run: mean ± standard deviation (n) |", "|---|---|---|---|"]
        for cap in capacities:
            if cap not in ablation:
                lines.append(f"| {cap} | {dash} | {dash} | {dash} |")
                continue
            mean, std, n = capacity_spread[cap]
            lines.append(f"| {cap} | {ablation[cap][0]:.3f} | {lr_label(ablation[cap][1])} | "
                         f"{mean:.3f} ± {std:.3f} ({n}) |")
    # Wall time and machines of every finished run of the selected tasks (budget runs and seeds included).
    lines += ["", "Finished runs per task: their number, summed wall time (each run's own clock, "
              "whatever ran beside it; for a run resumed from a checkpoint, the time its log gives the steps "
              "before) and the machines they ran on:", "",
              "| task | runs | wall time (h) | machines |", "|---|---|---|---|"]
    for t in tasks + ([f"capacity_{args.capacity_task}"] if capacities else []):
        results = []
        for model in models if not t.startswith("capacity_") else [f"m{c}" for c in capacities]:
            folder = os.path.join(args.out, "runs", t, model)
            if os.path.isdir(folder):
                runs = [os.path.join(folder, d) for d in sorted(os.listdir(folder))]
                results += [(d, load(os.path.join(d, "result.json"))) for d in runs
                            if os.path.exists(os.path.join(d, "result.json"))]
        if results:
            hours = sum(run_wall_s(d, r) for d, r in results) / 3600
            kinds = sorted({r.get("machine", "unknown") for _, r in results})
            lines.append(f"| {t} | {len(results)} | {hours:.1f} | {'; '.join(kinds)} |")
    if pending:
        lines += ["", "Not finished yet:", ""]
        for key, what in sorted(pending.items(), key=lambda kv: (
                (0, tasks.index(kv[0][0]), models.index(kv[0][1])) if isinstance(kv[0], tuple) else (1, kv[0], ""))):
            name = f"{key[0]} {key[1]}" if isinstance(key, tuple) else f"capacity m = {key}"
            lines.append(f"- {name}: {', '.join(what)}")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    charts = ["recall.svg"]
    plots.bar_chart(os.path.join(args.out, "recall.svg"), "MQAR accuracy, best over learning rates",
                    [labels[t] for t in tasks], [labels[m] for m in models],
                    {(labels[t], labels[m]): best[(t, m)][0] for t in tasks for m in models
                     if (t, m) in best and (t, m) not in pending})
    if spread:
        charts.append("seeds.svg")
        plots.bar_chart(os.path.join(args.out, "seeds.svg"),
                        "MQAR accuracy of each cell's best run over its seeds: the mean, each seed a dot",
                        [labels[t] for t in tasks], [labels[m] for m in models],
                        {(labels[t], labels[m]): spread[(t, m)][0] for t in tasks for m in models
                         if (t, m) in spread and (t, m) not in pending},
                        points={(labels[t], labels[m]): seed_accs[(t, m)] for t in tasks for m in models
                                if (t, m) in spread})
    if ablation:
        charts.append("capacity.svg")
        plots.line_chart(os.path.join(args.out, "capacity.svg"), "B'MOJO: recall against eidetic capacity m",
                         {"best run": [(c, ablation[c][0]) for c in capacities if c in ablation],
                          "mean of its seeds": [(c, capacity_spread[c][0]) for c in capacities if c in ablation]},
                         "m", "accuracy", categorical=True)
    print("\n".join(lines))
    print(f"\nwrote {args.out}/results.md, {', '.join(charts)}")

if __name__ == "__main__":
    main()
