"""Tiny random models shared by the conformance modules."""

from __future__ import annotations

import torch

from tabes.models.hf import HFDenoiser

V = 40  # vocabulary, the mask included
MASK = 39
PAD = 0


def llada(dtype: torch.dtype, head_scale: float, seed: int = 0):
    """A random model with LLaDA's module layout (``tests/llada_double.py``), its output head scaled by
    ``head_scale`` (x40 makes most tokens near-certain, as a trained LLaDA's are). Returns
    ``(hf_model, tabes_denoiser)`` sharing the same weights."""
    from tests.llada_double import LLaDAModelLM, llada_config

    torch.manual_seed(seed)
    hf = LLaDAModelLM(llada_config(vocab_size=V, n_kv_heads=2)).to(dtype).eval()
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(head_scale)
    return hf, HFDenoiser(hf, mask_id=MASK)


def prompts(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random prompts of different lengths (4 to 9 tokens), left-padded with ``PAD``:
    ((B, P) ids, (B, P) bool attention mask)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [9 - 3 * (b % 2) - (b % 3) for b in range(batch)] if batch > 1 else [7]
    P = max(lengths)
    ids = torch.full((batch, P), PAD, dtype=torch.long)
    am = torch.zeros(batch, P, dtype=torch.bool)
    for b, n in enumerate(lengths):
        ids[b, P - n :] = torch.randint(1, MASK, (n,), generator=g)
        am[b, P - n :] = True
    return ids, am


def canvas(prompt: torch.Tensor, am: torch.Tensor, gen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt followed by ``gen`` masks, and its attention mask: ((B, P + gen), (B, P + gen))."""
    B = prompt.shape[0]
    ids = torch.cat([prompt, torch.full((B, gen), MASK, dtype=torch.long)], 1)
    return ids, torch.cat([am, torch.ones(B, gen, dtype=torch.bool)], 1)
