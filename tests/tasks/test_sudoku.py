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
