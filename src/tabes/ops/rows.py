"""Input-gradient-only linear layers whose backward skips rows with no upstream gradient.

In a BoE backward most rows of many activations carry an exactly-zero gradient: the last
block's outputs matter only at the probes, the first block's projections only at the
candidates. Autograd multiplies those zero rows anyway. :func:`linear_rows` and
:func:`mlp_rows` compute the same values as ``F.linear`` and ``fc -> gelu -> out``, and their
backward returns the same input gradient while multiplying only the rows whose upstream
gradient is nonzero (checked at run time; with few zero rows it is the ordinary dense product).

The weights are constants here: no gradient is computed for them (BoE differentiates with
respect to the input embeddings only). Use the ordinary layers to train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Below this fraction of nonzero rows the backward gathers them; above it the dense product
# is cheaper than the gather and scatter.
DENSE_ABOVE = 0.9


def _nonzero_rows(grad: Tensor) -> Tensor | None:
    """Flat indices of the rows of ``grad`` (N, X) that are not all zero, or None if the dense product is cheaper."""
    rows = grad.abs().amax(-1).ne(0).nonzero().squeeze(1)  # amax: cheaper than ne().any(); NaN rows count as nonzero
    return None if rows.numel() > DENSE_ABOVE * grad.shape[0] else rows


def _rows_product(grad: Tensor, weight: Tensor, fn=None) -> Tensor:
    """grad (..., Dout) @ weight (Dout, Din) on the nonzero rows only; ``fn(rows_grad, rows)`` may
    transform the gathered rows first (rows None means all)."""
    flat = grad.reshape(-1, grad.shape[-1])
    rows = _nonzero_rows(flat)
    g = flat if rows is None else flat.index_select(0, rows)
    if fn is not None:
        g = fn(g, rows)
    out = g @ weight
    if rows is not None:
        out = flat.new_zeros(flat.shape[0], weight.shape[1]).index_copy_(0, rows, out)
    return out.view(*grad.shape[:-1], weight.shape[1])


class _LinearRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, blocks: int) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.blocks = blocks
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        # each block of outputs (e.g. q, k and v) has its own zero rows
        dx = None
        for g, w in zip(grad.chunk(ctx.blocks, -1), weight.chunk(ctx.blocks, 0)):
            part = _rows_product(g, w)
            dx = part if dx is None else dx.add_(part)
        return dx, None, None, None


class _MLPRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
        h = F.linear(x, w1, b1)  # (..., Dh)
        ctx.save_for_backward(h, w1, w2)
        return F.linear(F.gelu(h), w2, b2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w1, w2 = ctx.saved_tensors
        flat_h = h.reshape(-1, h.shape[-1])

        def through_gelu(g: Tensor, rows: Tensor | None) -> Tensor:  # rows of d(out input) -> rows of d(fc output)
            hr = flat_h if rows is None else flat_h.index_select(0, rows)
            return torch.ops.aten.gelu_backward(g @ w2, hr)

        return _rows_product(grad, w1, through_gelu), None, None, None, None


def linear_rows(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, blocks: int = 1) -> Tensor:
    """``F.linear(x, weight, bias)``; backward: input gradient only, zero upstream rows skipped.

    ``blocks`` > 1 splits the outputs into that many equal blocks (a fused q/k/v projection:
    3) whose zero rows are found separately. Shapes: x (..., Din), weight (Dout, Din), bias
    (Dout,) -> (..., Dout).
    """
    if weight.shape[0] % blocks:
        raise ValueError(f"blocks must divide the {weight.shape[0]} outputs, got {blocks}")
    return _LinearRows.apply(x, weight.detach(), None if bias is None else bias.detach(), blocks)


def mlp_rows(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    """``F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)``; backward as :func:`linear_rows`.

    Shapes: x (..., D), w1 (Dh, D), w2 (D, Dh) -> (..., D).
    """
    detach = lambda t: None if t is None else t.detach()  # noqa: E731
    return _MLPRows.apply(x, w1.detach(), detach(b1), w2.detach(), detach(b2))
