"""Write hill-climbed hard Sudoku puzzles (tabes.tasks.sudoku.harden) into a pool folder, a file per part.

A running ``tabes train sudoku --pool-dir DIR`` picks each new file up at its next evaluation,
so this can run beside a training run (one worker leaves the other core to training):

    python scripts/make_hard_pool.py --out runs/hard7 -n 20000 --seed 7 --target 58 --workers 1

Each part of ``--part`` puzzles has its own seed, so a killed run keeps every finished part and
a rerun with the same arguments skips them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="pool folder (created)")
    ap.add_argument("-n", type=int, required=True, help="puzzles in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=int, default=55, help="blanks singles leave, the climb's target")
    ap.add_argument("--max-moves", type=int, default=80)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--part", type=int, default=1000, help="puzzles per file")
    args = ap.parse_args()

    from tabes.tasks import sudoku
    from tabes.train import save_pool

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, lo in enumerate(range(0, args.n, args.part)):
        path = out / f"harden_{args.seed}_{args.target}_{k:04d}.npz"
        if path.exists():
            continue
        t = time.perf_counter()
        n = min(args.part, args.n - lo)
        p, s = sudoku.generate_hard_pool(
            n, seed=args.seed * 1_000_003 + k, target_blanks=args.target, max_moves=args.max_moves, workers=args.workers
        )
        save_pool(path, p, s)
        blanks = np.array([sudoku.singles_blanks(list(map(int, q))) for q in p])
        print(
            f"{path.name}: {n} puzzles in {time.perf_counter() - t:.0f} s; blanks after singles median {np.median(blanks):.0f}, "
            f">= 55: {np.mean(blanks >= 55):.0%}, >= 45: {np.mean(blanks >= 45):.0%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
