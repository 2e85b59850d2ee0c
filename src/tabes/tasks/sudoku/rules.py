"""Sudoku's rules: the exact solver, naked and hidden singles, and the rules as
:class:`tabes.dfs.Constraints` for a search guided by the model.

The exact solver (bitmask backtracking with a minimum-remaining-values rule) generates training
puzzles with a unique solution and checks uniqueness; decoding never calls it.
"""

from __future__ import annotations

import functools
import os
import random

import numpy as np
import torch
from torch import Tensor

from tabes.tasks.sudoku.formats import _BIT2D, _POP, BOX, COL, MASK_ID, N_CELLS, PEERS, ROW, UNITS, from_ids, to_ids

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


# --------------------------------------------------------------------------- the rules for a search

_PEERS_T = torch.from_numpy(_PEER_MAT)  # (81, 81) 1.0 where two cells share a row, column or box


class SudokuRules:
    """No digit twice in a row, column or box; propagation by naked and hidden singles."""

    def allowed(self, x: Tensor) -> Tensor:
        """(B, 81) ids -> (B, 81, 10) bool: the digits no peer holds (the mask id never)."""
        decided = x != MASK_ID
        digits = torch.nn.functional.one_hot(x.clamp_max(8), 9).float() * decided[..., None]  # (B, 81, 9)
        used = torch.einsum("ij,bjd->bid", _PEERS_T.to(x.device), digits) > 0  # a peer holds the digit
        return torch.cat([~used, torch.zeros_like(used[..., :1])], -1)

    def propagate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Naked and hidden singles to a fixed point, per board (the numba kernel of the ``fast``
        extra where installed): ((B, 81) ids, (B,) bool, False where a blank lost every candidate)."""
        jit = _jit()
        out, ok = x.clone(), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for b, row in enumerate(x.tolist()):
            cells = from_ids(row)
            if jit is None:
                g = singles_fixpoint(cells)
                good = g is not None
            else:
                g, good = jit.singles_fixpoint(np.asarray(cells, np.int64))
                g = [int(d) for d in g]
            if not good:
                ok[b] = False
                continue
            out[b] = torch.tensor(to_ids(g), dtype=torch.long, device=x.device)
        return out, ok
