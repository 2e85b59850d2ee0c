"""The pieces the transformers adapters share: the ``tabes_aqa`` attention function that
transformers' attention registry (and LLaDA's blocks) call, the per-call context it reads (the
AQA active rows, the block KV cache), row-skipping linears for BoE's backward, and left-padded
position ids.

ActiveQueryAttention reaches a transformers model through its attention registry: the adapter
registers ``tabes_aqa`` with ``AttentionInterface`` and switches the model to it. The active
mask of a call travels in a context variable, so no model signature changes. The block KV
cache (:mod:`tabes.cache`) uses the same attention function: a context variable tells it to
keep the context's keys and values (the refresh forward) or to put them before the block's own
(a cached step).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tabes.cache import LayerKV
from tabes.ops.aqa import attention, attention_to_keys
from tabes.ops.rows import linear_rows

# (active (B, L) bool, mode) of the current call, read by the registered attention function
ACTIVE: contextvars.ContextVar[tuple[Tensor, str, Tensor | None, list] | None] = contextvars.ContextVar("tabes_active", default=None)
CALLED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("tabes_called", default=None)


@dataclass
class CacheCall:
    """What the registered attention does with a KV cache in the current forward.

    Filling (``kv`` None): keep each layer's keys and values at ``context`` (Lc,) long.
    Using: put layer i's cached keys and values before the call's own; ``key_bias`` (B, 1, 1,
    Lc + Lq) or None replaces the model's mask, ``active`` (B, Lq) are the AQA rows. Without
    AQA rows, ``order`` (Lc + Lq,) long, when given, puts the keys in position order, so that a
    cached step sums over the keys in the order the full forward does. Layers are counted in
    call order (one attention call per layer and forward).
    """

    context: Tensor | None = None
    kv: LayerKV | None = None
    positions: Tensor | None = None  # (Lq,) the query positions (LLaDA's RoPE hook reads them)
    key_bias: Tensor | None = None
    order: Tensor | None = None
    split: int | None = None  # the cached keys before the query block, when the block is one run of positions
    active: Tensor | None = None
    mode: str = "exact"  # the AQA mode of ``active``
    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    layer: int = 0


KV: contextvars.ContextVar[CacheCall | None] = contextvars.ContextVar("tabes_kv", default=None)


def tabes_aqa_attention(
    module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
):
    """The ``tabes_aqa`` entry of transformers' attention registry.

    Shapes: query (B, H, L, Dh), key/value (B, H_kv, L, Dh), attention_mask additive or bool,
    broadcastable to (B, H, L, L). Returns ((B, L, H, Dh), None) like the built-in functions.
    Without an active mask in the context it is ordinary attention.
    """
    cache = KV.get()
    if cache is not None and cache.kv is None:  # filling: keep the context's keys and values
        cache.keys.append(key[:, :, cache.context].detach())
        cache.values.append(value[:, :, cache.context].detach())
    elif cache is not None:  # a step through the cache: the context's keys first, then the call's own
        i, cache.layer = cache.layer, cache.layer + 1
        ck, cv = cache.kv.keys[i], cache.kv.values[i]
        if cache.split is not None:  # in position order at once: the keys before the block, the block's, the rest
            a = cache.split
            key, value = torch.cat([ck[:, :, :a], key, ck[:, :, a:]], dim=2), torch.cat([cv[:, :, :a], value, cv[:, :, a:]], dim=2)
        else:
            key, value = torch.cat([ck, key], dim=2), torch.cat([cv, value], dim=2)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    L = key.shape[-2]
    bias = None
    if attention_mask is not None:
        bias = attention_mask[..., :L]
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
        bias = bias.to(query.dtype)
    if scaling is not None:  # our kernel scales by 1/sqrt(Dh); fold any other scale into q
        query = query * (scaling * math.sqrt(query.shape[-1]))
    if cache is not None and cache.kv is not None:
        key_bias = None if cache.key_bias is None else cache.key_bias.to(query.dtype)
        if cache.active is None and cache.order is not None:  # keys in position order, as the full forward has them
            key, value = key[:, :, cache.order], value[:, :, cache.order]
            key_bias = None if key_bias is None else key_bias[..., cache.order]
        out = attention_to_keys(query, key, value, bias=key_bias, active=cache.active, mode=cache.mode)
        return out.transpose(1, 2).contiguous(), None
    state = ACTIVE.get()
    called = CALLED.get()
    if called is not None:
        called.append(1)
    if key.shape[-2] != query.shape[-2]:  # a model that reads its own cache first (DiffusionGemma's decoder): rectangular
        active, mode = (None, "exact") if state is None else (state[0], state[1])
        return attention_to_keys(query, key, value, bias=bias, active=active, mode=mode).transpose(1, 2).contiguous(), None
    if state is None:
        out = attention(query, key, value, bias=bias)
    else:
        active, mode, grad_rows, calls = state
        first = not calls  # the first attention call of the forward is the first layer
        calls.append(1)
        out = attention(query, key, value, bias=bias, active=active, mode=mode, grad_rows=grad_rows if first else None)
    return out.transpose(1, 2).contiguous(), None


def _linear_rows_forward(lin: torch.nn.Linear, x: Tensor) -> Tensor:
    return linear_rows(x, lin.weight, lin.bias)


@contextlib.contextmanager
def row_skipping(linears: list[torch.nn.Linear]):
    """Inside the block, each ``torch.nn.Linear`` (exactly that class: quantized subclasses keep
    their own forward) runs as :func:`tabes.ops.rows.linear_rows`: same values, a backward that
    computes the input gradient only and skips rows whose upstream gradient is zero."""
    for lin in linears:
        lin.forward = functools.partial(_linear_rows_forward, lin)
    try:
        yield
    finally:
        for lin in linears:
            del lin.forward  # back to the class's forward


def padded_positions(attention_mask: Tensor) -> Tensor:
    """(B, L) position ids counted from each row's first real token (left padding); positions after
    it keep counting, hidden or not (a block-aligned tail, as LLaDA 2's pipeline numbers it)."""
    L = attention_mask.shape[-1]
    first = attention_mask.long().argmax(-1, keepdim=True)  # (B, 1); 0 for a row with no real token
    return (torch.arange(L, device=attention_mask.device) - first).clamp_min(0)


def register_attention() -> None:
    """Register ``tabes_aqa`` with transformers' ``AttentionInterface`` (idempotent), and give it
    the masks that ``sdpa`` gets: without a mask function of its own, transformers' mask
    builders hand a custom attention no mask at all, and padding would be attended to."""
    from transformers import AttentionInterface

    AttentionInterface.register("tabes_aqa", tabes_aqa_attention)
    try:
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # transformers before the mask registry: masks are built per model, not by name
        return
    AttentionMaskInterface.register("tabes_aqa", sdpa_mask)
