"""ActiveQueryAttention (AQA): dense forward, backward through active query rows only."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

AQA_MODES = ("exact", "reference")


def attention(q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, active: Tensor | None = None, mode: str = "exact") -> Tensor:
    """Scaled dot-product attention, (B, H, L, Dh) -> (B, H, L, Dh)."""
    if active is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    a = active[:, None, :, None]
    q = q.where(a, q.detach())
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
