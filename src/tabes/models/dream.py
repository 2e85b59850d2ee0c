"""Dream's layout: an MDM initialised from an autoregressive model (Qwen2-style), whose
prediction for position i sits at i - 1.

The adapter shifts the logits right by one position inside ``logits_from_embeds``, so the
gradients with respect to the input embeddings (BoE) are mapped through the same shift.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOGIT_SHIFT = 1  # the offset of Dream's predictions


def shift_logits(logits: Tensor) -> Tensor:
    """(B, L, V) logits as the model emits them -> (B, L, V) with position i's prediction at i;
    position 0, which no position predicts, repeats its own."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
