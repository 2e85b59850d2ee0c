"""Making Sudoku puzzles: random grids, minimal puzzles, hill-climbed hard ones, pools, symmetries."""

from __future__ import annotations

import random

import numpy as np

from tabes.tasks.sudoku.formats import _BIT2D, BOX, COL, N_CELLS, ROW
from tabes.tasks.sudoku.rules import _jit, _masks, _search, singles_blanks, solve

# --------------------------------------------------------------------------- generation


def random_grid(rng: random.Random) -> list[int]:
    """A uniformly shuffled-search random complete grid."""
    grid = solve([0] * N_CELLS, rng)
    assert grid is not None  # the empty grid always has a solution
    return grid


def make_puzzle(solution: list[int], rng: random.Random, min_givens: int = 17) -> list[int]:
    """Remove clues from ``solution`` in random order while the solution stays unique.

    The result is a minimal puzzle (no given can be removed) unless ``min_givens`` stops the
    removal first (:func:`minimise` started from the full grid).
    """
    return minimise(solution, rng, min_givens)


def minimise(puzzle: list[int], rng: random.Random, min_givens: int = 17) -> list[int]:
    """Remove givens of a unique-solution ``puzzle`` in random order while the solution stays unique.

    Uniqueness of each removal is checked by asking the solver for a solution with a different
    digit in the removed cell. Returns a new list; the input is not changed. Runs the numba
    kernel when numba is installed (the ``fast`` extra), the same result either way.
    """
    order = list(range(N_CELLS))
    rng.shuffle(order)
    jit = _jit()
    if jit is None:
        return _minimise_reference(puzzle, order, min_givens)
    return jit.minimise(np.asarray(puzzle, np.int64), np.asarray(order, np.int64), min_givens).tolist()


def _minimise_reference(puzzle: list[int], order: list[int], min_givens: int) -> list[int]:
    """:func:`minimise` with the removal ``order`` given: the pure-Python reference of the kernel."""
    puzzle = list(puzzle)
    givens = sum(1 for d in puzzle if d)
    for i in order:
        if givens <= min_givens:
            break
        d = puzzle[i]
        if not d:
            continue
        puzzle[i] = 0
        grid = list(puzzle)
        rows, cols, boxes = _masks(grid)
        empties = [j for j in range(N_CELLS) if grid[j] == 0]
        # any solution with another digit at i is a second solution
        b = 1 << (d - 1)
        alt = ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & 511 & ~b
        other = False
        for bb in _BIT2D:
            if alt & bb:
                grid[i] = _BIT2D[bb]
                rows[ROW[i]] |= bb
                cols[COL[i]] |= bb
                boxes[BOX[i]] |= bb
                other = _search(grid, rows, cols, boxes, empties, 1, None, None) > 0
                rows[ROW[i]] ^= bb
                cols[COL[i]] ^= bb
                boxes[BOX[i]] ^= bb
                grid[i] = 0
                if other:
                    break
        if other:
            puzzle[i] = d
        else:
            givens -= 1
    return puzzle


def harden(
    puzzle: list[int], solution: list[int], rng: random.Random, *, target_blanks: int = 55, max_moves: int = 60, add: int = 2
) -> tuple[list[int], int]:
    """Hill-climb a unique-solution puzzle towards ones that singles leave many blanks in.

    Each move shows ``add`` random blanks of ``solution`` again and re-minimises
    (:func:`minimise`); the move is kept when singles leave at least as many blanks as before
    (:func:`singles_blanks`). Stops at ``target_blanks`` or after ``max_moves`` moves. Every
    puzzle on the way is minimal with the same unique ``solution``.

    Returns ``(puzzle, blanks)``: the hardest puzzle reached and its blanks after singles.
    """
    if add < 1:
        raise ValueError(f"add must be >= 1, got {add}")
    best, best_b = list(puzzle), singles_blanks(puzzle)
    for _ in range(max_moves):
        if best_b >= target_blanks:
            break
        cand = list(best)
        blanks = [i for i in range(N_CELLS) if not cand[i]]
        for i in rng.sample(blanks, min(add, len(blanks))):
            cand[i] = solution[i]
        cand = minimise(cand, rng)
        b = singles_blanks(cand)
        if b >= best_b:
            best, best_b = cand, b
    return best, best_b


