"""Plots for benchmark results (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from tabes.samplers import spec_label


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (the plot extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: str | Path, tight: bool = True) -> Path:
    """Save ``fig`` atomically (a temporary file renamed over ``path``) and close it."""
    from tabes.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def _log_axis(ax, values: list[float]) -> None:
    """Log-scale x axis with readable tick labels at 1-2-5 steps and a margin around the points."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    pad = (hi / lo) ** 0.08 if hi > lo else 1.3
    ax.set_xscale("log")
    ax.set_xlim(lo / pad, hi * pad)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_plot(records: list[dict], path: str | Path) -> Path:
    """Accuracy vs wall-clock per puzzle (top row) and vs forward-equivalents per puzzle (bottom
    row), one panel per source band, one curve per sampler configuration across its steps,
    with the 95% Wilson interval of each point as a vertical bar.

    ``records`` are rows of ``results.jsonl`` from :func:`tabes.bench.sudoku.run_sudoku_bench`.
    """
    plt = pyplot()

    sources = sorted({r["source"] for r in records})
    ncols = min(4, len(sources))
    nrows = 2 * math.ceil(len(sources) / ncols)  # each source: wall-clock panel above, fwd-equiv panel below
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.1 * nrows), squeeze=False)
    labels = sorted({spec_label(r) for r in records})
    palette = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20  # one colour per series up to 20
    colours = {lab: palette(i % palette.N) for i, lab in enumerate(labels)}
    markers = {lab: "osD^v<>pPX*h"[i % 12] for i, lab in enumerate(labels)}
    for k, src in enumerate(sources):
        curves: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            if r["source"] == src:
                curves[spec_label(r)].append(r)
        for row, (key, xlabel) in enumerate((("wall", "wall-clock s / puzzle (log)"), ("fwd_equiv", "forward-equivalents / puzzle (log)"))):
            ax = axes[2 * (k // ncols) + row][k % ncols]
            xs_all = []
            for lab, pts in sorted(curves.items()):
                pts = sorted(pts, key=lambda r: r["steps"])
                xs = [r["wall_s"] / r["n"] if key == "wall" else r["fwd_equiv"] for r in pts]
                ys = [100 * r["accuracy"] for r in pts]
                err = [
                    [max(0.0, y - 100 * r["ci_low"]) for y, r in zip(ys, pts)],
                    [max(0.0, 100 * r["ci_high"] - y) for y, r in zip(ys, pts)],
                ]
                ax.errorbar(xs, ys, yerr=err, marker=markers[lab], ms=4, capsize=2, lw=1.2, elinewidth=0.8, label=lab, color=colours[lab])
                xs_all += xs
            _log_axis(ax, xs_all)
            ax.set_ylim(-3, 103)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("solved % (95% CI)", fontsize=8)
            ax.set_title(f"{src} (n={next(r['n'] for r in records if r['source'] == src)})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, which="both")
    for k in range(len(sources), (nrows // 2) * ncols):  # hide unused panels
        for row in range(2):
            axes[2 * (k // ncols) + row][k % ncols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    ncol = min(len(names), 5)
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=7)
    fig.tight_layout(rect=(0, 0.03 + 0.025 * math.ceil(len(names) / ncol), 1, 1))
    return save_figure(plt, fig, path, tight=False)


def trace_grid_png(
    puzzle: list[int], grid: list[int], steps: list[int | None], wrong: set[int], path: str | Path, title: str = "", status: str = ""
) -> Path:
    """Draw a solved grid: each decoded cell coloured by the step that committed it, givens grey
    in bold, wrong cells crossed out in red, with a legend and the outcome in the title.

    Args:
        puzzle: 81 givens (0 = blank); grid: 81 decoded digits.
        steps: per cell, the 0-based step that committed it (None for givens).
        wrong: cells to mark as wrong (clashes, or differences from a known solution).
        title: the first title line (sampler, compute); status: the outcome line, e.g.
            "solved (valid, keeps every given)" or "invalid: 4 clashing cells".
    """
    plt = pyplot()
    from matplotlib.colors import Normalize

    decoded = [s for s in steps if s is not None]
    norm = Normalize(vmin=0, vmax=max(decoded) if decoded else 1)
    cmap = plt.cm.viridis
    fig, ax = plt.subplots(figsize=(5.4, 5.0))
    for i in range(81):
        r, c = divmod(i, 9)
        colour = (0.85, 0.85, 0.85) if steps[i] is None else cmap(norm(steps[i]))
        ax.add_patch(plt.Rectangle((c, 8 - r), 1, 1, facecolor=colour, edgecolor="white", lw=0.5))
        text_colour = "black" if steps[i] is None or norm(steps[i]) > 0.5 else "white"
        ax.text(
            c + 0.5,
            8 - r + 0.5,
            str(grid[i]) if grid[i] else "",
            ha="center",
            va="center",
            fontsize=13,
            color=text_colour,
            fontweight="bold" if puzzle[i] else "normal",
        )
        if i in wrong:
            ax.plot([c + 0.1, c + 0.9], [8 - r + 0.1, 8 - r + 0.9], color="red", lw=2)
            ax.plot([c + 0.1, c + 0.9], [8 - r + 0.9, 8 - r + 0.1], color="red", lw=2)
    for k in range(10):
        lw = 2.2 if k % 3 == 0 else 0
        ax.plot([0, 9], [k, k], color="black", lw=lw)
        ax.plot([k, k], [0, 9], color="black", lw=lw)
    ax.set_xlim(0, 9)
    ax.set_ylim(0, 9)
    ax.set_aspect("equal")
    ax.axis("off")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label="decoded cell: step that committed it")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    legend = [Patch(facecolor=(0.85, 0.85, 0.85), edgecolor="black", label="given (bold digit)")]
    legend.append(Patch(facecolor=cmap(0.0), label="decoded early"))
    legend.append(Patch(facecolor=cmap(1.0), label="decoded late"))
    if wrong:
        legend.append(Line2D([], [], color="red", marker="x", lw=0, markersize=9, label="wrong / clashing cell"))
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8, frameon=False)
    heading = "\n".join(t for t in (status, title) if t)
    if heading:
        ax.set_title(heading, fontsize=9)
    return save_figure(plt, fig, path)


def entropy_curves(model, puzzles: list[list[int]], samplers: list[str], *, steps: int = 81, seed: int = 0) -> dict[str, list[float]]:
    """Mean remaining masked entropy (nats, summed over a puzzle's masked cells) before each
    step, per sampler, over the same puzzles. A finished puzzle counts as 0."""
    from tabes.tasks import sudoku

    curves = {}
    for spec in samplers:
        trace: list[dict] = []
        sudoku.decode_puzzles(model, puzzles, sampler=spec, steps=steps, seed=seed, trace=trace)
        total = [0.0] * steps
        for rec in trace:
            total[rec["step"]] += rec["masked_entropy"]
        last = max((rec["step"] for rec in trace), default=0)
        curves[spec] = [v / len(puzzles) for v in total[: last + 1]]
    return curves


def entropy_plot(curves: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Line plot of :func:`entropy_curves`."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for spec, ys in curves.items():
        ax.plot(range(len(ys)), ys, label=spec)
    ax.set_xlabel("step")
    ax.set_ylabel("mean remaining masked entropy (nats)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(plt, fig, path)


def training_curve_png(log: list[dict], path: str | Path, title: str = "") -> Path:
    """Held-out solved fraction (and each real-puzzle band, where logged) against training steps,
    from the evaluation records of a ``train_log.jsonl``."""
    plt = pyplot()
    evals = [r for r in log if "eval_solved" in r]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot([r["step"] for r in evals], [100 * r["eval_solved"] for r in evals], "k-o", ms=3, lw=2, label="generated held-out")
    bands = sorted({b for r in evals for b in r.get("bands", {})})
    for i, b in enumerate(bands):
        pts = [(r["step"], 100 * r["bands"][b]) for r in evals if b in r.get("bands", {})]
        ax.plot(*zip(*pts), "-o", ms=3, lw=1, color=plt.cm.tab10(i % 10), label=b)
    ax.set_xlabel("training step")
    ax.set_ylabel("solved % (greedy confidence, 81 steps)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(plt, fig, path)
