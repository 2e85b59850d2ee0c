"""PC-Sampler, KLASS and DUS: what each one's rule says, on denoisers whose outputs are known."""

from __future__ import annotations

import torch

from tabes import decode
from tests.conftest import StubDenoiser


def _order(out, row=0):
    return [r["positions"] for r in out.trace if r["row"] == row]


def test_pc_position_weight_goes_left_to_right_among_equals():
    model = StubDenoiser(6, lambda lg: lg[..., 0].fill_(3.0))  # every position equally confident
    ids = torch.full((1, 8), model.mask_id)
    out = decode(model, ids, sampler="pc:lam=0.5", steps=4, trace=True)
    assert _order(out) == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_pc_without_position_weight_is_confidence_order_under_a_uniform_prior():
    def sharper_to_the_right(lg):
        lg[..., 0] = torch.linspace(0.0, 4.0, lg.shape[1])

    model = StubDenoiser(6, sharper_to_the_right)
    ids = torch.full((1, 8), model.mask_id)
    pc = decode(model, ids, sampler="pc:lam=0", steps=4, trace=True)
    conf = decode(model, ids, sampler="confidence", steps=4, trace=True)
    assert _order(pc) == _order(conf) == [[6, 7], [4, 5], [2, 3], [0, 1]]
    # the position weight overrides confidence when it is strong enough
    assert _order(decode(model, ids, sampler="pc:lam=5", steps=4, trace=True))[0] == [0, 1]


def test_pc_marginal_prior_demotes_a_token_predicted_everywhere():
    def fill(lg):
        lg[..., 0] = 4.0  # token 0 is the confident guess at every position but the last ...
        lg[:, -1, 0] = 0.0
        lg[:, -1, 1] = 3.5  # ... where token 1 is a little less confident, and rare

    model = StubDenoiser(6, fill)
    ids = torch.full((1, 8), model.mask_id)
    first = _order(decode(model, ids, sampler="pc:lam=0,prior=marginal", steps=8, trace=True))[0]
    assert first == [7]  # the rare token is informative: it goes first
    assert _order(decode(model, ids, sampler="pc:lam=0", steps=8, trace=True))[0] != [7]


def test_klass_commits_every_stable_confident_position_after_the_first_step():
    model = StubDenoiser(6, lambda lg: lg[..., 0].fill_(6.0))  # fixed, confident distributions: KL = 0 from step 2 on
    ids = torch.full((1, 12), model.mask_id)
    out = decode(model, ids, sampler="klass:conf=0.9,kl=0.001", steps=12, trace=True)
    counts = [len(p) for p in _order(out)]
    assert counts == [1, 11]  # step 1: no history, the budget; step 2: everything stable
    assert [r["stable"] for r in out.trace] == [0, 11]
    strict = decode(model, ids, sampler="klass:conf=0.999999", steps=12, trace=True)  # not confident enough
    assert [len(p) for p in _order(strict)] == [1] * 12


def test_klass_waits_for_moving_distributions():
    calls = {"n": 0}

    def moving(lg):  # the distribution sharpens every call: KL between steps stays large
        calls["n"] += 1
        lg[..., 0] = 2.0 * calls["n"]

    model = StubDenoiser(6, moving)
    out = decode(model, torch.full((1, 6), model.mask_id), sampler="klass:conf=0.5,kl=1e-6", steps=6, trace=True)
    assert all(r["stable"] == 0 for r in out.trace) and len(out.trace) == 6


def test_dus_unmasks_far_apart_positions_in_bit_reversal_order():
    model = StubDenoiser(6, lambda lg: None)
    out = decode(model, torch.full((1, 8), model.mask_id), sampler="dus", steps=4, trace=True)
    assert _order(out) == [[0, 4], [2, 6], [1, 5], [3, 7]]
    for group in _order(out):  # never neighbours in one step
        assert all(abs(a - b) > 1 for a in group for b in group if a != b)
