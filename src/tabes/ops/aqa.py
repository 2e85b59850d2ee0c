"""ActiveQueryAttention (AQA): standard attention forward, sparse-adjoint backward.

Given an *active* set A of query rows, the backward pass treats the attention scores of every
inactive query row as constants (stop-gradient on S_i = q_i K^T / sqrt(d) + bias_i for i not in
A). Gradient still flows

- into the values V through every row's output (O_i = P_i V, with P_i constant when i is not
  in A), and
- into queries and keys through the score rows of A only.

So inactive query rows get exactly zero query gradient, and the score/softmax backward costs
O(|A| L d) instead of O(L^2 d): P_A = exp(Q_A K^T / sqrt(d) + bias_A - lse_A) is recomputed from
the forward's per-row log-sum-exp, dP_A = dO_A V^T, dS_A = P_A * (dP_A - rowsum(dO_A * O_A)),
dQ_A = dS_A K, dK = dS_A^T Q_A, chunked over the active rows so that a chunk of score rows
stays in cache. The value gradient dV = P^T dO sums over every row; it is computed from the
rows that need it:

- when the upstream gradient dO is zero outside A (the last layer of a BoE backward, whose
  outputs matter only at the probes): dV = P_A^T dO_A, O(|A| L d). Every gradient then comes
  from the active rows alone, and on the CPU the whole backward is PyTorch's fused attention
  backward run on the gathered active query rows (``Kernels.fused_backward``);
- when only the rows ``grad_rows`` of q, k, v need a gradient (the first layer, whose inputs
  matter only at the candidates): dV_G = P[:, G]^T dO, O(L |G| d);
- otherwise the full P is recomputed: one L x L x d product, the only dense one.

Nothing of size L x L is kept between the forward and the backward: the forward is PyTorch's
fused attention, which also returns the log-sum-exp on the CPU. Small problems (P with at most
``Kernels.keep_probs_max`` elements, e.g. the Sudoku model's L = 81) keep P from an explicit forward
instead, where recomputing would cost more than storing. The tests run every backward (kept P,
fused, recomputed) against the reference.

Modes (``mode=`` of :func:`attention`, ``aqa_mode`` of a model config):

- ``"kv"`` (the default of our MDM and of HF models): the paper's sparse adjoint. Inactive
  rows' outputs, keys and values carry no gradient either, so the gradient never leaves the
  active rows: the attention backward is O(|A| L d) in every layer (dO is zero outside A, dK
  and dV are kept on A only), and our MDM also gathers the active rows through the linear
  layers (:meth:`tabes.models.mdm.MDM.logits_from_embeds`). Its TIS fidelity and its Sudoku
  accuracy against the dense backward are in ``docs/boe.md``.
- ``"exact"``: stop-gradient on the inactive scores only; gradient still flows through every
  row's values, so every middle layer's backward is dense in L (the fast path above).
- ``"reference"``: the slow, obviously correct definition of ``exact``: scores of inactive
  rows are ``detach()``-ed inside ordinary autograd attention. Used by the tests
  (:func:`attention_kv_reference` is the same for ``kv``).

Under float16/bfloat16 inputs the kept P, the log-sum-exp and the whole backward run in float32.

The forward values are identical in every mode (float32 max error against
``torch.nn.functional.scaled_dot_product_attention`` is tested at 1e-6).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

AQA_MODES = ("exact", "reference", "kv")


def _scores(q: Tensor, k: Tensor, bias: Tensor | None) -> Tensor:
    s = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)  # (B, H, Lq, Lk); scaling q is cheaper than scaling S
    return s if bias is None else s.add_(bias)  # in place: s is a fresh buffer


def _per_row(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, L) bool -> (B, 1, L, 1) 0/1 factor that zeroes the rows outside ``mask`` of a (B, H, L, X) tensor."""
    return mask[:, None, :, None].to(dtype)


def _constant_outside(t: Tensor, rows: Tensor | None) -> Tensor:
    """t (B, H, L, X) with the rows outside ``rows`` (B, L) bool detached."""
    return t if rows is None else torch.where(rows[:, None, :, None], t, t.detach())


