"""Seconds per puzzle of two Sudoku models decoded side by side, as ``tabes solve --file`` runs them.

    python scripts/decode_time.py src/tabes/checkpoints/sudoku runs/sudoku_d11 --n 128 --repeats 3

Both models decode the same first N puzzles of the file with the same sampler, steps and batch
size; the repeats alternate A, B, A, B, ... so a noisy machine slows both alike. Prints the
median seconds per puzzle of each, their ratio B / A, the threads and the settings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tabes
from tabes.samplers import get_sampler
from tabes.tasks import sudoku


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="model folder A (the reference)")
    ap.add_argument("b", help="model folder B")
    ap.add_argument("--file", default="../shared/data/sudoku/dev.csv")
    ap.add_argument("--n", type=int, default=128, help="first N puzzles of --file")
    ap.add_argument("--sampler", default="confidence")
    ap.add_argument("--steps", type=int, default=81)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    recs = sudoku.read_csv(args.file)[: args.n]
    sampler = get_sampler(args.sampler)
    models = {"A": tabes.load(args.a), "B": tabes.load(args.b)}
    times: dict[str, list[float]] = {"A": [], "B": []}
    solved: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            res = sudoku.decode_puzzles(
                model,
                [r.cells for r in recs],
                sampler=sampler,
                steps=args.steps,
                temperature=0.0,
                seed=0,
                solutions=[r.solution for r in recs],
                batch_size=args.batch_size,
            )
            times[name].append((time.perf_counter() - t0) / len(recs))
            solved[name] = sum(bool(r.correct) for r in res)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.sampler}, {args.steps} steps, greedy, batch {args.batch_size}, float32, {torch.get_num_threads()} threads, "
        f"first {len(recs)} puzzles of {args.file}, median of {args.repeats} alternating repeats"
    )
    for name, path in (("A", args.a), ("B", args.b)):
        print(f"{name} {path}: {models[name].config.n_layers} blocks, {med[name]:.4f} s/puzzle, solved {solved[name]}/{len(recs)}")
    print(f"B / A = {med['B'] / med['A']:.3f}")


if __name__ == "__main__":
    main()
