"""ActiveQueryAttention (AQA): standard attention forward, sparse-adjoint backward.

Given an *active* set A of query rows, the backward pass treats the attention scores of every
inactive query row as constants (stop-gradient on S_i = q_i K^T / sqrt(d) + bias_i for i not in
A). Gradient still flows

- into the values V through every row's output (O_i = P_i V, with P_i constant when i is not
  in A), and
- into queries and keys through the score rows of A only.

So inactive query rows get exactly zero query gradient, and the score/softmax backward costs
O(|A| L d) instead of O(L^2 d): dP_A = dO_A V^T, dS_A = P_A * (dP_A - rowsum(P_A * dP_A)),
dQ_A = dS_A K, dK = dS_A^T Q_A. The value backward dV = P^T dO stays dense (one L x L x d
matmul), so the exact mode keeps the full probability matrix P for it.

Modes (``mode=`` of :func:`attention`, ``aqa_mode`` of a model config):

- ``"exact"``: the fast path above, a custom autograd function.
- ``"reference"``: the slow, obviously correct definition: scores of inactive rows are
  ``detach()``-ed inside ordinary autograd attention. Used by the tests.
- ``"kv"``: an *approximation*: additionally stop gradient through inactive rows' outputs,
  keys and values, so the attention backward is O(|A|^2 d). Its effect on BoE's Token
  Influence Score is measured in ``docs/boe.md``; it is not the default.

The forward values are identical in every mode (float32 max error against
``torch.nn.functional.scaled_dot_product_attention`` is tested at 1e-6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

AQA_MODES = ("exact", "reference", "kv")


def _scores(q: Tensor, k: Tensor, bias: Tensor | None) -> Tensor:
    s = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (B, H, L, L); scaling q is cheaper than scaling S
    return s if bias is None else s + bias


def attention_reference(q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None, active: Tensor) -> Tensor:
    """Slow reference: softmax over scores whose inactive query rows are detached.

    Shapes: q, k, v (B, H, L, Dh); bias broadcastable to (B, H, L, L); active (B, L) bool.
    """
    s = _scores(q, k, bias)
    s = torch.where(active[:, None, :, None], s, s.detach())
    return torch.softmax(s, dim=-1) @ v


def attention_kv_reference(q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None, active: Tensor) -> Tensor:
    """The ``kv`` approximation by detaching: inactive rows' outputs, keys and values carry no gradient."""
    a = active[:, None, :, None]
    k = torch.where(a, k, k.detach())
    v = torch.where(a, v, v.detach())
    out = attention_reference(q, k, v, bias=bias, active=active)
    return torch.where(a, out, out.detach())


