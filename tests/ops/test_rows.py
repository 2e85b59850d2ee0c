"""Row-skipping linear layers against ordinary autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tabes.ops.rows import linear_rows, mlp_rows


def _upstream(shape, zero_fraction, seed=0):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    grad[torch.rand(shape[:-1], generator=g) < zero_fraction] = 0
    return grad


@pytest.mark.parametrize("zero_fraction", [0.0, 0.5, 0.97, 1.0])
def test_linear_rows_input_gradient_equals_autograd(zero_fraction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    up = _upstream((3, 11, 5), zero_fraction)
    out = linear_rows(x, w, b)
    torch.testing.assert_close(out, F.linear(x, w, b))
    fast = torch.autograd.grad(out, x, up)[0]
    slow = torch.autograd.grad(F.linear(x, w, b), x, up)[0]
    torch.testing.assert_close(fast, slow)
    zero_rows = up.eq(0).all(-1)
    assert torch.all(fast[zero_rows] == 0)


@pytest.mark.parametrize("zero_fraction", [0.0, 0.7])
def test_mlp_rows_input_gradient_equals_autograd(zero_fraction):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w1, b1 = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    w2, b2 = torch.randn(4, 16, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    up = _upstream((2, 9, 4), zero_fraction, seed=3)
    out = mlp_rows(x, w1, b1, w2, b2)
    ref = F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, up)[0], torch.autograd.grad(ref, x, up)[0])


def test_weights_are_constants():
    w = torch.randn(5, 6, requires_grad=True)
    x = torch.randn(4, 6, requires_grad=True)
    linear_rows(x, w).sum().backward()
    assert w.grad is None and x.grad is not None


def test_linear_rows_blocks_skip_their_own_zero_rows():
    """A fused q/k/v projection: each output block has its own zero rows."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 6, generator=g, dtype=torch.float64)
    up = torch.randn(2, 10, 9, generator=g, dtype=torch.float64)
    up[:, :7, :3] = 0  # the first block (q) has gradient on 3 rows only
    up[:, 1, 3:] = 0  # row 1 has none at all
    fast = torch.autograd.grad(linear_rows(x, w, blocks=3), x, up)[0]
    torch.testing.assert_close(fast, torch.autograd.grad(F.linear(x, w), x, up)[0])
    assert torch.all(fast[:, 1] == 0)
    with pytest.raises(ValueError, match="blocks must divide"):
        linear_rows(x, w, blocks=4)
