"""LLaDA 2's block pace (``blocks="llada2"``) beside the default: planning, schedules, every sampler, the cache.
Token-for-token agreement with diffusers' pipeline is tests/conformance/test_diffusers_llada2.py."""

from __future__ import annotations

import pytest
import torch

from tabes import generate
from tabes.blocks import LLaDA2Blocks, block_schedule, plan_blocks, resolve_blocks
from tabes.samplers import available
from tests.models.test_hf import _llada

SAMPLERS = [*sorted(set(available()) - {"dfs", "bon", "native"}), "boe:point=mask", "llada2:editing_threshold=0.2"]


def test_aligned_blocks_start_at_a_multiple_of_the_block_length():
    masked = torch.zeros(2, 20, dtype=torch.bool)
    masked[:, 5:] = True
    assert [span for span, _ in plan_blocks(masked, 12, 8)] == [(5, 13), (13, 20)]
    assert [span for span, _ in plan_blocks(masked, 12, 8, aligned=True)] == [(0, 8), (8, 16), (16, 20)]
    assert [n for _, n in plan_blocks(masked, 12, 8, aligned=True)] == [4, 4, 4]


@pytest.mark.parametrize("length,steps", [(32, 32), (32, 5), (8, 16), (7, 3)])
def test_block_schedule_spreads_the_block_first_steps_first(length, steps):
    sched = block_schedule(length, steps)
    assert sum(sched) == length and len(sched) == steps
    assert max(sched) - min(sched) <= 1 and sched == sorted(sched, reverse=True)


def test_bad_blocks_and_post_steps_are_named():
    with pytest.raises(ValueError, match="blocks must be"):
        resolve_blocks("llada3")
    with pytest.raises(ValueError, match="max_post_steps"):
        LLaDA2Blocks(max_post_steps=-1)
    assert resolve_blocks("tabes") is None and resolve_blocks("llada2") == LLaDA2Blocks()


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_decodes_under_llada2_blocks(name, tiny_seq_model):
    ids = torch.full((2, 24), tiny_seq_model.mask_id)
    ids[:, :5] = torch.arange(5)  # the prompt's tail sits inside the first aligned block
    g = torch.Generator().manual_seed(0)
    out = generate(tiny_seq_model, ids, sampler=name, steps=9, block_length=8, blocks="llada2", trace=True, generator=g)
    assert torch.equal(out.sequences[:, :5], ids[:, :5])
    assert not (out.sequences == tiny_seq_model.mask_id).any()
    # block by block, left to right, and never past the block being decoded
    blocks = [min(p // 8 for p in r["positions"]) for r in out.trace if r["row"] == 0 and r["positions"]]
    assert blocks == sorted(blocks) and set(blocks) == {0, 1, 2}


class _Lengths:
    """A denoiser that records the length of every sequence it is shown."""

    def __init__(self, model) -> None:
        self.model, self.seen = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def logits_from_embeds(self, embeds, **kw):
        self.seen.append(embeds.shape[1])
        return self.model.logits_from_embeds(embeds, **kw)


def test_llada2_blocks_are_block_causal(tiny_seq_model):
    """The model sees the sequence up to the current block's end, and the first block's tokens do not depend
    on what later positions hold."""
    ids = torch.full((1, 24), tiny_seq_model.mask_id)
    ids[:, :5] = torch.arange(5)
    rec = _Lengths(tiny_seq_model)
    generate(rec, ids, sampler="confidence", steps=6, block_length=8, blocks="llada2")
    assert rec.seen == [8, 8, 16, 16, 24, 24]
    rec.seen.clear()
    generate(rec, ids, sampler="confidence", steps=6, block_length=8)
    assert set(rec.seen) == {24}
    region = torch.zeros(24, dtype=torch.bool)
    region[:8] = True
    other = ids.clone()
    other[:, 16:] = 3  # later positions given, not masked
    a, b = (
        generate(tiny_seq_model, i, sampler="confidence", steps=3, block_length=8, blocks="llada2", region=region).sequences
        for i in (ids, other)
    )
    assert torch.equal(a[:, :8], b[:, :8])


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("sampler", ["llada2:editing_threshold=0.05", "boe", "confidence"])
def test_llada2_blocks_run_with_a_cache(cache, sampler):
    model = _llada()
    ids = torch.full((2, 24), model.mask_id)
    ids[:, :6] = torch.arange(3, 9)
    out = generate(model, ids, sampler=sampler, steps=6, block_length=8, blocks="llada2", cache=cache)
    assert not (out.sequences == model.mask_id).any() and torch.equal(out.sequences[:, :6], ids[:, :6])
    plain = generate(model, ids, sampler=sampler, steps=6, block_length=8, blocks="llada2")
    assert (out.forwards <= plain.forwards + 3).all()  # one refresh per block, no more


def test_eos_early_stop_freezes_a_row_with_its_later_masks():
    model = _llada()
    ids = torch.full((2, 24), model.mask_id)
    ids[:, :6] = torch.arange(3, 9)
    free = generate(model, ids, sampler="confidence", steps=9, block_length=8, blocks="llada2").sequences
    eos = int(free[0, 6])  # the first generated token of row 0: call it EOS
    out = generate(model, ids, sampler="confidence", steps=9, block_length=8, blocks="llada2", eos_id=eos).sequences
    assert (out[0, 8:] == model.mask_id).all()  # frozen after the first block
    filled = generate(model, ids, sampler="confidence", steps=9, block_length=8, eos_id=eos).sequences
    assert not (filled == model.mask_id).any()  # the default pace fills with EOS instead


def test_llada2_prediction_holds_the_blocks_probabilities_and_log_sum_exp(tiny_seq_model):
    """llada2's prediction, made on first use off the block: at the block, the token is the argmax,
    its confidence the float32 softmax probability and ``lse`` the log-sum-exp of the logits; off
    the block, the tokens are kept and the rest is 0."""
    from tabes.samplers.base import StepState
    from tabes.samplers.llada2 import _block_prediction

    model = tiny_seq_model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.mask_id, (2, 24), generator=g)
    x[:, 8:16] = model.mask_id
    block = torch.zeros(24, dtype=torch.bool)
    block[8:16] = True
    state = StepState(
        x=x, maskable=x == model.mask_id, fixed=x != model.mask_id, budget=torch.tensor([2, 2]), step=0, num_steps=4,
        t=1.0, steps_left=4, temperature=0.0, generator=None, block=block, span=(8, 16),
    )  # fmt: skip
    pred, tok, p = _block_prediction(model, state, slice(8, 16))
    logits = model.logits(x)[:, 8:16].float()
    logits[..., model.mask_id] = float("-inf")
    assert torch.equal(tok, logits.argmax(-1)) and torch.equal(pred.tokens[:, 8:16], tok)
    torch.testing.assert_close(pred.confidence[:, 8:16], torch.softmax(logits, -1).gather(-1, tok[..., None]).squeeze(-1).double())
    torch.testing.assert_close(pred.lse[:, 8:16], torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(pred.tokens[:, :8], x[:, :8]) and not pred.confidence[:, :8].any() and not pred.lse[:, 16:].any()
    assert not pred.entropy.any() and pred.confidence.dtype == torch.float64
