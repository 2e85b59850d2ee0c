"""LLaDA's layout (remote code ``LLaDAModelLM``): its mask id, and the hooks that route its
attention through ``tabes_aqa``.

LLaDA's remote code calls attention inside its own blocks (``model.model.transformer.blocks``),
past transformers' registry. For that layout the adapter replaces each block's
``_scaled_dot_product_attention`` with the ``tabes_aqa`` function and hooks its ``rotary_emb``
(for the KV cache's query positions); the model's code is not copied or edited.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch import Tensor

from tabes.models.attention import KV, tabes_aqa_attention

LLADA_MASK_ID = 126336


def llada_blocks(model) -> list | None:
    """The blocks of LLaDA's remote-code layout (``model.model.transformer.blocks``, each with a
    ``rotary_emb`` module and a ``_scaled_dot_product_attention`` method), or None."""
    transformer = getattr(getattr(model, "model", None), "transformer", None)
    if not isinstance(transformer, torch.nn.ModuleDict) or "blocks" not in transformer:
        return None
    blocks = list(transformer["blocks"])
    fits = all(
        callable(getattr(b, "_scaled_dot_product_attention", None)) and isinstance(getattr(b, "rotary_emb", None), torch.nn.Module)
        for b in blocks
    )
    return blocks if blocks and fits else None


def _llada_attention(
    block, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False
):
    """Stands in for a LLaDA block's ``_scaled_dot_product_attention``: q (B, H, L, Dh), k and v
    (B, H_kv, L, Dh) -> (B, H, L, Dh), through ``tabes_aqa`` (AQA, the KV cache)."""
    groups = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1])
    out, _ = tabes_aqa_attention(groups, q, k, v, attn_mask)
    return out.transpose(1, 2)


def _llada_rope(module, args, output):
    """Forward hook on a LLaDA block's ``rotary_emb``: LLaDA numbers the rotary positions from 0
    over the keys it is given, so in a step through the KV cache it re-rotates q and k at the
    query positions' true places, with the module's own tables and rotation."""
    call = KV.get()
    if call is None or call.kv is None or call.positions is None:
        return None
    q, k = args[0], args[1]
    pos = call.positions.to(q.device)
    sin, cos = module.get_rotary_embedding(int(pos.max()) + 1, q.device)
    sin, cos = sin[:, :, pos].float(), cos[:, :, pos].float()
    return module.apply_rotary_pos_emb(sin, cos, q.float()).type_as(q), module.apply_rotary_pos_emb(sin, cos, k.float()).type_as(k)


def route_llada(blocks: list) -> None:
    """Send each LLaDA block's attention through ``tabes_aqa`` and re-place its rotary positions
    in a cached step (the hooks above)."""
    for block in blocks:
        block._scaled_dot_product_attention = functools.partial(_llada_attention, block)
        block.rotary_emb.register_forward_hook(_llada_rope)


def default_mask_id(path, model_type, vocab: int) -> int:
    """LLaDA's mask id, checked against the checkpoint's input vocabulary of ``vocab`` tokens."""
    if vocab <= LLADA_MASK_ID:
        raise ValueError(
            f"{path}: kind 'llada' does not fit this checkpoint ({model_type}): LLaDA's mask id {LLADA_MASK_ID} "
            f"is outside its vocabulary of {vocab} tokens"
        )
    return LLADA_MASK_ID