def generate_puzzles(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random minimal puzzles with unique solutions.

    Returns ``(puzzles, solutions)``, both ``(n, 81)`` uint8 arrays, 0 for blanks.
    """
    rng = random.Random(seed)
    puzzles = np.zeros((n, N_CELLS), dtype=np.uint8)
    solutions = np.zeros((n, N_CELLS), dtype=np.uint8)
    for k in range(n):
        sol = random_grid(rng)
        puzzles[k] = make_puzzle(sol, rng)
        solutions[k] = sol
    return puzzles, solutions


def _generate_chunk(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    n, seed = args
    return generate_puzzles(n, seed)


def _harden_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    n, seed, target_blanks, max_moves = args
    rng = random.Random(seed)
    puzzles = np.zeros((n, N_CELLS), dtype=np.uint8)
    solutions = np.zeros((n, N_CELLS), dtype=np.uint8)
    for k in range(n):
        sol = random_grid(rng)
        puzzles[k] = harden(make_puzzle(sol, rng), sol, rng, target_blanks=target_blanks, max_moves=max_moves)[0]
        solutions[k] = sol
    return puzzles, solutions


POOL_CHUNK = 250  # puzzles per generator seed in :func:`generate_pool`
HARD_CHUNK = 25  # puzzles per generator seed in :func:`generate_hard_pool`


def generate_pool(n: int, seed: int, *, workers: int = 1, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random minimal puzzles generated in chunks of ``POOL_CHUNK`` by ``workers`` processes.

    Chunk ``i`` uses generator seed ``seed * 100_003 + i``, so the result does not depend on
    ``workers``. Returns ``(puzzles, solutions)`` like :func:`generate_puzzles`.
    """
    if n <= 0 or workers <= 0:
        raise ValueError(f"n and workers must be positive, got n={n}, workers={workers}")
    jobs = [(min(POOL_CHUNK, n - lo), seed * 100_003 + i) for i, lo in enumerate(range(0, n, POOL_CHUNK))]
    return _run_chunks(_generate_chunk, jobs, n, workers, "generating puzzles" if progress else None)


def generate_hard_pool(
    n: int, seed: int, *, target_blanks: int = 55, max_moves: int = 60, workers: int = 1, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random minimal puzzles, each hill-climbed by :func:`harden` towards ``target_blanks``.

    Chunks of ``HARD_CHUNK`` puzzles, chunk ``i`` with generator seed ``seed * 100_003 + i``, so
    the result does not depend on ``workers``. Not every puzzle reaches the target within
    ``max_moves`` moves; each is the hardest one its climb reached (rate them with
    :func:`singles_blanks`). Returns ``(puzzles, solutions)`` like :func:`generate_puzzles`.
    """
    if n <= 0 or workers <= 0:
        raise ValueError(f"n and workers must be positive, got n={n}, workers={workers}")
    if not 1 <= target_blanks <= N_CELLS:
        raise ValueError(f"target_blanks must be in [1, 81], got {target_blanks}")
    jobs = [(min(HARD_CHUNK, n - lo), seed * 100_003 + i, target_blanks, max_moves) for i, lo in enumerate(range(0, n, HARD_CHUNK))]
    return _run_chunks(_harden_chunk, jobs, n, workers, "hardening puzzles" if progress else None)


def _run_chunks(fn, jobs: list[tuple], n: int, workers: int, label: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fn`` on each job (one process, or a spawn pool of ``workers``), in job order."""
    bar = None
    if label is not None:
        from tabes.progress import progress_bar

        bar = progress_bar(n, label, "puzzle")
    parts = []
    if workers == 1:
        for job in jobs:
            parts.append(fn(job))
            if bar is not None:
                bar.update(job[0])
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for part in pool.imap(fn, jobs):
                parts.append(part)
                if bar is not None:
                    bar.update(len(part[0]))
    if bar is not None:
        bar.close()
    return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])


def random_symmetry(puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply an independent random validity-preserving transform to each row.

    Transforms: digit relabelling, band and stack permutations, row and column permutations
    inside bands and stacks, and transposition. Inputs and outputs are ``(N, 81)`` arrays with
    0 for blanks; a puzzle keeps its number of solutions and its difficulty.
    """
    n = puzzles.shape[0]

    def perm9(k):  # (k, 9) permutations of 0..8 that keep the 3x3 band structure
        outer = np.argsort(rng.random((k, 3)), axis=1)
        inner = np.argsort(rng.random((k, 3, 3)), axis=2)
        return (outer[:, :, None] * 3 + np.take_along_axis(inner, outer[:, :, None].repeat(3, 2), axis=1)).reshape(k, 9)

    rows, cols = perm9(n), perm9(n)
    idx = rows[:, :, None] * 9 + cols[:, None, :]  # (N, 9, 9) source cell for each target cell
    transpose = rng.random(n) < 0.5
    idx[transpose] = idx[transpose].transpose(0, 2, 1)
    idx = idx.reshape(n, N_CELLS)
    relabel = np.concatenate([np.zeros((n, 1), dtype=np.int64), 1 + np.argsort(rng.random((n, 9)), axis=1)], axis=1)
    p = np.take_along_axis(puzzles.astype(np.int64), idx, axis=1)
    s = np.take_along_axis(solutions.astype(np.int64), idx, axis=1)
    return np.take_along_axis(relabel, p, axis=1).astype(np.uint8), np.take_along_axis(relabel, s, axis=1).astype(np.uint8)
