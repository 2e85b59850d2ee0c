"""Both ``kv`` paths of our MDM (rows gathered when at most half are active, masked above) against
the slow attention-level ``kv`` reference (detached inactive keys, values and outputs)."""

from __future__ import annotations

import pytest
import torch

import tabes.models.mdm as mdm
from tabes.models.mdm import MDM, MDMConfig
from tabes.ops.aqa import attention_kv_reference


@pytest.mark.parametrize("density", [0.4, 0.8])
@pytest.mark.parametrize("layout", ["sudoku", "sequence"])
def test_kv_paths_match_the_kv_reference(layout, density, monkeypatch):
    torch.manual_seed(0)
    kw = dict(d_model=32, n_layers=2, n_heads=2, aqa_mode="kv")
    cfg = MDMConfig(**kw) if layout == "sudoku" else MDMConfig(vocab_size=13, mask_id=12, seq_len=30, layout="sequence", **kw)
    model = MDM(cfg).double()
    L = cfg.seq_len
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size - 1, (3, L), generator=g)
    active = torch.rand(3, L, generator=g) < density
    active[2] = False
    active[2, 3] = True  # rows with different active counts, one with a single active row
    attention_mask = None
    if layout == "sequence":
        attention_mask = torch.ones(3, L, dtype=torch.bool)
        attention_mask[0, -4:] = False
    weights = torch.randn(3, L, cfg.vocab_size, generator=g, dtype=torch.float64) * active[..., None]

    # forward values equal the dense forward
    e = model.embed(ids).detach().requires_grad_(True)
    fast = model.logits_from_embeds(e, attention_mask=attention_mask, active=active)
    with torch.no_grad():
        dense = model.logits_from_embeds(e, attention_mask=attention_mask)
    torch.testing.assert_close(fast.detach(), dense)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), e)
    # reference: every row through the blocks, attention by detaching (inactive keys/values/outputs constant)
    monkeypatch.setattr(model.config, "skip_rows", False)
    monkeypatch.setattr(model, "_active_rows_logits", lambda x, biases, act: model._dense_logits(x, biases, act, "kv"))
    monkeypatch.setattr(
        mdm, "attention", lambda q, k, v, *, bias, active, mode, grad_rows: attention_kv_reference(q, k, v, bias=bias, active=active)
    )
    e2 = model.embed(ids).detach().requires_grad_(True)
    ref = model.logits_from_embeds(e2, attention_mask=attention_mask, active=active)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), e2)
    torch.testing.assert_close(g_fast[active], g_ref[active])
    assert g_fast[~active].abs().max() == 0  # inactive rows are constants
