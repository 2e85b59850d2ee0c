"""Decoding Sudoku puzzles with any sampler, and searching where the decode is invalid."""

from __future__ import annotations

from dataclasses import dataclass

from tabes.tasks.sudoku.formats import from_ids, to_ids, verify

# --------------------------------------------------------------------------- decoding


# what `tabes solve` searches with when the decoded grid is invalid (docs/evidence.md measures the rules)
DEFAULT_SEARCH = "dfs:rule=mrv,max_nodes=100000"


@dataclass
class Solved:
    """One decoded puzzle: the grid, whether it is valid (complete, no clash, keeps the givens),
    whether it equals the known solution (None when unknown), and its compute: passes, steps,
    cells masked again (remasking samplers) and steered steps (None when the sampler does not
    report steering); which path produced the grid, and the search's nodes and backtracks."""

    grid: list[int]
    valid: bool
    correct: bool | None
    forwards: int
    backwards: int
    seconds: float
    steps: int = 0
    remasked: int = 0
    steered: int | None = None
    path: str = "decode"  # "decode", "search" (the decode was invalid and dfs solved it), "unsolved"
    nodes: int = 0  # nodes the search expanded (0 without a search)
    backtracks: int = 0  # dead ends the search backed out of


def decode_puzzles(
    model,
    puzzles: list[list[int]],
    *,
    sampler="confidence",
    steps: int = 81,
    temperature: float = 0.0,
    seed: int = 0,
    solutions: list[list[int] | None] | None = None,
    batch_size: int = 64,
    progress=None,
    trace: list[dict] | None = None,
    search: str | None = None,
) -> list[Solved]:
    """Decode Sudoku puzzles with any sampler through :func:`tabes.generate`.

    ``seconds`` is the wall-clock time of the puzzle's batch divided by the batch size. A
    ``progress`` callable is called after every denoising step with the (fractional) number
    of puzzles it advanced, adding up to the number of puzzles by the end of each batch.
    A ``trace`` list receives the per-step records of every row (``row`` = puzzle index).

    ``search`` (a ``dfs`` spec, e.g. ``"dfs:rule=confidence"``): the puzzles whose decoded grid
    is invalid are then searched from their givens, together, under Sudoku's rules
    (:class:`tabes.tasks.sudoku.rules.SudokuRules`); their passes add to the decode's, and the
    time of the search is shared among them.
    """
    import time

    import torch

    from tabes.search import decode

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    results: list[Solved] = []
    for lo in range(0, len(puzzles), batch_size):
        chunk = puzzles[lo : lo + batch_size]
        ids = torch.tensor([to_ids(p) for p in chunk], dtype=torch.long)
        start = time.perf_counter()
        done = [0.0]  # puzzles of this batch reported so far

        def advance(n_steps: int, size: int = len(chunk), done: list[float] = done) -> None:
            share = min(size * n_steps / steps, size - done[0])
            done[0] += share
            if progress is not None and share > 0:
                progress(share)

        out = decode(
            model,
            ids,
            sampler=sampler,
            steps=steps,
            temperature=temperature,
            generator=generator,
            trace=trace is not None,
            progress=advance,
        )
        per = (time.perf_counter() - start) / len(chunk)
        if trace is not None:
            trace.extend({**rec, "row": rec["row"] + lo} for rec in out.trace)
        for j, p in enumerate(chunk):
            grid = from_ids(out.sequences[j].tolist())
            sol = solutions[lo + j] if solutions is not None else None
            results.append(
                Solved(
                    grid,
                    verify(grid, p),
                    None if sol is None else grid == sol,
                    int(out.forwards[j]),
                    int(out.backwards[j]),
                    per,
                    steps=int(out.steps[j]),
                    remasked=0 if out.remasked is None else int(out.remasked[j]),
                    steered=None if out.steered is None else int(out.steered[j]),
                )
            )
        if progress is not None and done[0] < len(chunk):
            progress(len(chunk) - done[0])  # adaptive samplers may finish in fewer steps
        if search is not None:
            search_invalid(model, chunk, results[lo:], search, generator, solutions[lo:] if solutions is not None else None)
    return results


def search_invalid(model, puzzles: list[list[int]], results: list[Solved], spec: str, generator, solutions) -> None:
    """Replace, in place, the invalid grids among ``results`` (one per puzzle) by a ``dfs`` search
    from the givens, all searched together; passes add to the record's, the search's time is
    shared among the searched puzzles."""
    import time

    import torch

    from tabes.search import decode
    from tabes.tasks.sudoku.rules import SudokuRules

    failed = [j for j, r in enumerate(results) if not r.valid]
    if not failed:
        return
    start = time.perf_counter()
    ids = torch.tensor([to_ids(puzzles[j]) for j in failed], dtype=torch.long)
    out = decode(model, ids, sampler=spec, steps=81, constraints=SudokuRules(), generator=generator)
    per = (time.perf_counter() - start) / len(failed)
    for k, j in enumerate(failed):
        res = results[j]
        found = bool(out.search["solved"][k])
        if found:
            res.grid = from_ids(out.sequences[k].tolist())
            res.valid = verify(res.grid, puzzles[j])
            res.correct = None if solutions is None or solutions[j] is None else res.grid == solutions[j]
        res.path = "search" if found else "unsolved"
        res.forwards += int(out.forwards[k])
        res.backwards += int(out.backwards[k])
        res.seconds += per
        res.nodes, res.backtracks = int(out.search["nodes"][k]), int(out.search["backtracks"][k])
