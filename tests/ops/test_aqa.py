"""ActiveQueryAttention against its slow references (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tabes.ops.aqa import attention, attention_kv_reference, attention_reference

pytestmark = pytest.mark.usefixtures("probs_path")  # every test through both sources of P


def _inputs(dtype=torch.float32, B=2, H=3, L=17, Dh=8, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, Dh, generator=g, dtype=dtype, requires_grad=True) for _ in range(3))
    b = torch.randn(1, H, L, L, generator=g, dtype=dtype, requires_grad=True) if bias else None
    active = torch.rand(B, L, generator=g) < 0.3
    active[1] = False
    active[1, [0, 5]] = True  # rows with different active counts
    return q, k, v, b, active


def test_forward_equals_dense_attention():
    q, k, v, b, active = _inputs()
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=b)
    for mode in ("exact", "reference", "kv"):
        out = attention(q, k, v, bias=b, active=active, mode=mode)
        assert (out - dense).abs().max().item() <= 1e-6, mode


@pytest.mark.parametrize(("mode", "reference"), [("exact", attention_reference), ("kv", attention_kv_reference)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradients_equal_reference(mode, reference, with_bias):
    q, k, v, b, active = _inputs(bias=with_bias)
    inputs = [t for t in (q, k, v, b) if t is not None]
    w = torch.randn(2, 3, 17, 8, generator=torch.Generator().manual_seed(9))
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active, mode=mode) * w).sum(), inputs)
    slow = torch.autograd.grad((reference(q, k, v, bias=b, active=active) * w).sum(), inputs)
    for name, f, s in zip("qkvb", fast, slow):
        assert (f - s).abs().max().item() <= 1e-5, (mode, name)
    # inactive query rows get exactly zero gradient through the query path
    dq = fast[0]
    assert torch.all(dq.transpose(1, 2)[~active] == 0)
    assert dq.transpose(1, 2)[active].abs().sum() > 0


def test_exact_differs_from_dense_gradient():
    """The stop-gradient is real: AQA's query gradient is zero on inactive rows where the dense
    gradient is not; active rows keep the dense query gradient; the key gradient, which gathers
    every row's scores in the dense backward, differs."""
    q, k, v, b, active = _inputs()
    aqa_dq, aqa_dk = torch.autograd.grad((attention(q, k, v, bias=b, active=active, mode="exact") ** 2).sum(), (q, k))
    dense_dq, dense_dk = torch.autograd.grad((F.scaled_dot_product_attention(q, k, v, attn_mask=b) ** 2).sum(), (q, k))
    inactive = ~active
    assert torch.all(aqa_dq.transpose(1, 2)[inactive] == 0)
    assert dense_dq.transpose(1, 2)[inactive].abs().sum() > 0
    torch.testing.assert_close(aqa_dq.transpose(1, 2)[active], dense_dq.transpose(1, 2)[active])
    assert (aqa_dk - dense_dk).abs().max() > 1e-3


def test_training_attention_equals_sdpa_in_values_and_gradients():
    """The explicit kernel used for training (no active set) against PyTorch's SDPA, float64."""
    from tabes.ops.aqa import kernels

    q, k, v, b, _ = _inputs(dtype=torch.float64)
    w = torch.randn(2, 3, 17, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    outs = []
    for kernel in ("explicit", "sdpa"):
        with kernels(dense=kernel):
            out = attention(q, k, v, bias=b)
        outs.append((out, torch.autograd.grad((out * w).sum(), (q, k, v, b))))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for f, s in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(f, s)
    with pytest.raises(ValueError, match="dense kernel"), kernels(dense="flash"):
        pass


def test_all_active_equals_dense_gradient():
    q, k, v, b, _ = _inputs(dtype=torch.float64)
    active = torch.ones(2, 17, dtype=torch.bool)
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active) ** 2).sum(), (q, k, v, b))
    dense = torch.autograd.grad((F.scaled_dot_product_attention(q, k, v, attn_mask=b) ** 2).sum(), (q, k, v, b))
    for f, d in zip(fast, dense):
        torch.testing.assert_close(f, d)


def test_bad_active_mask():
    q, k, v, b, active = _inputs()
    with pytest.raises(ValueError, match="active must be"):
        attention(q, k, v, bias=b, active=active[:, :5])
    with pytest.raises(ValueError, match="AQA mode"):
        attention(q, k, v, bias=b, active=active, mode="sparse")


@pytest.mark.parametrize("fraction", [0.2, 0.8])
@pytest.mark.parametrize("mode", ["exact", "kv"])
def test_gathered_and_masked_backward_agree_with_reference(fraction, mode):
    """Both backward layouts (gathered rows for small A, masked rows for large A) equal the reference."""
    q, k, v, b, _ = _inputs(L=20)
    active = torch.rand(2, 20, generator=torch.Generator().manual_seed(3)) < fraction
    reference = attention_reference if mode == "exact" else attention_kv_reference
    w = torch.randn(2, 3, 20, 8, generator=torch.Generator().manual_seed(4))
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active, mode=mode) * w).sum(), (q, k, v, b))
    slow = torch.autograd.grad((reference(q, k, v, bias=b, active=active) * w).sum(), (q, k, v, b))
    for f, s in zip(fast, slow):
        assert (f - s).abs().max().item() <= 1e-5