def attention_reference(q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None, active: Tensor, grad_rows: Tensor | None = None) -> Tensor:
    """Slow reference: softmax over scores whose inactive query rows are detached.

    Shapes: q, k, v (B, H, L, Dh); bias broadcastable to (B, H, L, L); active and grad_rows
    (B, L) bool (rows of q, k, v outside ``grad_rows`` are constants).
    """
    q, k, v = (_constant_outside(t, grad_rows) for t in (q, k, v))
    s = _scores(q, k, bias)
    s = torch.where(active[:, None, :, None], s, s.detach())
    return torch.softmax(s, dim=-1) @ v


def attention_kv_reference(
    q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None, active: Tensor, grad_rows: Tensor | None = None
) -> Tensor:
    """The ``kv`` approximation by detaching: inactive rows' outputs, keys and values carry no gradient."""
    a = active[:, None, :, None]
    k = torch.where(a, k, k.detach())
    v = torch.where(a, v, v.detach())
    out = attention_reference(q, k, v, bias=bias, active=active, grad_rows=grad_rows)
    return torch.where(a, out, out.detach())


def active_index(active: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L) bool -> (B, A) long indices of active rows (padded with 0) and (B, A) validity."""
    n = active.sum(-1)
    a_max = max(int(n.max()), 1)
    order = torch.sort(active.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :a_max]  # (B, A)
    valid = torch.arange(a_max, device=active.device)[None, :] < n[:, None]
    return order.masked_fill(~valid, 0), valid


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """t (B', H', L, X) with B', H' possibly 1 (broadcast), idx (B, A) -> (B, H', A, X)."""
    B, A = idx.shape
    t = t.expand(B, *t.shape[1:])
    if t.shape[2] == 1:  # broadcast along the rows (a key-padding bias)
        return t.expand(B, t.shape[1], A, t.shape[-1])
    return t.gather(2, idx[:, None, :, None].expand(B, t.shape[1], A, t.shape[-1]))


def gather_cols(t: Tensor, idx: Tensor) -> Tensor:
    """t (B', H', X, L) with B', H' possibly 1, idx (B, G) -> (B, H', X, G)."""
    B, G = idx.shape
    t = t.expand(B, *t.shape[1:])
    if t.shape[3] == 1:
        return t.expand(B, t.shape[1], t.shape[2], G)
    return t.gather(3, idx[:, None, None, :].expand(B, t.shape[1], t.shape[2], G))


def _scatter_rows(src: Tensor, idx: Tensor, L: int) -> Tensor:
    """src (B, H, A, X) rows written at idx (B, A) of a zero (B, H, L, X) tensor (padding rows of src must be zero)."""
    B, H, A, X = src.shape
    return src.new_zeros(B, H, L, X).scatter_add_(2, idx[:, None, :, None].expand(B, H, A, X), src)


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a (B, H, L, L) gradient over the dims a broadcast bias had as size 1."""
    dims = [d for d, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Dense attention output (B, H, L, Dh) and per-row log-sum-exp of the scores (B, H, L).

    On the CPU this is PyTorch's fused kernel (one pass, nothing L x L kept); elsewhere the
    scores are formed explicitly; the log-sum-exp is float32 for half-precision inputs.
    """
    fused = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if q.device.type == "cpu" and fused is not None:
        out, lse = fused(q, k, v, 0.0, False, attn_mask=None if bias is None else bias.to(q.dtype))
        return out, lse
    s = _scores(q, k, bias).to(_stats_dtype(q.dtype))
    return (torch.softmax(s, dim=-1) @ v.to(s.dtype)).to(q.dtype), torch.logsumexp(s, dim=-1)


@dataclass(frozen=True)
class Kernels:
    """Which kernel each attention path uses; change them for a block of code with :func:`kernels`.

    Attributes:
        dense: attention with autograd and no active set (training): ``"explicit"``
            (:func:`dense_attention`) or ``"sdpa"`` (PyTorch's ``scaled_dot_product_attention``).
        keep_probs_max: problems whose P has at most this many elements keep it from the
            forward (small L, where recomputing costs more than storing); larger ones recompute
            the rows they need from the per-row log-sum-exp.
        fused_backward: on the CPU, when dO is zero outside the active rows and no bias
            gradient is needed, run PyTorch's fused attention backward on the active rows.
        free_backward: benches only: dense attention whose backward returns zeros, so a
            model's backward time is the time of everything but attention.
    """

    dense: str = "explicit"
    keep_probs_max: int = 1 << 22
    fused_backward: bool = True
    free_backward: bool = False

    def __post_init__(self) -> None:
        if self.dense not in ("explicit", "sdpa"):
            raise ValueError(f"dense kernel must be 'explicit' or 'sdpa', got {self.dense!r}")
        if self.keep_probs_max < 0:
            raise ValueError(f"keep_probs_max must be >= 0, got {self.keep_probs_max}")


_KERNELS: contextvars.ContextVar[Kernels] = contextvars.ContextVar("tabes_aqa_kernels", default=Kernels())  # noqa: B039 (frozen)


@contextlib.contextmanager
def kernels(**changes) -> Iterator[Kernels]:
    """Use :class:`Kernels` with ``changes`` inside the block (per thread / task, restored after).

    Example:
        >>> with kernels(dense="sdpa"):  # doctest: +SKIP
        ...     loss = model(ids).sum()
    """
    token = _KERNELS.set(replace(_KERNELS.get(), **changes))
    try:
        yield _KERNELS.get()
    finally:
        _KERNELS.reset(token)


class _AttentionWithFreeBackward(torch.autograd.Function):
    """Dense attention whose backward returns zeros (``Kernels.free_backward``)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        ctx.shape = q.shape
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad.new_zeros(ctx.shape),) * 3 + (None,)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """Plain attention with autograd, for training: (B, H, L, Dh) -> (B, H, L, Dh).

    Scores are formed explicitly and the softmax runs in float32 for half-precision inputs (float64 stays float64).
    With an additive bias that needs a gradient (the relation bias) PyTorch's CPU
    ``scaled_dot_product_attention`` takes its generic path, which also scans for fully
    masked rows; this form is about 2x faster in bfloat16 at L = 81 (``tabes bench train``).
    The bias is clamped at -1e4, so a row whose keys are all masked averages V instead of
    giving NaN (such rows are padding and are never read).
    """
    if _KERNELS.get().dense == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    # a bias of -inf (padding keys) is clamped to -1e4 before it is added: on the bias, which is usually
    # broadcast over the batch, rather than on the (B, H, L, L) scores, a pass and its backward fewer
    s = _scores(q, k, None if bias is None else bias.clamp_min(-1e4))  # (B, H, L, L)
    p = torch.softmax(s, dim=-1, dtype=torch.float32 if s.dtype in (torch.float16, torch.bfloat16) else s.dtype)
    return p.to(v.dtype) @ v


def _fused_backward_op():
    fused = _KERNELS.get().fused_backward
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None) if fused else None


class _ActiveQueryAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, active: Tensor, grad_rows: Tensor | None, kv_approx: bool
    ) -> Tensor:
        B, H, L, _ = q.shape
        if B * H * L * k.shape[2] <= _KERNELS.get().keep_probs_max:
            p, lse = torch.softmax(_scores(q, k, bias), dim=-1, dtype=_stats_dtype(q.dtype)), None  # (B, H, L, L), kept
            out = (p @ v.to(p.dtype)).to(v.dtype)
        else:
            (out, lse), p = attention_with_lse(q, k, v, bias), None
        ctx.save_for_backward(q, k, v, out, lse, p, bias, active, grad_rows)
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.kv_approx = kv_approx
        return out

    @staticmethod
    def backward(ctx, d_out: Tensor):
        q, k, v, out, lse_raw, p, bias, active, grad_rows = ctx.saved_tensors
        need = ctx.needs_input_grad[:4]
        dtype = q.dtype
        # half-precision inputs: the whole backward (scores, P, the row sums) runs in float32
        q, k, v, out, d_out = (t.to(_stats_dtype(dtype)) for t in (q, k, v, out, d_out))
        bias = None if bias is None else bias.to(q.dtype)
        lse = None if lse_raw is None else lse_raw.to(q.dtype)[..., None]  # (B, H, L, 1)
        few_rows = grad_rows is not None and 2 * int(grad_rows.sum(-1).max()) <= q.shape[2]
        if few_rows and not ctx.kv_approx and not need[3]:
            dq, dk, dv = _backward_few_rows(q, k, v, out, lse, p, bias, active, grad_rows, d_out)
            return _cast(dq, dtype), _cast(dk, dtype), _cast(dv, dtype), None, None, None, None
        fused = _fused_backward_op()
        # dO zero outside A (the last layer of a BoE backward), or the kv approximation, which
        # uses the active outputs only: the active rows alone give every gradient
        rows_suffice = ctx.kv_approx or not (d_out.abs().amax(dim=(1, 3)).ne(0) & ~active).any()
        if p is None and fused is not None and q.device.type == "cpu" and rows_suffice and not need[3]:
            dq, dk, dv = _backward_fused_rows(fused, q, k, v, out, lse_raw.to(q.dtype), bias, active, d_out)
            dbias = None
        else:
            dq, dk, dv, dbias = _backward_active_rows(q, k, v, out, lse, p, bias, active, d_out, need, rows_suffice, ctx.bias_shape)
        if ctx.kv_approx:  # only active keys and values receive gradient
            col = _per_row(active, q.dtype)
            dk, dv = (None if t is None else t * col for t in (dk, dv))
        if grad_rows is not None:  # rows outside grad_rows are constants
            keep = _per_row(grad_rows, q.dtype)
            dq, dk, dv = (None if t is None else t * keep for t in (dq, dk, dv))
        return _cast(dq, dtype), _cast(dk, dtype), _cast(dv, dtype), _cast(dbias, dtype), None, None, None


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of softmax statistics and of the backward's arithmetic: float32 for half inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _chunk_rows(row_len: int, batch: int) -> int:
    """Rows per chunk so that a chunk of score rows, (batch, rows, row_len), is about 4M
    elements: small enough to stay in cache between the products that use it."""
    return max(16, (1 << 22) // max(batch * row_len, 1))


def _probs(q_rows: Tensor, k: Tensor, bias_rows: Tensor | None, lse_rows: Tensor) -> Tensor:
    """Recomputed attention probabilities of some query rows: exp(q K^T / sqrt(d) + bias - lse)."""
    return _scores(q_rows, k, bias_rows).sub_(lse_rows).exp_()


def _bias_rows(bias: Tensor | None, sl: slice) -> Tensor | None:
    """The rows ``sl`` of a bias broadcastable to (B, H, L, L) (a key-padding bias has one row)."""
    return bias if bias is None or bias.shape[2] == 1 else bias[:, :, sl]


def _backward_active_rows(q, k, v, out, lse, p_kept, bias, active, d_out, need, rows_suffice: bool, bias_shape):
    """The general backward: dS on the active rows, dV from the rows that need it (only the
    active ones when ``rows_suffice``). Shapes as in :func:`attention`; lse (B, H, L, 1) or, for
    small problems, the forward's P (B, H, L, L) in ``p_kept``. Returns dq, dk, dv, dbias (None
    where not needed)."""
    B, H, L, Dh = q.shape
    scale = 1.0 / math.sqrt(Dh)
    need_q, need_k, need_v, need_bias = need
    idx, valid = active_index(active)  # (B, A)
    # Gather the active rows when they are at most half of L; above that the gather and
    # scatter cost more than they save, and the same values come from masking the rows.
    gathered = 2 * idx.shape[1] <= L
    if gathered:
        do_a = gather_rows(d_out, idx) * _per_row(valid, q.dtype)  # (B, H, A, Dh), zero on padding
        q_a, o_a = gather_rows(q, idx), gather_rows(out, idx)
        lse_a = None if lse is None else gather_rows(lse, idx)
        bias_a = None if bias is None else gather_rows(bias, idx)
    else:
        do_a = d_out * _per_row(active, q.dtype)  # (B, H, L, Dh), zero on inactive rows
        q_a, o_a, lse_a, bias_a = q, out, lse, bias
    A = q_a.shape[2]
    step = _chunk_rows(L, B * H)
    # Values get gradient through every row's output, dV = P^T dO. When the active rows
    # suffice they give the whole sum; otherwise every row's probabilities are needed for it
    # (the one L x L x d product), here or, when every row is visited anyway, in the loop below.
    dv = torch.zeros_like(v) if need_v else None
    if need_v and not rows_suffice and gathered and p_kept is not None:
        dv = p_kept.transpose(-1, -2) @ d_out
    elif need_v and not rows_suffice and gathered:
        for s in range(0, L, step):
            sl = slice(s, s + step)
            dv += _probs(q[:, :, sl], k, _bias_rows(bias, sl), lse[:, :, sl]).transpose(-1, -2) @ d_out[:, :, sl]
    d_a = (do_a * o_a).sum(-1, keepdim=True)  # rowsum(P * dP) = rowsum(dO * O): no (A, L) product
    dq_a = torch.empty_like(q_a) if need_q else None
    dk = torch.zeros_like(k) if need_k else None
    ds_all = q.new_empty(B, H, A, L) if need_bias else None
    p_a = None if p_kept is None else gather_rows(p_kept, idx) if gathered else p_kept  # (B, H, A, L)
    for s in range(0, A, step):
        sl = slice(s, s + step)
        p = p_a[:, :, sl] if p_a is not None else _probs(q_a[:, :, sl], k, _bias_rows(bias_a, sl), lse_a[:, :, sl])  # (B, H, a, L)
        if need_v and (rows_suffice or not gathered):
            dv += p.transpose(-1, -2) @ (do_a if rows_suffice else d_out)[:, :, sl]
        ds = (do_a[:, :, sl] @ v.transpose(-1, -2)).sub_(d_a[:, :, sl]).mul_(p)  # dS = P * (dP - rowsum(dO * O))
        del p
        if need_q:
            dq_a[:, :, sl] = (ds @ k) * scale
        if need_k:
            dk += (ds.transpose(-1, -2) @ q_a[:, :, sl]) * scale
        if need_bias:
            ds_all[:, :, sl] = ds
    dq = dbias = None
    if need_q:
        dq = _scatter_rows(dq_a, idx, L) if gathered else dq_a
    if need_bias:
        dbias = _reduce_to(_scatter_rows(ds_all, idx, L) if gathered else ds_all, bias_shape)
    return dq, dk, dv, dbias


def _backward_fused_rows(fused, q, k, v, out, lse, bias, active, d_out):
    """PyTorch's fused attention backward on the active query rows only (gathered, padded rows
    with zero dO): dQ_A, dK = dS_A^T Q_A and dV = P_A^T dO_A, which is the whole of dV when dO
    is zero outside A. lse (B, H, L) as the forward returned it."""
    L = q.shape[2]
    idx, valid = active_index(active)  # (B, A)
    rows = _per_row(valid, q.dtype)
    lse_a = gather_rows(lse[..., None], idx)[..., 0]
    bias_a = None if bias is None else gather_rows(bias, idx).to(q.dtype)
    dq_a, dk, dv = fused(
        gather_rows(d_out, idx) * rows, gather_rows(q, idx), k, v, gather_rows(out, idx), lse_a, 0.0, False, attn_mask=bias_a
    )
    return _scatter_rows(dq_a * rows, idx, L), dk, dv


def _backward_few_rows(q, k, v, out, lse, p_kept, bias, active, grad_rows, d_out):
    """The backward when only the few rows G = ``grad_rows`` of q, k, v need a gradient (the
    first layer of a BoE backward: G = the candidates). Everything is O(L |G| d):

    - dQ_R for R = A n G: full score rows of R only;
    - dV_G = P[:, G]^T dO and dK_G = dS[A, G]^T Q_A: score *columns* G only.
    """
    B, H, L, Dh = q.shape
    scale = 1.0 / math.sqrt(Dh)
    g_idx, g_valid = active_index(grad_rows)  # (B, G)
    g_col = g_valid[:, None, None, :].to(q.dtype)  # (B, 1, 1, G)
    # query rows: R = active and needing a gradient
    r_idx, r_valid = active_index(active & grad_rows)  # (B, R)
    do_r = gather_rows(d_out, r_idx) * _per_row(r_valid, q.dtype)  # (B, H, R, Dh)
    if p_kept is not None:
        p_r = gather_rows(p_kept, r_idx)
    else:
        p_r = _probs(gather_rows(q, r_idx), k, None if bias is None else gather_rows(bias, r_idx), gather_rows(lse, r_idx))
    ds_r = (do_r @ v.transpose(-1, -2)).sub_((do_r * gather_rows(out, r_idx)).sum(-1, keepdim=True)).mul_(p_r)
    dq = _scatter_rows((ds_r @ k) * scale, r_idx, L)
    # key/value columns G, every query row
    k_g, v_g = gather_rows(k, g_idx), gather_rows(v, g_idx)  # (B, H, G, Dh)
    if p_kept is not None:
        p_g = gather_cols(p_kept, g_idx) * g_col  # (B, H, L, G)
    else:
        p_g = _probs(q, k_g, None if bias is None else gather_cols(bias, g_idx), lse) * g_col
    dv = _scatter_rows(p_g.transpose(-1, -2) @ d_out, g_idx, L)
    d_all = (d_out * out).sum(-1, keepdim=True)  # (B, H, L, 1)
    ds_g = (d_out @ v_g.transpose(-1, -2)).sub_(d_all).mul_(p_g) * _per_row(active, q.dtype)  # dS[:, G], active rows
    dk = _scatter_rows((ds_g.transpose(-1, -2) @ q) * scale, g_idx, L)
    return dq, dk, dv


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    active: Tensor | None = None,
    mode: str = "exact",
    grad_rows: Tensor | None = None,
) -> Tensor:
    """Scaled dot-product attention with an optional ActiveQueryAttention backward.

    Args:
        q, k, v: (B, H, L, Dh).
        bias: additive attention bias broadcastable to (B, H, L, L) (relation bias, padding
            as -inf), or None.
        active: (B, L) bool active query rows, or None for ordinary dense attention.
        mode: ``"exact"``, ``"reference"`` or ``"kv"`` (see the module docstring).
        grad_rows: optional (B, L) bool: the rows of q, k and v whose gradient the caller
            needs. The other rows are treated as constants (zero gradient), which lets the
            exact backward skip them (the first layer of a BoE backward needs only the
            candidates' rows).

    Returns:
        (B, H, L, Dh) attention output; equal to dense attention in value in every mode.
    """
    B, _, L, _ = q.shape
    for name, mask in (("active", active), ("grad_rows", grad_rows)):
        if mask is not None and (mask.shape != (B, L) or mask.dtype != torch.bool):
            raise ValueError(f"{name} must be a (B, L) = {(B, L)} bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    if mode not in AQA_MODES:
        raise ValueError(f"AQA mode must be one of {AQA_MODES}, got {mode!r}")
    if not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if _KERNELS.get().free_backward:
        return _AttentionWithFreeBackward.apply(q, k, v, bias)
    if active is None:
        q, k, v = (_constant_outside(t, grad_rows) for t in (q, k, v))
        return dense_attention(q, k, v, bias)
    if mode == "reference":
        return attention_reference(q, k, v, bias=bias, active=active, grad_rows=grad_rows)
    return _ActiveQueryAttention.apply(q, k, v, bias, active, grad_rows, mode == "kv")


def attention_to_keys(
    q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, active: Tensor | None = None, mode: str = "exact"
) -> Tensor:
    """Attention of some query rows to a longer list of keys (the block of a KV-cached step).

    The cache's keys and values come in as constants; the block's own rows (the last Lq keys)
    carry gradient. With ``active``, ``mode`` applies the definitions above to a rectangular
    score matrix: ``exact`` (and ``reference``) make the scores of inactive query rows
    constants; ``kv`` also the inactive rows' own keys, values and outputs. The backward of a
    block is O(Lq Lk d), so there is nothing to gain from gathering rows.

    Shapes: q (B, H, Lq, Dh), k and v (B, H, Lk, Dh), bias broadcastable to (B, H, Lq, Lk),
    active (B, Lq) bool -> (B, H, Lq, Dh).
    """
    B, _, Lq, _ = q.shape
    if active is not None and (active.shape != (B, Lq) or active.dtype != torch.bool):
        raise ValueError(f"active must be a (B, Lq) = {(B, Lq)} bool tensor, got {tuple(active.shape)} {active.dtype}")
    if mode not in AQA_MODES:
        raise ValueError(f"AQA mode must be one of {AQA_MODES}, got {mode!r}")
    if not torch.is_grad_enabled() or not (q.requires_grad or k.requires_grad or v.requires_grad):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
    rows = None if active is None else active[:, None, :, None]  # (B, 1, Lq, 1)
    if rows is not None and mode == "kv":  # the block's inactive keys and values are constants too
        own = torch.cat([rows.new_zeros(B, 1, k.shape[2] - Lq, 1), rows], dim=2)  # (B, 1, Lk, 1): cached keys are constants anyway
        k, v = torch.where(own, k, k.detach()), torch.where(own, v, v.detach())
    s = _scores(q, k, bias)  # (B, H, Lq, Lk)
    if rows is not None:
        s = torch.where(rows, s, s.detach())
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1)  # float32 at least, float64 kept
    out = (p.to(v.dtype) @ v).to(q.dtype)
    return torch.where(rows, out, out.detach()) if rows is not None and mode == "kv" else out
