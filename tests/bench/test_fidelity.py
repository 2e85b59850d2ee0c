from __future__ import annotations

import pytest

from tabes.bench.fidelity import VARIANTS, tis_fidelity
from tabes.tasks import sudoku
from tests.conftest import PUZZLES


def test_fidelity_rows(tiny_sudoku_model):
    mode = tiny_sudoku_model.config.aqa_mode
    rows = tis_fidelity(tiny_sudoku_model, [sudoku.parse_puzzle(p) for p in PUZZLES], max_steps_per_puzzle=2)
    assert [(r["mode"], r["active"], r["point"]) for r in rows[2:]] == list(VARIANTS)
    assert [r["mode"] for r in rows[:2]] == ["dense", "confidence"]
    for r in rows:
        assert r["n_steps"] == 4 and -1 <= r["spearman"] <= 1 and -1 <= r["spearman_true_drop"] <= 1
    for r in rows[2:]:
        assert 0 <= r["top_b_agreement"] <= 1
    assert tiny_sudoku_model.config.aqa_mode == mode  # restored


def test_true_drop_is_the_entropy_fall_of_revealing_each_candidate(tiny_sudoku_model):
    import torch

    from tabes.bench.fidelity import _true_drop
    from tabes.protocol import predict
    from tabes.samplers.base import top_k_mask

    x = torch.tensor([sudoku.to_ids(sudoku.parse_puzzle(PUZZLES[0]))])
    masked = x == tiny_sudoku_model.mask_id
    with torch.no_grad():
        pred = predict(tiny_sudoku_model, x, where=masked)
    cand = top_k_mask(pred.confidence, masked, torch.tensor([3]))
    probes = masked & ~cand
    drop = _true_drop(tiny_sudoku_model, x, pred, cand, probes)
    i = int(cand[0].nonzero()[1])
    y = x.clone()
    y[0, i] = pred.tokens[0, i]
    with torch.no_grad():
        after = predict(tiny_sudoku_model, y, where=y == tiny_sudoku_model.mask_id).entropy
    expected = (pred.entropy[0] * probes[0]).sum() - (after[0] * probes[0]).sum()
    assert float(drop[1]) == pytest.approx(float(expected), abs=1e-5)
