from __future__ import annotations

import random

import numpy as np
import pytest

from tabes.tasks import sudoku
from tests.conftest import PUZZLES

SOLUTION0 = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_parse_forms_agree():
    one_line = PUZZLES[0]
    dotted = one_line.replace("0", ".")
    nine_lines = "\n".join(" ".join(one_line[r * 9 : r * 9 + 9]) for r in range(9))
    assert sudoku.parse_puzzle(one_line) == sudoku.parse_puzzle(dotted) == sudoku.parse_puzzle(nine_lines)
    assert sudoku.parse_puzzle(one_line)[:3] == [5, 3, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("123", "81 cells, got 3"),
        ("1" * 82, "81 cells, got 82"),
        ("x" + "0" * 80, "bad character 'x' at position 1 (row 1, column 1)"),
        ("0" * 40 + "a" + "0" * 40, "row 5, column 5"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sudoku.parse_puzzle(text)


def test_clashes_name_row_column_and_box():
    row = "55" + "0" * 79
    with pytest.raises(ValueError, match="digit 5 appears 2 times in row 1"):
        sudoku.validate_puzzle(sudoku.parse_puzzle(row))
    col = "5" + "0" * 8 + "5" + "0" * 71
    with pytest.raises(ValueError, match="in column 1"):
        sudoku.validate_puzzle(sudoku.parse_puzzle(col))
    box = "5" + "0" * 9 + "5" + "0" * 70  # cells (1,1) and (2,2)
    with pytest.raises(ValueError, match="in box 1"):
        sudoku.validate_puzzle(sudoku.parse_puzzle(box))
    sudoku.validate_puzzle(sudoku.parse_puzzle(PUZZLES[0]))  # no clash: no error


def test_verify():
    puzzle, sol = sudoku.parse_puzzle(PUZZLES[0]), sudoku.parse_puzzle(SOLUTION0)
    assert sudoku.verify(sol, puzzle)
    swapped = list(sol)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    assert not sudoku.verify(swapped)
    assert not sudoku.verify(sol[:80] + [0])
    other = list(puzzle)
    other[2] = 1  # a given the solution does not keep
    assert not sudoku.verify(sol, other)


def test_solver_and_generator():
    puzzle = sudoku.parse_puzzle(PUZZLES[0])
    assert sudoku.solve(puzzle) == sudoku.parse_puzzle(SOLUTION0)
    assert sudoku.count_solutions(puzzle) == 1
    assert sudoku.count_solutions([0] * 81, limit=5) == 5
    rng = random.Random(0)
    grid = sudoku.random_grid(rng)
    assert sudoku.verify(grid)
    p = sudoku.make_puzzle(grid, rng)
    assert sudoku.count_solutions(p) == 1
    for i in range(81):  # minimal: removing any given breaks uniqueness
        if p[i]:
            q = list(p)
            q[i] = 0
            assert sudoku.count_solutions(q) > 1


def test_symmetry_keeps_validity():
    ps, ss = sudoku.generate_puzzles(4, seed=1)
    p2, s2 = sudoku.random_symmetry(ps, ss, np.random.default_rng(0))
    assert not np.array_equal(p2, ps)
    for p, s in zip(p2, s2):
        assert sudoku.verify(list(map(int, s)), list(map(int, p)))
        assert sudoku.count_solutions(list(map(int, p))) == 1


def test_read_csv(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(f"puzzle,solution,source\n{PUZZLES[0]},{SOLUTION0},wiki\n{PUZZLES[1].replace('0', '.')},,\n")
    recs = sudoku.read_csv(f)
    assert [r.puzzle for r in recs] == [PUZZLES[0], PUZZLES[1].replace("0", ".")]
    assert recs[0].solution == sudoku.parse_puzzle(SOLUTION0) and recs[1].solution is None
    bad = tmp_path / "bad.csv"
    bad.write_text("puzzle\n55" + "0" * 79 + "\n")
    with pytest.raises(ValueError, match="line 2: clashing givens"):
        sudoku.read_csv(bad)
    with pytest.raises(FileNotFoundError):
        sudoku.read_csv(tmp_path / "missing.csv")


def test_generate_pool_does_not_depend_on_workers():
    one = sudoku.generate_pool(sudoku.POOL_CHUNK + 3, seed=7, workers=1)
    two = sudoku.generate_pool(sudoku.POOL_CHUNK + 3, seed=7, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    assert all(sudoku.count_solutions(list(map(int, p))) == 1 for p in one[0][:5])


def _is_minimal_unique(p: list[int]) -> bool:
    if sudoku.count_solutions(p) != 1:
        return False
    for i in range(81):
        if p[i]:
            q = list(p)
            q[i] = 0
            if sudoku.count_solutions(q) == 1:
                return False
    return True


def test_minimise_keeps_the_solution_and_leaves_the_input_alone():
    rng = random.Random(3)
    grid = sudoku.random_grid(rng)
    start = [d if rng.random() < 0.6 else 0 for d in grid]  # a non-minimal puzzle with a unique solution
    assert sudoku.count_solutions(start) == 1
    before = list(start)
    p = sudoku.minimise(start, rng)
    assert start == before
    assert all(d == 0 or d == g for d, g in zip(p, grid)) and sum(map(bool, p)) < sum(map(bool, start))
    assert _is_minimal_unique(p)


def test_harden_climbs_and_keeps_puzzles_minimal_and_unique():
    rng = random.Random(5)
    start = 0
    while not start:  # a puzzle singles do not solve
        grid = sudoku.random_grid(rng)
        p = sudoku.make_puzzle(grid, rng)
        start = sudoku.singles_blanks(p)
    h, blanks = sudoku.harden(p, grid, rng, target_blanks=81, max_moves=6)
    assert blanks == sudoku.singles_blanks(h) >= start  # moves are only kept when no easier
    assert all(d == 0 or d == g for d, g in zip(h, grid)) and _is_minimal_unique(h)
    same, b0 = sudoku.harden(p, grid, rng, target_blanks=1, max_moves=6)  # target already met: no move
    assert (same, b0) == (p, start)
    with pytest.raises(ValueError, match="add must be >= 1, got 0"):
        sudoku.harden(p, grid, rng, add=0)


def test_singles_blanks_rates_puzzles():
    easy = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
    hard = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"
    assert sudoku.singles_blanks(sudoku.parse_puzzle(easy)) == 0
    assert sudoku.singles_blanks(sudoku.parse_puzzle(hard)) > 40
    with pytest.raises(ValueError, match="contradict"):
        sudoku.singles_blanks([1, 2, 3, 4, 5, 6, 7, 8, 0] + [0] * 8 + [9] + [0] * 63)


def test_generate_hard_pool_is_harder_and_does_not_depend_on_workers():
    one = sudoku.generate_hard_pool(sudoku.HARD_CHUNK + 2, seed=4, target_blanks=50, max_moves=3, workers=1)
    two = sudoku.generate_hard_pool(sudoku.HARD_CHUNK + 2, seed=4, target_blanks=50, max_moves=3, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    plain = sudoku.generate_pool(sudoku.HARD_CHUNK + 2, seed=4, workers=1)
    rate = lambda ps: np.mean([sudoku.singles_blanks(list(map(int, q))) for q in ps])
    assert rate(one[0]) > rate(plain[0])
    for q, g in zip(one[0][:3], one[1]):
        assert sudoku.verify(list(map(int, g)), list(map(int, q))) and sudoku.count_solutions(list(map(int, q))) == 1
    with pytest.raises(ValueError, match="target_blanks must be in"):
        sudoku.generate_hard_pool(2, seed=0, target_blanks=0)


def test_needs_search_tells_singles_from_harder_puzzles():
    easy = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"  # singles solve it
    hard = "800000000003600000070090200050007000000045700000100030001000068008500010090000400"  # a well-known hard one
    assert not sudoku.needs_search(sudoku.parse_puzzle(easy))
    assert sudoku.needs_search(sudoku.parse_puzzle(hard))
    assert not sudoku.needs_search(sudoku.solve(sudoku.parse_puzzle(easy)))  # a full grid needs nothing


def test_solution_status_and_clash_cells():
    assert (
        sudoku.solution_status(sudoku.parse_puzzle("530070000600195000098000060800060003400803001700020006060000280000419005000080079"))
        == "unique"
    )
    assert sudoku.solution_status([0] * 81) == "multiple solutions"
    assert sudoku.solution_status(sudoku.parse_puzzle("12345678" + "0" * 8 + "9" + "0" * 64)) == "no solution"
    grid = sudoku.solve([0] * 81)
    assert sudoku.clash_cells(grid) == []
    grid[0], grid[1] = grid[1], grid[0]  # swap two cells of row 1: both now clash in their columns
    assert {0, 1} <= set(sudoku.clash_cells(grid))


def test_singles_closure_matches_the_one_board_reference():
    p, s = sudoku.generate_puzzles(6, seed=11)
    hard = sudoku.parse_puzzle("800000000003600000070090200050007000000045700000100030001000068008500010090000400")
    p = np.concatenate([p, np.array([hard], np.uint8)])
    s = np.concatenate([s, np.array([sudoku.solve(list(hard))], np.uint8)])
    rng = np.random.default_rng(0)
    # puzzles, and states with a random share of the other cells shown
    shown = (p == 0) & (rng.random(p.shape) < rng.uniform(0, 0.5, (len(p), 1)))
    boards = np.concatenate([p, np.where(shown, s, p)])
    sols = np.concatenate([s, s])
    fast = sudoku.singles_closure(boards, sols)
    assert fast.shape == boards.shape and fast.dtype == boards.dtype
    for b, f in zip(boards, fast):
        assert f.tolist() == sudoku.singles_fixpoint(b.tolist())
    assert (fast[len(p) - 1] == 0).sum() > 50  # singles barely start on the hard one
    assert ((fast == 0) | (fast == sols)).all()  # every deduction is the solution's digit
    assert ((fast[len(p) :] == 0).sum(1) <= (fast[: len(p)] == 0).sum(1)).all()  # showing cells never adds blanks


def test_singles_closure_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 81\) and \(2, 81\)"):
        sudoku.singles_closure(np.zeros((3, 81), np.uint8), np.zeros((2, 81), np.uint8))


def test_numba_kernels_match_the_python_references():
    from tabes.tasks import _sudoku_jit as jit  # numba comes with the dev extra

    assert jit._PEERS.tolist() == sudoku.PEERS and jit._UNITS.tolist() == sudoku.UNITS

    rng = random.Random(8)
    for _ in range(6):
        grid = sudoku.random_grid(rng)
        order = list(range(81))
        rng.shuffle(order)
        for start, floor in ((grid, 17), (sudoku._minimise_reference(grid, order[::-1], 30), 17), (grid, 40)):
            ref = sudoku._minimise_reference(start, order, floor)
            assert jit.minimise(np.array(start, np.int64), np.array(order, np.int64), floor).tolist() == ref
            shown = [d if rng.random() < 0.3 else 0 for d in grid]  # a partial state, often with several solutions
            for board in (ref, shown):
                g, ok = jit.singles_fixpoint(np.array(board, np.int64))
                assert ok and g.tolist() == sudoku.singles_fixpoint(board)
                assert jit.count_solutions(np.array(board, np.int64), 3) == sudoku.count_solutions(board, limit=3)
    stuck = [1, 2, 3, 4, 5, 6, 7, 8, 0] + [0] * 8 + [9] + [0] * 63  # cell 9 has no candidate
    assert sudoku.singles_fixpoint(stuck) is None and not jit.singles_fixpoint(np.array(stuck, np.int64))[1]
