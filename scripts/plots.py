"""The suites' plots, drawn with matplotlib (Debian's python3-matplotlib): one module for every chart the
experiment scripts write (scripts/mqar_suite.py, scripts/lm_suite.py), as SVG files the documents embed.

    python3 scripts/plots.py --self-test DIR   draws one chart of each kind into DIR and checks them

BMOJO_PLOTS_PNG=1 also writes each chart as a PNG beside its SVG (to look at one where no SVG viewer is).
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files, searchable labels
matplotlib.rcParams["svg.hashsalt"] = "bmojo"  # the same chart gives the same file
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, format=os.path.splitext(path)[1].lstrip(".") or "svg")
    if os.environ.get("BMOJO_PLOTS_PNG"):
        fig.savefig(os.path.splitext(path)[0] + ".png", dpi=70)
    plt.close(fig)


def bar_chart(path, title, groups, series, values, ylabel="accuracy", ylim=(0.0, 1.0), points=None):
    """Grouped bars: one group per x label, one bar per series in each; values[(group, series)] (missing
    pairs are left out), each bar labelled with its value; points[(group, series)]: the values a bar sums up
    (e.g. each seed's, under a bar of their mean), drawn as dots on it."""
    points = points or {}
    fig, ax = plt.subplots(figsize=(max(9.0, 1.5 * len(groups)), 4.8))
    width = 0.8 / max(1, len(series))
    for s, name in enumerate(series):
        present = [(g, group) for g, group in enumerate(groups) if (group, name) in values]
        xs = [g + s * width - 0.4 + width / 2 for g, _ in present]
        ys = [values[(group, name)] for _, group in present]
        bars = ax.bar(xs, ys, width * 0.9, label=name, color=PALETTE[s % len(PALETTE)])
        for x, (_, group) in zip(xs, present):
            dots = points.get((group, name), [])
            ax.scatter([x] * len(dots), dots, s=9, color="#222", zorder=3, linewidths=0)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(axis="y", color="#ddd")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(4, len(series)))
    _save(fig, path)


def line_chart(path, title, series, xlabel, ylabel, vline=None, vlabel=None, labels=None, colors=None,
               categorical=False):
    """series: {name: [(x, y), ...]}. categorical: the x values are labels, equally spaced. vline: a dashed
    vertical line at that x (with vlabel)."""
    labels, colors = labels or {}, colors or {}
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for i, (name, points) in enumerate(series.items()):
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        positions = list(range(len(xs))) if categorical else xs
        ax.plot(positions, ys, marker="o" if len(xs) <= 12 else None, linewidth=2,
                color=colors.get(name, PALETTE[i % len(PALETTE)]), label=labels.get(name, name))
        if categorical:
            ax.set_xticks(positions, [str(x) for x in xs])
            for p, y in zip(positions, ys):
                ax.annotate(f"{y:.2f}", (p, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if vline is not None:
        ax.axvline(vline, color="#888", linestyle="--", linewidth=1)
        if vlabel:
            ax.annotate(vlabel, (vline, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                        textcoords="offset points", color="#555")
    ax.set_xlabel(xlabel + (" (equally spaced)" if categorical else ""))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(color="#ddd")
    if len(series) > 1:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)


def _self_test(out):
    os.makedirs(out, exist_ok=True)
    bars, lines = os.path.join(out, "bars.svg"), os.path.join(out, "lines.svg")
    bar_chart(bars, "accuracy", ["task 1", "task 2"], ["A", "B"], {("task 1", "A"): 0.5, ("task 1", "B"): 0.9,
                                                                 ("task 2", "B"): 0.25})
    bar_chart(os.path.join(out, "points.svg"), "seeds", ["task 1"], ["A"], {("task 1", "A"): 0.6},
              points={("task 1", "A"): [0.4, 0.8]})
    line_chart(lines, "loss", {"A": [(0, 3.0), (10, 2.5)], "B": [(0, 3.1), (10, 2.2)]}, "step", "loss", vline=5,
               vlabel="T")
    line_chart(os.path.join(out, "categorical.svg"), "capacity", {"B": [(8, 0.2), (32, 0.6), (128, 0.7)]}, "m",
               "accuracy", categorical=True)
    for path in (bars, lines, os.path.join(out, "categorical.svg"), os.path.join(out, "points.svg")):
        with open(path) as f:
            text = f.read()
        if "<svg" not in text or len(text) < 1000:
            sys.exit(f"plots: {path} is not an SVG chart")
    # The drawn values are in the files (as text: bar labels and annotations).
    with open(bars) as f:
        if "0.90" not in f.read():
            sys.exit("plots: a bar label is missing")
    print(f"plots: self-test drew 4 charts into {out}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--self-test":
        _self_test(sys.argv[2])
    else:
        sys.exit(__doc__)
