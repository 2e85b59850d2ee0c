"""Numba kernels for puzzle generation: the exact solver's search, minimisation and the singles rating.

Each is a compiled twin of a pure-Python reference in :mod:`tabes.tasks.sudoku` and returns
exactly what the reference returns (``tests/tasks/test_sudoku.py`` checks them against each
other). :mod:`tabes.tasks.sudoku` imports this module only when numba is installed (the
``fast`` extra) and falls back to the references otherwise. Grids are (81,) int64 arrays, 0
for a blank.

The recursive search is compiled afresh in each process (about 3 s): numba's on-disk cache of
a recursive function crashed when it was loaded back.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the tables of tabes.tasks.sudoku, built here so that the two modules do not import each other
_R = np.arange(81, dtype=np.int64) // 9
_C = np.arange(81, dtype=np.int64) % 9
_B = (_R // 3) * 3 + _C // 3
_PEERS = np.array(
    [[j for j in range(81) if j != i and (_R[i] == _R[j] or _C[i] == _C[j] or _B[i] == _B[j])] for i in range(81)], np.int64
)  # (81, 20)
_UNITS = np.array([[j for j in range(81) if key[j] == u] for key in (_R, _C, _B) for u in range(9)], np.int64)  # (27, 9)
_POPCOUNT = np.array([bin(m).count("1") for m in range(512)], np.int64)


@njit
def _count(grid, rows, cols, boxes, limit):
    """Solutions of ``grid`` (changed in place and restored), counting at most ``limit``; like ``sudoku._search``."""
    best, best_m, best_n = -1, 0, 10
    for i in range(81):
        if grid[i] == 0:
            m = ~(rows[_R[i]] | cols[_C[i]] | boxes[_B[i]]) & 511
            n = _POPCOUNT[m]
            if n < best_n:
                best, best_m, best_n = i, m, n
                if n <= 1:
                    break
    if best < 0:
        return 1
    if best_n == 0:
        return 0
    r, c, x = _R[best], _C[best], _B[best]
    total = 0
    for d in range(9):
        b = 1 << d
        if best_m & b:
            grid[best] = d + 1
            rows[r] |= b
            cols[c] |= b
            boxes[x] |= b
            total += _count(grid, rows, cols, boxes, limit - total)
            rows[r] ^= b
            cols[c] ^= b
            boxes[x] ^= b
            grid[best] = 0
            if total >= limit:
                break
    return total


@njit
def _unit_masks(grid):
    rows, cols, boxes = np.zeros(9, np.int64), np.zeros(9, np.int64), np.zeros(9, np.int64)
    for i in range(81):
        if grid[i]:
            b = 1 << (grid[i] - 1)
            rows[_R[i]] |= b
            cols[_C[i]] |= b
            boxes[_B[i]] |= b
    return rows, cols, boxes


@njit
def count_solutions(cells, limit):
    """``sudoku.count_solutions`` of a clash-free (81,) int64 grid."""
    grid = cells.copy()
    rows, cols, boxes = _unit_masks(grid)
    return _count(grid, rows, cols, boxes, limit)


@njit
def minimise(puzzle, order, min_givens):
    """``sudoku._minimise_reference``: drop givens in ``order`` while the solution stays unique."""
    p = puzzle.copy()
    givens = 0
    for i in range(81):
        if p[i]:
            givens += 1
    for i in order:
        if givens <= min_givens:
            break
        d = p[i]
        if d == 0:
            continue
        p[i] = 0
        grid = p.copy()
        rows, cols, boxes = _unit_masks(grid)
        alt = ~(rows[_R[i]] | cols[_C[i]] | boxes[_B[i]]) & 511 & ~(1 << (d - 1))
        other = False
        for dd in range(9):
            bb = 1 << dd
            if alt & bb:
                grid[i] = dd + 1
                rows[_R[i]] |= bb
                cols[_C[i]] |= bb
                boxes[_B[i]] |= bb
                other = _count(grid, rows, cols, boxes, 1) > 0
                rows[_R[i]] ^= bb
                cols[_C[i]] ^= bb
                boxes[_B[i]] ^= bb
                grid[i] = 0
                if other:
                    break
        if other:
            p[i] = d
        else:
            givens -= 1
    return p


@njit(cache=True)
def singles_fixpoint(cells):
    """``sudoku.singles_fixpoint`` of an (81,) int64 grid; ``(grid, ok)``, ok False when a blank has no candidate."""
    g = cells.copy()
    cand = np.zeros(81, np.int64)
    while True:
        progress = False
        for i in range(81):
            if g[i] == 0:
                m = 511
                for j in _PEERS[i]:
                    if g[j]:
                        m &= ~(1 << (g[j] - 1))
                if m == 0:
                    return g, False
                cand[i] = m
                if m & (m - 1) == 0:  # naked single
                    d = 0
                    while m:
                        m >>= 1
                        d += 1
                    g[i] = d
                    progress = True
        if not progress:  # one hidden single: a digit with one possible cell in a unit
            for u in range(27):
                for d in range(1, 10):
                    placed = False
                    where, n = -1, 0
                    for i in _UNITS[u]:
                        if g[i] == d:
                            placed = True
                            break
                        if g[i] == 0 and (cand[i] >> (d - 1)) & 1:
                            where = i
                            n += 1
                    if not placed and n == 1:
                        g[where] = d
                        progress = True
                        break
                if progress:
                    break
        if not progress:
            return g, True
