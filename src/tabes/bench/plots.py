"""Plots for benchmark results (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path


def _pyplot():
    """matplotlib.pyplot with the file-only Agg backend (the plot extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def pareto_plot(records: list[dict], path: str | Path) -> Path:
    """Accuracy vs wall-clock per puzzle (top row) and vs forward-equivalents per puzzle (bottom
    row), one panel per source band, one curve per sampler configuration across its steps.

    ``records`` are rows of ``results.jsonl`` from :func:`tabes.bench.sudoku.run_sudoku_bench`.
    """
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    from tabes.bench.sudoku import spec_label

    sources = sorted({r["source"] for r in records})
    ncols = min(4, len(sources))
    nrows = 2 * math.ceil(len(sources) / ncols)  # each source: wall-clock panel above, fwd-equiv panel below
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 2.9 * nrows), squeeze=False)
    labels = sorted({spec_label(r) for r in records})
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    for k, src in enumerate(sources):
        curves: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            if r["source"] == src:
                curves[spec_label(r)].append(r)
        for row, (key, xlabel) in enumerate((("wall", "wall-clock s / puzzle"), ("fwd_equiv", "forward-equivalents / puzzle"))):
            ax = axes[2 * (k // ncols) + row][k % ncols]
            for lab, pts in sorted(curves.items()):
                pts = sorted(pts, key=lambda r: r["steps"])
                xs = [r["wall_s"] / r["n"] if key == "wall" else r["fwd_equiv"] for r in pts]
                ys = [100 * r["accuracy"] for r in pts]
                ax.plot(xs, ys, marker="o", ms=4, label=lab, color=colours[lab])
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(bottom=0)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("solved %", fontsize=8)
            ax.set_title(f"{src} (n={next(r['n'] for r in records if r['source'] == src)})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    for k in range(len(sources), (nrows // 2) * ncols):  # hide unused panels
        for row in range(2):
            axes[2 * (k // ncols) + row][k % ncols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(plt, fig, path, tight=False)


def trace_grid_png(puzzle: list[int], grid: list[int], steps: list[int | None], wrong: set[int], path: str | Path, title: str = "") -> Path:
    """Draw a solved grid: each decoded cell coloured by the step that committed it, givens grey,
    wrong cells crossed out in red.

    Args:
        puzzle: 81 givens (0 = blank); grid: 81 decoded digits.
        steps: per cell, the 0-based step that committed it (None for givens).
        wrong: cells to mark as wrong (clashes, or differences from a known solution).
    """
    plt = _pyplot()
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
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label="step committed")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)


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
    plt = _pyplot()

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
    return _save(plt, fig, path)
