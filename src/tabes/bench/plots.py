"""Plots for benchmark results (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def pareto_plot(records: list[dict], path: str | Path) -> Path:
    """Accuracy vs wall-clock per puzzle (top row) and vs forward-equivalents per puzzle (bottom
    row), one panel per source band, one curve per sampler configuration across its steps.

    ``records`` are rows of ``results.jsonl`` from :func:`tabes.bench.sudoku.run_sudoku_bench`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tabes.bench.sudoku import spec_label

    sources = sorted({r["source"] for r in records})
    fig, axes = plt.subplots(2, len(sources), figsize=(3.6 * len(sources), 6.4), squeeze=False)
    labels = sorted({spec_label(r) for r in records})
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    for col, src in enumerate(sources):
        curves: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            if r["source"] == src:
                curves[spec_label(r)].append(r)
        for row, (key, xlabel) in enumerate((("wall", "wall-clock s / puzzle"), ("fwd_equiv", "forward-equivalents / puzzle"))):
            ax = axes[row][col]
            for lab, pts in sorted(curves.items()):
                pts = sorted(pts, key=lambda r: r["steps"])
                xs = [r["wall_s"] / r["n"] if key == "wall" else r["fwd_equiv"] for r in pts]
                ys = [100 * r["accuracy"] for r in pts]
                ax.plot(xs, ys, marker="o", ms=3, label=lab, color=colours[lab])
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("solved %", fontsize=8)
            ax.set_title(f"{src} (n={next(r['n'] for r in records if r['source'] == src)})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
