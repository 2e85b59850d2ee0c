from __future__ import annotations

import pytest
import torch

import tabes
from tabes.models.mdm import MDM, MDMConfig, grow_depth
from tabes.protocol import Denoiser


def test_protocol_and_shapes(tiny_sudoku_model, sudoku_ids):
    m = tiny_sudoku_model
    assert isinstance(m, Denoiser)
    e = m.embed(sudoku_ids)
    assert e.shape == (3, 81, 32)
    assert torch.equal(e, m.token_embeddings()[sudoku_ids])
    logits = m.logits_from_embeds(e)
    assert logits.shape == (3, 81, 10)
    torch.testing.assert_close(logits, m.logits(sudoku_ids))


def test_attention_mask_hides_padding(tiny_seq_model):
    ids = torch.randint(0, 12, (1, 10))
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    a = tiny_seq_model.logits(ids, attention_mask=mask)
    ids2 = ids.clone()
    ids2[0, 7:] = 3  # change only padded tokens
    b = tiny_seq_model.logits(ids2, attention_mask=mask)
    torch.testing.assert_close(a[0, :7], b[0, :7])


def test_save_load_round_trip(tmp_path, tiny_sudoku_model, sudoku_ids):
    tiny_sudoku_model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = tabes.load(tmp_path / "m")
    assert loaded.config == tiny_sudoku_model.config
    torch.testing.assert_close(loaded.logits(sudoku_ids), tiny_sudoku_model.logits(sudoku_ids), rtol=0, atol=0)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        tabes.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        tabes.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"d_model": 30, "n_heads": 4}, "divisible"), ({"mask_id": 10}, "mask_id"), ({"layout": "grid"}, "layout"), ({"seq_len": 80}, "grid")],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MDMConfig(**kwargs)


def test_shipped_model_loads():
    model = tabes.load()
    assert isinstance(model, MDM) and model.vocab_size == 10 and model.mask_id == 9


@pytest.mark.parametrize("layout", ["sudoku", "sequence"])
@pytest.mark.parametrize("upstream", ["probes", "every row"])
@pytest.mark.parametrize(("use_grad_rows", "skip_rows"), [(True, True), (False, True), (True, False)])
def test_exact_sparse_adjoint_equals_reference(layout, upstream, use_grad_rows, skip_rows, probs_path):
    """The exact path (row-skipping linears, exact AQA, grad_rows in the first block) gives the
    reference gradient (plain autograd, detached inactive score rows) at the rows the caller
    reads, zero elsewhere, no parameter gradient, and the dense forward values."""
    seq = layout == "sequence"
    cfg = MDMConfig(d_model=16, n_layers=3, n_heads=2, **(dict(vocab_size=13, mask_id=12, seq_len=24, layout="sequence") if seq else {}))
    torch.manual_seed(3)
    cfg.skip_rows = skip_rows
    model = MDM(cfg).double().eval()
    if not seq:
        torch.nn.init.normal_(model.rel_bias, std=1.0)
    B, L = 2, cfg.seq_len
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, cfg.vocab_size - 1, (B, L), generator=g)
    ids[torch.rand(B, L, generator=g) < 0.6] = cfg.mask_id
    mask = torch.ones(B, L, dtype=torch.bool)
    if seq:
        mask[1, -5:] = False  # key padding
    order = torch.rand(B, L, generator=g).argsort(-1)
    cand = torch.zeros(B, L, dtype=torch.bool).scatter_(1, order[:, :3], True)
    probes = torch.zeros(B, L, dtype=torch.bool).scatter_(1, order[:, 3:9], True)
    active = cand | probes
    w = torch.randn(B, L, cfg.vocab_size, generator=g, dtype=torch.float64)
    if upstream == "probes":
        w = w * probes[..., None]
    grad_rows = cand if use_grad_rows else None

    def run(mode: str):
        model.config.aqa_mode = mode
        e = model.embed(ids).detach().requires_grad_(True)
        out = model.logits_from_embeds(e, attention_mask=mask, active=active, grad_rows=grad_rows)
        return out, torch.autograd.grad((out * w).sum(), e)[0]

    try:
        fast_out, fast = run("exact")
        _, slow = run("reference")
    finally:
        model.config.aqa_mode = "exact"
    with torch.no_grad():
        torch.testing.assert_close(fast_out, model.logits_from_embeds(model.embed(ids), attention_mask=mask))
    rows = cand if use_grad_rows else torch.ones(B, L, dtype=torch.bool)
    torch.testing.assert_close(fast[rows], slow[rows], atol=1e-10, rtol=1e-8)
    assert torch.all(fast[~rows] == 0)
    assert fast[rows].abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("n_layers", [3, 5])
def test_grow_depth_keeps_the_function(tiny_sudoku_model, sudoku_ids, n_layers):
    grown = grow_depth(tiny_sudoku_model, n_layers)
    assert grown.config.n_layers == n_layers and len(grown.blocks) == n_layers
    assert grown.num_parameters() > tiny_sudoku_model.num_parameters()
    torch.testing.assert_close(grown.logits(sudoku_ids), tiny_sudoku_model.logits(sudoku_ids), rtol=0, atol=1e-6)
    # the old blocks keep their weights; some new block is not the identity once trained
    kept = [b for b in grown.blocks if torch.equal(b.qkv.weight, tiny_sudoku_model.blocks[0].qkv.weight)]
    assert len(kept) == 1
    new = [b for b in grown.blocks if not b.proj.weight.any()]
    assert len(new) == n_layers - 2
    with torch.no_grad():
        new[0].proj.weight.normal_()
    assert not torch.allclose(grown.logits(sudoku_ids), tiny_sudoku_model.logits(sudoku_ids))


def test_grow_depth_needs_more_blocks(tiny_sudoku_model):
    with pytest.raises(ValueError, match="n_layers must exceed the model's 2 blocks, got 2"):
        grow_depth(tiny_sudoku_model, 2)
