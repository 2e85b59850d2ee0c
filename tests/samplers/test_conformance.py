"""Every registered sampler must pass these checks."""

from __future__ import annotations

import pytest
import torch

from tabes import decode as generate  # every spec, searches (bon) included
from tabes.samplers import available, get_sampler
from tests.conftest import StubDenoiser

# and BoE's one-pass variant; dfs needs a task's rules and is not a decode of a fixed step count
# (tests/test_dfs.py checks it on Sudoku); native is a checkpoint's own rule (tests/models/test_diffusion_gemma.py)
SAMPLERS = [*sorted(set(available()) - {"dfs", "native"}), "boe:point=mask"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_shapes_givens_and_no_mask_left(name, tiny_sudoku_model, sudoku_ids):
    out = generate(tiny_sudoku_model, sudoku_ids, sampler=name, steps=20, generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape == sudoku_ids.shape
    assert out.forwards.shape == out.backwards.shape == out.steps.shape == (3,)
    given = sudoku_ids != tiny_sudoku_model.mask_id
    assert torch.equal(out.sequences[given], sudoku_ids[given])
    assert not (out.sequences == tiny_sudoku_model.mask_id).any()
    assert (out.forwards >= out.steps).all() and (out.steps >= 1).all() and (out.steps <= 20).all()


@pytest.mark.parametrize("name", SAMPLERS)
def test_budget_per_step(name, tiny_sudoku_model, sudoku_ids):
    sampler = get_sampler(name)
    out = generate(tiny_sudoku_model, sudoku_ids, sampler=sampler, steps=7, trace=True)
    assert out.trace, "tracing produced no records"
    for rec in out.trace:
        n = len(rec["positions"])
        if sampler.fixed_budget:
            assert n == rec["budget"], rec
        else:
            assert n >= max(1, rec["budget"]), rec
    # every masked position is committed exactly once, unless the sampler remasks
    if not any("remasked" in r for r in out.trace):
        for row in range(3):
            committed = [p for r in out.trace if r["row"] == row for p in r["positions"]]
            masked = (sudoku_ids[row] == tiny_sudoku_model.mask_id).sum().item()
            assert sorted(committed) == sorted(set(committed)) and len(committed) == masked


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_output(name, tiny_sudoku_model, sudoku_ids):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return generate(tiny_sudoku_model, sudoku_ids, sampler=name, steps=15, temperature=1.0, generator=g).sequences

    assert torch.equal(run(3), run(3))


@pytest.mark.parametrize("name", SAMPLERS)
def test_stochastic_says_whether_greedy_decoding_draws_noise(name, tiny_sudoku_model, sudoku_ids):
    """At temperature 0 a sampler draws from the generator exactly when it says ``stochastic`` (a server
    batches the others with any request)."""
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    generate(tiny_sudoku_model, sudoku_ids, sampler=name, steps=12, generator=g)
    drew = not torch.equal(before, g.get_state())
    assert drew == bool(getattr(get_sampler(name), "stochastic", False)), f"{name}: drew from the generator: {drew}"


@pytest.mark.parametrize("name", SAMPLERS)
def test_row_alone_equals_row_in_batch(name, tiny_sudoku_model, sudoku_ids):
    batch = generate(tiny_sudoku_model, sudoku_ids, sampler=name, steps=12, generator=torch.Generator().manual_seed(0))
    for row in range(sudoku_ids.shape[0]):
        alone = generate(tiny_sudoku_model, sudoku_ids[row : row + 1], sampler=name, steps=12, generator=torch.Generator().manual_seed(0))
        assert torch.equal(alone.sequences[0], batch.sequences[row]), f"row {row} differs"
        assert alone.forwards[0] == batch.forwards[row] and alone.backwards[0] == batch.backwards[row]


@pytest.mark.parametrize("name", SAMPLERS)
def test_block_decoding_on_sequences(name, tiny_seq_model):
    ids = torch.full((2, 24), tiny_seq_model.mask_id)
    ids[:, :6] = torch.arange(6)  # a 6-token prompt
    out = generate(tiny_seq_model, ids, sampler=name, steps=9, block_length=6, trace=True)
    assert torch.equal(out.sequences[:, :6], ids[:, :6])
    assert not (out.sequences == tiny_seq_model.mask_id).any()
    # semi-autoregressive: a step only commits inside its block, and blocks go left to right
    blocks = [min(p // 6 for p in r["positions"]) for r in out.trace if r["row"] == 0 and r["positions"]]
    assert blocks == sorted(blocks) and set(blocks) == {1, 2, 3}


def _sharper_to_the_right(logits):
    """Each position's distribution is fixed (it ignores the other tokens), sharper to the right."""
    logits[:, :, 0] = torch.linspace(0.0, 4.0, logits.shape[1])


def test_lookahead_charges_the_committed_positions_entropy():
    """When no commit changes any other position's entropy, every set has the same total
    (remaining + committed entropy), so lookahead keeps the greedy set: it must not prefer
    committing uncertain positions just because their entropy leaves the remaining sum."""
    model = StubDenoiser(6, _sharper_to_the_right)
    ids = torch.full((1, 12), model.mask_id)
    look = generate(model, ids, sampler="lookahead:k=4", steps=4, trace=True, generator=torch.Generator().manual_seed(0))
    conf = generate(model, ids, sampler="confidence", steps=4, trace=True)
    assert [r["positions"] for r in look.trace] == [r["positions"] for r in conf.trace] == [[9, 10, 11], [6, 7, 8], [3, 4, 5], [0, 1, 2]]


def test_lookahead_costs_k_plus_one_forwards(tiny_sudoku_model, sudoku_ids):
    out = generate(tiny_sudoku_model, sudoku_ids, sampler="lookahead:k=3", steps=10)
    assert torch.equal(out.forwards, 4 * out.steps)


def test_remdm_remasks_and_still_finishes(tiny_sudoku_model, sudoku_ids):
    out = generate(
        tiny_sudoku_model, sudoku_ids, sampler="remdm:eta=0.5,t_off=0.0", steps=30, trace=True, generator=torch.Generator().manual_seed(0)
    )
    assert any(r["remasked"] for r in out.trace)
    assert not (out.sequences == tiny_sudoku_model.mask_id).any()
    given = sudoku_ids != tiny_sudoku_model.mask_id
    assert torch.equal(out.sequences[given], sudoku_ids[given])


def test_bon_counts_every_particle_and_picks_lowest_entropy(tiny_sudoku_model, sudoku_ids):
    out = generate(
        tiny_sudoku_model, sudoku_ids, sampler="bon:n=3,base=margin", steps=10, trace=True, generator=torch.Generator().manual_seed(0)
    )
    # margin takes one forward per step for each of the 3 particles, which decode together
    assert (out.forwards >= 3 * 1).all() and (out.forwards <= 3 * 10).all() and (out.forwards % 3 == 0).all()
    assert out.trace
    for rec in out.trace:
        assert rec["bon_scores"][rec["bon_best"]] == min(rec["bon_scores"])
    # the kept trajectory's accumulated masked entropy is its score
    for row in range(sudoku_ids.shape[0]):
        recs = [r for r in out.trace if r["row"] == row]
        assert sum(r["masked_entropy"] for r in recs) == pytest.approx(min(recs[0]["bon_scores"]), abs=1e-3)


def test_the_step_loop_refuses_a_search(tiny_sudoku_model, sudoku_ids):
    from tabes.generate import generate as step_loop

    with pytest.raises(ValueError, match="tabes.decode"):
        step_loop(tiny_sudoku_model, sudoku_ids, sampler="bon", steps=10)


def test_region_leaves_masks_outside(tiny_seq_model):
    ids = torch.full((2, 24), tiny_seq_model.mask_id)
    region = torch.zeros(24, dtype=torch.bool)
    region[4:10] = True
    out = generate(tiny_seq_model, ids, sampler="confidence", steps=3, region=region)
    assert not (out.sequences[:, 4:10] == tiny_seq_model.mask_id).any()
    assert (out.sequences[:, :4] == tiny_seq_model.mask_id).all() and (out.sequences[:, 10:] == tiny_seq_model.mask_id).all()


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_tensor_takes_the_inputs_device(name, tiny_sudoku_model, sudoku_ids):
    """With the default device set to 'meta', a tensor made without ``device=`` lands on meta
    and the first op that mixes it with the (CPU) model's tensors fails."""
    g = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        out = generate(tiny_sudoku_model, sudoku_ids, sampler=name, steps=6, generator=g, trace=True)
    assert out.sequences.device.type == "cpu" and out.forwards.device.type == "cpu"
    assert not (out.sequences == tiny_sudoku_model.mask_id).any()
