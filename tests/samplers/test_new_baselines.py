"""PC-Sampler, KLASS, DUS and the remasking rules: what each one says, on denoisers whose outputs are known."""

from __future__ import annotations

import pytest
import torch

from tabes import decode, generate, get_sampler
from tabes.samplers.base import StepState
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


def test_contradicted_picks_the_least_probable_contradicted_committed_token():
    from tabes.samplers.base import contradicted

    logits = torch.zeros(1, 4, 3)
    logits[0, :, 0] = 5.0  # token 0 is everyone's argmax
    logits[0, :, 2] = float("-inf")  # the mask token
    logits[0, 2, 1] = 4.9  # position 2's own token 1 is nearly as likely: p ~ 0.48
    x = torch.tensor([[1, 1, 1, 0]])
    committed = torch.tensor([[True, False, True, True]])
    assert contradicted(logits, x, committed, threshold=0.1).tolist() == [[True, False, False, False]]
    two = contradicted(logits, x, committed, threshold=0.6, per_row=2)
    assert two.tolist() == [[True, False, True, False]]  # position 3 agrees with the argmax
    assert not contradicted(logits, x, committed, threshold=0.0).any()
    # raw logits: a mask logit that would be the argmax everywhere is ignored when named, and
    # the caller's logits are left as they were
    raw = logits.clone()
    raw[0, :, 2] = 9.0
    assert contradicted(raw, x, committed, threshold=0.6, per_row=2, mask_id=2).tolist() == two.tolist()
    assert (raw[0, :, 2] == 9.0).all()
    assert contradicted(raw, x, committed, threshold=0.6, per_row=3).tolist() == [[True, False, True, True]]  # unnamed: counted


def test_remdm_confidence_schedule_remasks_what_the_forward_contradicts():
    """A model that always predicts token 0: committed non-zero tokens are contradicted and go
    back to the mask one per step; given cells never do; decoding still ends unmasked."""
    V = 4  # tokens 0..2, mask 3

    def fill(logits):
        logits[..., 0] = 3.0

    model = StubDenoiser(V, fill)
    x = torch.tensor([[1, 3, 3, 3, 3, 3]])
    state_x = torch.tensor([[1, 2, 2, 3, 3, 3]])  # position 0 given, 1 and 2 committed earlier
    fixed = torch.tensor([[True, False, False, False, False, False]])

    st = StepState(
        x=state_x, maskable=state_x == 3, fixed=fixed, budget=torch.tensor([1]), step=1, num_steps=5, t=0.8, temperature=0.0, generator=None
    )
    res = get_sampler("remdm:schedule=confidence,threshold=0.5").step(model, st)
    assert res.remask.tolist() == [[False, True, False, False, False, False]]  # one per step, the first of the ties
    res = get_sampler("remdm:schedule=confidence,threshold=0.5,per_step=3").step(model, st)
    assert res.remask.tolist() == [[False, True, True, False, False, False]]  # never the given cell
    late = StepState(**{**st.__dict__, "t": 0.1})
    assert get_sampler("remdm:schedule=confidence,t_off=0.25").step(model, late).remask is None
    out = generate(model, x, sampler="remdm:schedule=confidence,threshold=0.5,t_off=0.0", steps=8)
    assert not (out.sequences == 3).any() and out.sequences[0, 0] == 1
    # a model that changes its mind (token 2 on its first two calls, then token 0): the output
    # counts the committed cells that went back to the mask (never the last step's)
    calls = []

    def fickle(logits):
        logits[..., 2 if len(calls) < 2 else 0] = 3.0
        calls.append(1)

    out = generate(StubDenoiser(V, fickle), x, sampler="remdm:schedule=confidence,threshold=0.5,t_off=0.0", steps=8, trace=True)
    assert int(out.remasked[0]) == sum(len(r["remasked"]) for r in out.trace[:-1]) > 0
    calls.clear()
    assert int(generate(StubDenoiser(V, fickle), x, sampler="confidence", steps=8).remasked[0]) == 0
    with pytest.raises(ValueError, match="schedule must be one of"):
        get_sampler("remdm:schedule=sometimes")


def test_boe_repair_remasks_committed_cells_the_surrogate_contradicts(tiny_sudoku_model, sudoku_ids):
    """With repair, a committed cell whose surrogate probability is below the threshold goes back
    to the mask (never a given cell), and decoding still finishes; repair=0 never remasks."""
    x = sudoku_ids.clone()
    given = x != tiny_sudoku_model.mask_id
    wrong = (~given).nonzero()[:6]  # commit some cells with a digit the (random) model may reject
    x[wrong[:, 0], wrong[:, 1]] = 0
    fixed = given

    st = StepState(
        x=x,
        maskable=x == tiny_sudoku_model.mask_id,
        fixed=fixed,
        budget=torch.ones(3, dtype=torch.long),
        step=1,
        num_steps=40,
        t=0.9,
        temperature=0.0,
        generator=None,
    )
    res = get_sampler("boe:repair=0.99").step(tiny_sudoku_model, st)
    assert res.remask is not None and res.remask.any()
    assert not (res.remask & fixed).any() and (res.remask.sum(-1) <= 1).all()
    assert (res.remask <= ((x != tiny_sudoku_model.mask_id) & ~fixed)).all()
    assert get_sampler("boe").step(tiny_sudoku_model, st).remask is None
    out = generate(tiny_sudoku_model, sudoku_ids, sampler="boe:repair=0.5", steps=30)
    assert not (out.sequences == tiny_sudoku_model.mask_id).any() and out.remasked.sum() > 0
    assert torch.equal(out.sequences[given], sudoku_ids[given])
    with pytest.raises(ValueError, match="repair needs the surrogate"):
        get_sampler("boe:repair=0.5,point=mask")