@pytest.mark.parametrize("upstream", ["active rows", "one inactive row too"])
def test_value_gradient_from_active_rows_only_when_upstream_is_zero_elsewhere(upstream):
    """The last layer's case: dO is zero outside the active rows, so dV comes from the active
    rows alone. One nonzero inactive row must switch back to the full dV = P^T dO."""
    q, k, v, b, _ = _inputs(L=20)
    active = torch.rand(2, 20, generator=torch.Generator().manual_seed(3)) < 0.2  # 7 and 9 rows: the gathered layout
    w = torch.randn(2, 3, 20, 8, generator=torch.Generator().manual_seed(4)) * active[:, None, :, None]
    if upstream == "one inactive row too":
        row = int((~active[0]).nonzero()[0])
        w[0, :, row] = 1.0
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active) * w).sum(), (q, k, v, b))
    slow = torch.autograd.grad((attention_reference(q, k, v, bias=b, active=active) * w).sum(), (q, k, v, b))
    for name, f, s in zip("qkvb", fast, slow):
        assert (f - s).abs().max().item() <= 1e-5, name
    assert fast[2].abs().sum() > 0


@pytest.mark.parametrize("n_grad", [2, 15])  # few rows (the column path) and many (the general path, masked)
@pytest.mark.parametrize("upstream", ["dense", "active rows"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_grad_rows_equal_reference(n_grad, upstream, with_bias):
    """Rows outside grad_rows are constants: their q/k/v gradient is zero and every other
    gradient equals the reference with those rows detached."""
    q, k, v, b, _ = _inputs(L=20, bias=with_bias)
    g = torch.Generator().manual_seed(5)
    active = torch.rand(2, 20, generator=g) < 0.4
    grad_rows = torch.zeros(2, 20, dtype=torch.bool)
    grad_rows[0, torch.randperm(20, generator=g)[:n_grad]] = True
    grad_rows[1, torch.randperm(20, generator=g)[: max(1, n_grad - 1)]] = True
    grad_rows[:, 0] |= active[:, 0]  # some grad rows active, some not
    w = torch.randn(2, 3, 20, 8, generator=g)
    if upstream == "active rows":
        w = w * active[:, None, :, None]
    inputs = [q, k, v]  # the bias is a constant here (the few-rows path does not give its gradient)
    b = None if b is None else b.detach()
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active, grad_rows=grad_rows) * w).sum(), inputs)
    slow = torch.autograd.grad((attention_reference(q, k, v, bias=b, active=active, grad_rows=grad_rows) * w).sum(), inputs)
    for name, f, s in zip("qkv", fast, slow):
        assert (f - s).abs().max().item() <= 1e-5, name
        assert torch.all(f.transpose(1, 2)[~grad_rows] == 0), name
        assert f.abs().sum() > 0, name


def test_grad_rows_with_bias_gradient_takes_the_general_path():
    q, k, v, b, active = _inputs(L=20)
    grad_rows = torch.zeros(2, 20, dtype=torch.bool)
    grad_rows[:, :2] = True
    w = torch.randn(2, 3, 20, 8, generator=torch.Generator().manual_seed(6))
    fast = torch.autograd.grad((attention(q, k, v, bias=b, active=active[:, :20], grad_rows=grad_rows) * w).sum(), (q, k, v, b))
    slow = torch.autograd.grad((attention_reference(q, k, v, bias=b, active=active[:, :20], grad_rows=grad_rows) * w).sum(), (q, k, v, b))
    for f, s in zip(fast, slow):
        assert (f - s).abs().max().item() <= 1e-5


def test_key_padding_bias_and_dense_path_with_grad_rows():
    """A (B, 1, 1, L) key-padding bias broadcasts through every backward path; without an active
    set, grad_rows still makes the other rows constants."""
    q, k, v, _, active = _inputs(L=17, bias=False)
    pad = torch.zeros(2, 1, 1, 17)
    pad[1, ..., 12:] = float("-inf")
    grad_rows = torch.zeros(2, 17, dtype=torch.bool)
    grad_rows[:, 3] = True
    for act, gr in ((active, None), (active, grad_rows), (None, grad_rows)):
        ref_act = torch.ones(2, 17, dtype=torch.bool) if act is None else act
        fast = torch.autograd.grad((attention(q, k, v, bias=pad, active=act, grad_rows=gr) ** 2).sum(), (q, k, v))
        slow = torch.autograd.grad((attention_reference(q, k, v, bias=pad, active=ref_act, grad_rows=gr) ** 2).sum(), (q, k, v))
        for f, s in zip(fast, slow):
            assert (f - s).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("mode", "reference"), [("exact", attention_reference), ("kv", attention_kv_reference)])
def test_attention_to_keys_applies_each_mode_to_the_blocks_own_rows(mode, reference):
    """The cached step's attention: with no cached keys (Lk = Lq) it is each mode's reference;
    with cached keys in front, those are constants."""
    from tabes.ops.aqa import attention_to_keys

    q, k, v, b, active = _inputs(dtype=torch.float64)
    w = torch.randn(2, 3, 17, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    fast = torch.autograd.grad((attention_to_keys(q, k, v, bias=b, active=active, mode=mode) * w).sum(), (q, k, v, b))
    slow = torch.autograd.grad((reference(q, k, v, bias=b, active=active) * w).sum(), (q, k, v, b))
    for name, f, s in zip("qkvb", fast, slow):
        torch.testing.assert_close(f, s, atol=1e-10, rtol=1e-8, msg=f"{mode} {name}")
    ck, cv = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(2))
    cb = torch.zeros(1, 3, 17, 22, dtype=torch.float64)
    out = attention_to_keys(q, torch.cat([ck, k], 2), torch.cat([cv, v], 2), bias=cb, active=active, mode=mode)
    assert out.shape == q.shape and out.grad_fn is not None
