"""Where greedy confidence decoding goes wrong on the hardest bands, and whether averaging
over symmetric views of the board helps (docs/training.md, phase 10).

    python scripts/forum_failures.py --bands forum,magictour --per 40 --views 1
    python scripts/forum_failures.py --bands forum,magictour --per 40 --views 8

One puzzle at a time, one cell per step, in confidence order (the first ``--per`` puzzles of
each band whose name starts with one of ``--bands``). With ``--views K`` every step runs the
model on K symmetric copies of the board (view 0 is the board itself; the others permute
bands, stacks, rows and columns, transpose every other view and relabel the digits, drawn
with seed 0) and commits by the geometric mean of the K distributions mapped back. Prints,
per band, the puzzles solved and, over the failed ones, the step of the first wrong digit and
its confidence.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from tabes import load
from tabes.tasks import sudoku


def make_views(k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(cell map, digit map) pairs: view cell v shows board cell idx[v], digit d shows as dig[d]."""
    rng = np.random.default_rng(seed)

    def perm9() -> np.ndarray:
        outer, inner = rng.permutation(3), [rng.permutation(3) for _ in range(3)]
        return np.array([outer[i] * 3 + inner[i][j] for i in range(3) for j in range(3)])

    views = [(torch.arange(81), torch.arange(9))]
    for v in range(1, k):
        idx = perm9()[:, None] * 9 + perm9()[None, :]
        idx = (idx.T if v % 2 else idx).reshape(81)
        views.append((torch.tensor(idx), torch.tensor(rng.permutation(9))))
    return views


def decode(model, cells: list[int], solution: list[int], views) -> tuple[bool, int | None, float | None]:
    """Solved?, the step of the first wrong digit and its confidence (None when solved)."""
    x = torch.tensor(sudoku.to_ids(cells))
    first, step = None, 0
    while (x == model.mask_id).any():
        batch = []
        for idx, dig in views:
            v = x[idx].clone()
            shown = v != model.mask_id
            v[shown] = dig[v[shown]]
            batch.append(v)
        with torch.no_grad():
            logp = model.logits(torch.stack(batch)).float()[..., :9].log_softmax(-1)
        mean = torch.zeros(81, 9)
        for j, (idx, dig) in enumerate(views):
            back = torch.empty(81, 9)
            back[idx] = logp[j][:, dig]
            mean += back / len(views)
        conf, tok = mean.softmax(-1).max(-1)
        conf[x != model.mask_id] = -1
        i = int(conf.argmax())
        x[i] = int(tok[i])
        if first is None and int(tok[i]) + 1 != solution[i]:
            first = (step, float(conf[i]))
        step += 1
    return first is None, *(first or (None, None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default="../shared/data/sudoku/dev.csv")
    ap.add_argument("--bands", default="forum,magictour", help="comma-separated band name prefixes")
    ap.add_argument("--per", type=int, default=40, help="puzzles per band")
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    args = ap.parse_args()
    model = load(args.model).eval()
    views = make_views(args.views)
    by_band: dict[str, list] = {}
    for r in sudoku.read_csv(args.file):
        b = sudoku.band(r.source)
        if any(b.startswith(p) for p in args.bands.split(",")) and len(by_band.setdefault(b, [])) < args.per:
            by_band[b].append(r)
    for band, recs in sorted(by_band.items()):
        res = [decode(model, r.cells, r.solution, views) for r in recs]
        fails = [(s, c) for ok, s, c in res if not ok]
        line = f"{band}: views {args.views}, solved {len(res) - len(fails)}/{len(res)}"
        if fails:
            steps, confs = [s for s, _ in fails], [c for _, c in fails]
            q = statistics.quantiles(steps, n=4, method="inclusive") if len(steps) > 1 else [steps[0]] * 3
            line += f"; first wrong digit at step median {statistics.median(steps)} (quartiles {q[0]}, {q[2]})"
            line += f", confidence median {statistics.median(confs):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
