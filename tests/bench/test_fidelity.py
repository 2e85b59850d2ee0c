from __future__ import annotations

from tabes.bench.fidelity import VARIANTS, tis_fidelity
from tabes.tasks import sudoku
from tests.conftest import PUZZLES


def test_fidelity_rows(tiny_sudoku_model):
    rows = tis_fidelity(tiny_sudoku_model, [sudoku.parse_puzzle(p) for p in PUZZLES], max_steps_per_puzzle=2)
    assert [(r["mode"], r["active"], r["point"]) for r in rows] == list(VARIANTS)
    for r in rows:
        assert r["n_steps"] == 4 and 0 <= r["top_b_agreement"] <= 1 and -1 <= r["spearman"] <= 1
    assert tiny_sudoku_model.config.aqa_mode == "exact"  # restored
