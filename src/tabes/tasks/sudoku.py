"""9x9 Sudoku as a masked-diffusion task: parse, validate, verify, solve and generate.

A grid is a list of 81 ints in row-major order, 0 for a blank and 1..9 for a digit.
The model sees token ids: digit ``d`` is id ``d - 1`` and the mask token is id ``MASK_ID``.

The exact solver (bitmask backtracking with a minimum-remaining-values rule) is used only to
generate training puzzles with a unique solution and to check uniqueness in tests; decoding
never calls it.
"""

from __future__ import annotations

import csv
import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_SIZE = 10  # ids 0..8 are digits 1..9, id 9 is the mask
MASK_ID = 9
N_CELLS = 81

ROW = [i // 9 for i in range(N_CELLS)]
COL = [i % 9 for i in range(N_CELLS)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(N_CELLS)]
PEERS = [[j for j in range(N_CELLS) if j != i and (ROW[i] == ROW[j] or COL[i] == COL[j] or BOX[i] == BOX[j])] for i in range(N_CELLS)]
UNITS = [[j for j in range(N_CELLS) if key[j] == u] for key in (ROW, COL, BOX) for u in range(9)]  # 27 units
_POP = [bin(m).count("1") for m in range(512)]
_BIT2D = {1 << (d - 1): d for d in range(1, 10)}


# --------------------------------------------------------------------------- parsing


def parse_puzzle(text: str) -> list[int]:
    """Parse an 81-cell puzzle: digits 1-9, '0' or '.' for blanks; whitespace is ignored.

    Accepts one line of 81 characters or 9 lines of 9. Raises ``ValueError`` naming the bad
    character (with its row and column) or the wrong length. Does not check for clashes;
    see :func:`validate_puzzle`.

    Example:
        >>> parse_puzzle("53..7...." + "." * 72)[:5]
        [5, 3, 0, 0, 7]
    """
    if not isinstance(text, str):
        raise TypeError(f"puzzle must be a str, got {type(text).__name__}")
    chars = [ch for ch in text if not ch.isspace()]
    for k, ch in enumerate(chars):
        if ch not in "0123456789.":
            where = f" (row {k // 9 + 1}, column {k % 9 + 1})" if k < N_CELLS else ""
            raise ValueError(f"bad character {ch!r} at position {k + 1}{where}; use digits 1-9 and '0' or '.' for blanks")
    if len(chars) != N_CELLS:
        raise ValueError(f"a 9x9 puzzle has 81 cells, got {len(chars)}")
    return [0 if ch == "." else int(ch) for ch in chars]


def find_clashes(cells: list[int]) -> list[str]:
    """Describe every repeated digit in a row, column or box, e.g. ``"digit 5 twice in row 1"``."""
    problems = []
    for kind, key in (("row", ROW), ("column", COL), ("box", BOX)):
        for unit in range(9):
            seen: dict[int, int] = {}
            for i in range(N_CELLS):
                d = cells[i]
                if key[i] == unit and d:
                    seen[d] = seen.get(d, 0) + 1
            for d, n in sorted(seen.items()):
                if n > 1:
                    problems.append(f"digit {d} appears {n} times in {kind} {unit + 1}")
    return problems


def validate_puzzle(cells: list[int]) -> None:
    """Raise ``ValueError`` naming the row, column or box where givens clash."""
    if len(cells) != N_CELLS or any(not 0 <= d <= 9 for d in cells):
        raise ValueError(f"expected 81 values in 0..9, got {len(cells)} values")
    problems = find_clashes(cells)
    if problems:
        raise ValueError("clashing givens: " + "; ".join(problems))


def clash_cells(grid: list[int]) -> list[int]:
    """Cells whose digit repeats in their row, column or box."""
    return [i for i in range(N_CELLS) if grid[i] and any(grid[j] == grid[i] for j in PEERS[i])]


def verify(grid: list[int], puzzle: list[int] | None = None) -> bool:
    """True when ``grid`` is a complete valid Sudoku that keeps every given of ``puzzle``."""
    if len(grid) != N_CELLS or any(not 1 <= d <= 9 for d in grid):
        return False
    if find_clashes(grid):
        return False
    return puzzle is None or all(not p or p == g for p, g in zip(puzzle, grid))


def to_ids(cells: list[int]) -> list[int]:
    """Grid (0 = blank) to model ids (blank -> ``MASK_ID``)."""
    return [MASK_ID if d == 0 else d - 1 for d in cells]


def from_ids(ids: list[int]) -> list[int]:
    """Model ids to grid digits (mask -> 0)."""
    return [0 if t == MASK_ID else int(t) + 1 for t in ids]


def grid_str(cells: list[int]) -> str:
    """81-character string, '0' for blanks."""
    return "".join(str(d) for d in cells)


def format_board(cells: list[int], wrong: set[int] | None = None) -> str:
    """A 9x9 board with box separators; cells in ``wrong`` are marked with '*'."""
    wrong = wrong or set()
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("------+-------+------")
        parts = []
        for c in range(9):
            if c and c % 3 == 0:
                parts.append("|")
            i = r * 9 + c
            d = cells[i]
            parts.append(("." if d == 0 else str(d)) + ("*" if i in wrong else ""))
        lines.append(" ".join(parts))
    return "\n".join(lines)


@dataclass(frozen=True)
class PuzzleRecord:
    """One row of a puzzle file: ``puzzle`` exactly as read, parsed ``cells``, optional solution,
    and the file ``line`` it came from (the header is line 1)."""

    puzzle: str
    cells: list[int]
    solution: list[int] | None
    source: str
    line: int = 0


def band(source: str) -> str:
    """Source band of a ``list:detail`` source string: the list name (``"all"`` when empty)."""
    return source.split(":", 1)[0] or "all"


def parse_solution(text: str, cells: list[int]) -> list[int]:
    """Parse a ``solution`` field and check that it is a complete valid grid keeping the givens
    of ``cells``; ``ValueError`` messages name the solution column."""
    try:
        sol = parse_puzzle(text)
    except ValueError as err:
        raise ValueError(f"column 'solution': {err}") from None
    if not verify(sol, cells):
        raise ValueError("column 'solution': not a complete valid grid that keeps the puzzle's givens")
    return sol


def read_csv(path: str | Path, *, skipped: list[tuple[int, str]] | None = None) -> list[PuzzleRecord]:
    """Read a CSV with a ``puzzle`` column and optional ``solution`` and ``source`` columns.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the
    line of a malformed or clashing puzzle (or of a bad solution, naming that column), or the
    byte offset of text that is not UTF-8. With a ``skipped`` list, bad rows are appended to it
    as ``(line, reason)`` and left out instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"puzzle file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    records = []
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "puzzle" not in reader.fieldnames:
        raise ValueError(f"{path}: expected a CSV header with a 'puzzle' column, got {reader.fieldnames}")
    for line, row in enumerate(reader, start=2):
        try:
            if row["puzzle"] is None:
                raise ValueError("the row has no 'puzzle' field")
            cells = parse_puzzle(row["puzzle"])
            validate_puzzle(cells)
            sol = parse_solution(row["solution"], cells) if row.get("solution") else None
        except ValueError as err:
            if skipped is None:
                raise ValueError(f"{path}, line {line}: {err}") from None
            skipped.append((line, str(err)))
            continue
        records.append(PuzzleRecord(row["puzzle"], cells, sol, row.get("source") or "", line))
    return records


# --------------------------------------------------------------------------- exact solver


def _masks(cells: list[int]) -> tuple[list[int], list[int], list[int]]:
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, d in enumerate(cells):
        if d:
            b = 1 << (d - 1)
            rows[ROW[i]] |= b
            cols[COL[i]] |= b
            boxes[BOX[i]] |= b
    return rows, cols, boxes


def _search(grid, rows, cols, boxes, empties, limit, out, rng):
    best, best_m, best_n = -1, 0, 10
    for i in empties:
        if grid[i] == 0:
            m = ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & 511
            n = _POP[m]
            if n < best_n:
                best, best_m, best_n = i, m, n
                if n <= 1:
                    break
    if best < 0:  # complete
        if out is not None and not out:
            out.append(list(grid))
        return 1
    if best_n == 0:
        return 0
    bits = [b for b in _BIT2D if best_m & b]
    if rng is not None:
        rng.shuffle(bits)
    r, c, x = ROW[best], COL[best], BOX[best]
    total = 0
    for b in bits:
        grid[best] = _BIT2D[b]
        rows[r] |= b
        cols[c] |= b
        boxes[x] |= b
        total += _search(grid, rows, cols, boxes, empties, limit - total, out, rng)
        rows[r] ^= b
        cols[c] ^= b
        boxes[x] ^= b
        grid[best] = 0
        if total >= limit:
            break
    return total


def count_solutions(cells: list[int], limit: int = 2) -> int:
    """Number of solutions of a clash-free puzzle, counting at most ``limit``."""
    grid = list(cells)
    rows, cols, boxes = _masks(grid)
    empties = [i for i in range(N_CELLS) if grid[i] == 0]
    return _search(grid, rows, cols, boxes, empties, limit, None, None)


def solution_status(cells: list[int]) -> str:
    """``"unique"``, ``"no solution"`` or ``"multiple solutions"`` for a clash-free puzzle (exact search)."""
    n = count_solutions(cells, limit=2)
    return "unique" if n == 1 else ("no solution" if n == 0 else "multiple solutions")


def solve(cells: list[int], rng: random.Random | None = None) -> list[int] | None:
    """One solution (random among several when ``rng`` is given), or None if there is none."""
    grid = list(cells)
    rows, cols, boxes = _masks(grid)
    empties = [i for i in range(N_CELLS) if grid[i] == 0]
    out: list[list[int]] = []
    _search(grid, rows, cols, boxes, empties, 1, out, rng)
    return out[0] if out else None


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


@functools.cache
def _jit():
    """The numba kernels (:mod:`tabes.tasks._sudoku_jit`), or None without numba or with ``TABES_NO_JIT=1``."""
    if os.environ.get("TABES_NO_JIT", "") not in ("", "0"):
        return None
    try:
        from tabes.tasks import _sudoku_jit
    except ImportError:
        return None
    return _sudoku_jit


def singles_blanks(cells: list[int]) -> int:
    """Blanks left after naked and hidden singles (:func:`singles_fixpoint`): a difficulty rating.

    0 when singles solve the puzzle; generated minimal puzzles that need more leave a median of
    about 42, the hardest public lists 55-59. Raises ValueError for clashing givens.
    """
    jit = _jit()
    if jit is None:
        g = singles_fixpoint(cells)
        ok = g is not None
    else:
        g, ok = jit.singles_fixpoint(np.asarray(cells, np.int64))
    if not ok:
        raise ValueError("the givens contradict each other (a blank cell has no candidate)")
    return sum(1 for d in g if not d)


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


def needs_search(cells: list[int]) -> bool:
    """True when naked and hidden singles alone do not complete the puzzle.

    A cheap difficulty rating: about half of the generated minimal puzzles need more than
    singles (pairs, fish, chains or guessing); every "hardest" puzzle does.
    """
    g = singles_fixpoint(cells)
    return g is None or not all(g)


def singles_fixpoint(cells: list[int]) -> list[int] | None:
    """The grid after placing naked and hidden singles one at a time until none is left.

    Returns None when a blank cell runs out of candidates (the givens contradict each other).
    The one-board reference for :func:`singles_closure`.
    """
    g = list(cells)
    while True:
        progress = False
        cand = [0] * N_CELLS
        for i in range(N_CELLS):
            if not g[i]:
                m = 511
                for j in PEERS[i]:
                    if g[j]:
                        m &= ~(1 << (g[j] - 1))
                if m == 0:
                    return None
                cand[i] = m
                if m & (m - 1) == 0:  # naked single
                    g[i] = m.bit_length()
                    progress = True
        if not progress:
            progress = _place_hidden_single(g, cand)
        if not progress:
            return g


def needs_search_flags(puzzles: np.ndarray) -> np.ndarray:
    """(N,) bool :func:`needs_search` of each row of an (N, 81) puzzle array (0 = blank)."""
    return np.array([needs_search(list(map(int, p))) for p in puzzles], bool)


_PEER_MAT = np.zeros((N_CELLS, N_CELLS), np.float32)
for _i, _js in enumerate(PEERS):
    _PEER_MAT[_i, _js] = 1.0
_UNIT_MAT = np.zeros((len(UNITS), N_CELLS), np.float32)
for _u, _js in enumerate(UNITS):
    _UNIT_MAT[_u, _js] = 1.0


def singles_closure(boards: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """Fill every cell that naked and hidden singles deduce, repeatedly, for a batch of boards.

    ``boards`` (N, 81): digits 1..9 where visible, 0 where blank; every visible digit must
    agree with ``solutions`` (N, 81). Each round finds all singles of all boards at once and
    writes the solution's digit there; rounds repeat until none is found. The result is the
    state a solver that only uses singles gets stuck in (the full solution when singles
    suffice): the state where the next placement needs real reasoning. Matches the one-board
    reference :func:`needs_search` (a puzzle needs search iff its closure has a blank).
    """
    if boards.shape != solutions.shape or boards.ndim != 2 or boards.shape[1] != N_CELLS:
        raise ValueError(f"boards and solutions must both be (N, 81), got {boards.shape} and {solutions.shape}")
    g = boards.astype(np.int64, copy=True)
    sol = solutions.astype(np.int64)
    digits = np.eye(10, dtype=np.float32)[:, 1:]  # row 0 (blank) is all zeros
    active = np.arange(len(g))
    while len(active):
        sub = g[active]
        blank = sub == 0
        blocked = np.matmul(_PEER_MAT, digits[sub]) > 0  # (n, 81, 9) digit already in a peer
        cand = ~blocked & blank[:, :, None]
        naked = cand.sum(-1) == 1
        alone = np.matmul(_UNIT_MAT, cand.astype(np.float32)) == 1  # (n, 27, 9) digit with one place in a unit
        hidden = (cand & (np.matmul(_UNIT_MAT.T, alone.astype(np.float32)) > 0)).any(-1)
        new = naked | hidden
        found = new.any(1)
        rows = active[found]
        fill = new[found]
        g[rows] = np.where(fill, sol[rows], g[rows])
        active = rows
    return g.astype(boards.dtype)


def _place_hidden_single(g: list[int], cand: list[int]) -> bool:
    """Place one hidden single (a digit with one possible cell in a unit); False if none."""
    for unit in UNITS:
        placed = {g[i] for i in unit}
        for d in range(1, 10):
            if d not in placed:
                where = [i for i in unit if not g[i] and cand[i] >> (d - 1) & 1]
                if len(where) == 1:
                    g[where[0]] = d
                    return True
    return False


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


# --------------------------------------------------------------------------- decoding


@dataclass
class Solved:
    """One decoded puzzle: the grid, whether it is valid (complete, no clash, keeps the givens),
    whether it equals the known solution (None when unknown), and its compute: passes, steps,
    cells masked again (remasking samplers) and steered steps (None when the sampler does not
    report steering)."""

    grid: list[int]
    valid: bool
    correct: bool | None
    forwards: int
    backwards: int
    seconds: float
    steps: int = 0
    remasked: int = 0
    steered: int | None = None


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
) -> list[Solved]:
    """Decode Sudoku puzzles with any sampler through :func:`tabes.generate`.

    ``seconds`` is the wall-clock time of the puzzle's batch divided by the batch size. A
    ``progress`` callable is called after every denoising step with the (fractional) number
    of puzzles it advanced, adding up to the number of puzzles by the end of each batch.
    A ``trace`` list receives the per-step records of every row (``row`` = puzzle index).
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
    return results
