"""The dfs search: complete, pruned by the task's rules, guided by any step sampler's ranking."""

from __future__ import annotations

import pytest
import torch

from tabes.search import decode
from tabes.tasks import sudoku
from tabes.tasks.sudoku.rules import SudokuRules

# a puzzle that naked and hidden singles do not solve, one with a blank that has no candidate,
# and one whose givens already clash
HARD = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
NO_CANDIDATE = "123456780" + "." * 8 + "9" + "." * 63
CLASH = "11" + "." * 79


def _ids(*puzzles: str) -> torch.Tensor:
    return torch.tensor([sudoku.to_ids(sudoku.parse_puzzle(p)) for p in puzzles])


def _run(model, ids, spec, **kw):
    return decode(model, ids, sampler=spec, steps=81, constraints=SudokuRules(), generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("rule", ["mrv", "confidence", "entropy", "margin"])
def test_every_rule_solves_a_hard_puzzle_exactly(tiny_sudoku_model, rule):
    """An untrained model is a poor guide, but the search is complete: it still solves."""
    assert sudoku.needs_search(sudoku.parse_puzzle(HARD))
    out = _run(tiny_sudoku_model, _ids(HARD), f"dfs:rule={rule}")
    grid = sudoku.from_ids(out.sequences[0].tolist())
    assert grid == sudoku.solve(sudoku.parse_puzzle(HARD)) and sudoku.verify(grid, sudoku.parse_puzzle(HARD))
    assert bool(out.search["solved"][0]) and not bool(out.search["gave_up"][0])
    nodes, backtracks = int(out.search["nodes"][0]), int(out.search["backtracks"][0])
    assert nodes > backtracks >= 1  # it had to guess and take guesses back
    # one forward per expanded node that branched; the model-free rule runs none
    assert int(out.forwards[0]) == 0 if rule == "mrv" else 1 <= int(out.forwards[0]) <= nodes


def test_without_propagation_the_search_is_still_complete_but_longer(tiny_sudoku_model):
    easy = sudoku.make_puzzle(sudoku.random_grid(__import__("random").Random(0)), __import__("random").Random(1), min_givens=40)
    ids = _ids(sudoku.grid_str(easy))
    on = _run(tiny_sudoku_model, ids, "dfs:rule=mrv")
    off = _run(tiny_sudoku_model, ids, "dfs:rule=mrv,propagate=False")
    for out in (on, off):
        assert sudoku.verify(sudoku.from_ids(out.sequences[0].tolist()), easy)
    assert int(off.search["nodes"][0]) > int(on.search["nodes"][0])


def test_dead_ends_budgets_and_batches(tiny_sudoku_model):
    ids = _ids(HARD, NO_CANDIDATE, CLASH)
    out = _run(tiny_sudoku_model, ids, "dfs:rule=confidence")
    assert out.search["solved"].tolist() == [True, False, False]
    assert out.search["gave_up"].tolist() == [False, False, False]  # proven unsolvable, not given up
    assert torch.equal(out.sequences[1:], ids[1:])  # unsolved rows keep their input
    alone = _run(tiny_sudoku_model, ids[:1], "dfs:rule=confidence")
    assert torch.equal(alone.sequences[0], out.sequences[0]) and alone.search["nodes"][0] == out.search["nodes"][0]
    capped = _run(tiny_sudoku_model, ids[:1], "dfs:rule=confidence,max_nodes=2")
    assert bool(capped.search["gave_up"][0]) and not bool(capped.search["solved"][0]) and int(capped.search["nodes"][0]) == 2


def test_boe_ranks_with_a_backward(tiny_sudoku_model):
    out = _run(tiny_sudoku_model, _ids(HARD), "dfs:rule=boe,max_nodes=30")
    assert int(out.backwards[0]) >= 1


def test_fill_commits_confident_cells_that_the_rules_allow(tiny_sudoku_model):
    out = _run(tiny_sudoku_model, _ids(HARD), "dfs:rule=confidence,fill=0.05,max_nodes=500")
    grid = sudoku.from_ids(out.sequences[0].tolist())
    assert not sudoku.clash_cells(grid)  # whatever it reached breaks no rule


def test_errors_name_the_problem(tiny_sudoku_model):
    with pytest.raises(ValueError, match="constraints="):
        decode(tiny_sudoku_model, _ids(HARD), sampler="dfs", steps=81)
    with pytest.raises(ValueError, match="max_nodes"):
        decode(tiny_sudoku_model, _ids(HARD), sampler="dfs:max_nodes=0", steps=81)
    with pytest.raises(ValueError, match="search 'bon'"):
        decode(tiny_sudoku_model, _ids(HARD), sampler="dfs:rule=bon", steps=81)


def test_boe_without_propagation_steers_a_subset_of_rows(tiny_sudoku_model):
    """BoE may steer only some rows of a step; the restricted model must follow it to the subset."""
    out = _run(tiny_sudoku_model, _ids(HARD, HARD), "dfs:rule=boe:steer_below=0.5,propagate=False,max_nodes=8")
    assert (out.backwards >= 0).all() and int(out.search["nodes"].min()) == 8