def active_index(active: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L) bool -> (B, A) long indices of active rows (padded with 0) and (B, A) validity."""
    n = active.sum(-1)
    a_max = max(int(n.max()), 1)
    order = torch.sort(active.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :a_max]  # (B, A)
    valid = torch.arange(a_max, device=active.device)[None, :] < n[:, None]
    return order.masked_fill(~valid, 0), valid


def _gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """t (B, H, L, X), idx (B, A) -> (B, H, A, X)."""
    B, H, _, X = t.shape
    return t.gather(2, idx[:, None, :, None].expand(B, H, idx.shape[1], X))


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a (B, H, L, L) gradient over the dims a broadcast bias had as size 1."""
    dims = [d for d, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _ActiveQueryAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, active: Tensor, kv_approx: bool) -> Tensor:
        s = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (B, H, L, L)
        if bias is not None:
            s += bias  # in place: s is a fresh buffer
        p = torch.softmax(s, dim=-1)
        del s
        out = p @ v  # (B, H, L, Dh)
        idx, valid = active_index(active)
        ctx.save_for_backward(q, k, v, p, out, idx, valid, active)
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.kv_approx = kv_approx
        return out

    @staticmethod
    def backward(ctx, d_out: Tensor):
        q, k, v, p, out, idx, valid, active = ctx.saved_tensors
        B, H, L, Dh = q.shape
        scale = 1.0 / math.sqrt(Dh)
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        # Gather the active rows when they are at most half of L; above that the gather and
        # scatter cost more than they save, and the same values come from masking the rows.
        gathered = 2 * idx.shape[1] <= L
        if gathered:
            p_a = _gather_rows(p, idx)  # (B, H, A, L) probabilities of active rows
            do_a = _gather_rows(d_out, idx) * valid[:, None, :, None].to(q.dtype)  # (B, H, A, Dh), zero on padding
            q_a = _gather_rows(q, idx)
            o_a = _gather_rows(out, idx)
        else:
            p_a, q_a, o_a = p, q, out
            do_a = d_out * active[:, None, :, None].to(q.dtype)  # (B, H, L, Dh), zero on inactive rows
        dq = dk = dv = dbias = None
        if ctx.kv_approx:
            # only active keys/values receive gradient, only from active outputs
            col = active.to(q.dtype)[:, None, :, None]  # (B, 1, L, 1) active columns
            if need_v:
                dv = (p_a.transpose(-1, -2) @ do_a) * col
        elif need_v:
            # values get gradient through every row's output: dV = P^T dO. When the upstream
            # gradient is zero outside the active rows (the last layer, whose outputs matter
            # only at the probes), the active rows alone give the same sum at |A|/L the cost.
            if gathered and not ((d_out != 0).any(-1).any(1) & ~active).any():
                dv = p_a.transpose(-1, -2) @ do_a
            else:
                dv = p.transpose(-1, -2) @ d_out  # (B, H, L, Dh)
        # dS = P * (dP - rowsum(P * dP)), with rowsum(P * dP) = rowsum(dO * O) (no (A, L) product)
        ds_a = do_a @ v.transpose(-1, -2)  # dP_A (B, H, A, L), then dS_A in place
        ds_a.sub_((do_a * o_a).sum(-1, keepdim=True)).mul_(p_a)  # zero on padded/inactive rows
        if need_q:
            dq_a = (ds_a @ k) * scale
            dq = torch.zeros_like(q).scatter_add_(2, idx[:, None, :, None].expand(B, H, idx.shape[1], Dh), dq_a) if gathered else dq_a
        if need_k:
            dk = (ds_a.transpose(-1, -2) @ q_a) * scale  # (B, H, L, Dh)
            if ctx.kv_approx:
                dk = dk * col
        if need_bias:
            full = ds_a
            if gathered:
                full = torch.zeros(B, H, L, L, dtype=q.dtype, device=q.device)
                full.scatter_add_(2, idx[:, None, :, None].expand(B, H, idx.shape[1], L), ds_a)
            dbias = _reduce_to(full, ctx.bias_shape)
        return dq, dk, dv, dbias, None, None


def attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, active: Tensor | None = None, mode: str = "exact") -> Tensor:
    """Scaled dot-product attention with an optional ActiveQueryAttention backward.

    Args:
        q, k, v: (B, H, L, Dh).
        bias: additive attention bias broadcastable to (B, H, L, L) (relation bias, padding
            as -inf), or None.
        active: (B, L) bool active query rows, or None for ordinary dense attention.
        mode: ``"exact"``, ``"reference"`` or ``"kv"`` (see the module docstring).

    Returns:
        (B, H, L, Dh) attention output; equal to dense attention in value in every mode.
    """
    if active is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if active.shape != (q.shape[0], q.shape[2]) or active.dtype != torch.bool:
        raise ValueError(f"active must be a (B, L) = {(q.shape[0], q.shape[2])} bool tensor, got {tuple(active.shape)} {active.dtype}")
    if mode == "reference":
        return attention_reference(q, k, v, bias=bias, active=active)
    if mode not in ("exact", "kv"):
        raise ValueError(f"AQA mode must be one of {AQA_MODES}, got {mode!r}")
    if not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return _ActiveQueryAttention.apply(q, k, v, bias, active, mode == "kv")
