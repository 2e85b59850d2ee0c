"""tabes against LLaDA's own decoder, token for token.

The reference is ``generate()`` of ``generate.py`` in ML-GSAI/LLaDA (commit
41760b91240e934e7612b08d45a0642d680c098a), written below as plainly as the file has it, for
``remasking='low_confidence'``, ``cfg_scale=0`` and ``temperature=0``:

- blocks of ``block_length`` start right after the prompt; ``steps // num_blocks`` steps each
  (both must divide);
- per block, ``get_num_transfer_tokens``: ``base = masks // steps`` tokens a step, one more in
  the first ``masks % steps`` steps;
- per step, one forward on the whole sequence; ``x0 = argmax(logits)``; the confidence is
  ``softmax(logits.to(float64))`` at ``x0``; positions after the block and unmasked positions
  get ``-inf``; ``torch.topk(confidence[j], k)`` per row picks the positions to commit.

Later versions of the file pass the prompt's ``attention_mask`` (extended with ones over the
generated positions) to the model; so does the reference here, for the padded batches.

One documented difference (``docs/llm.md``): tabes never proposes the mask token, so the
reference's logits get ``-inf`` at the mask id (``MASK_EXCLUDED``); the file keeps it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tabes
from tests.conformance._models import MASK, canvas, llada, prompts

MASK_EXCLUDED = True


def get_num_transfer_tokens(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, : remainder[i]] += 1
    return num_transfer_tokens


@torch.no_grad()
def llada_generate(model, prompt, attention_mask, steps, gen_length, block_length, mask_id=MASK):
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt.clone()
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones((prompt.shape[0], gen_length), dtype=attention_mask.dtype)], dim=-1)
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = x[:, prompt.shape[1] + num_block * block_length : prompt.shape[1] + (num_block + 1) * block_length] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x, attention_mask=attention_mask).logits
            if MASK_EXCLUDED:
                logits[:, :, mask_id] = -torch.inf
            x0 = torch.argmax(logits, dim=-1)
            p = F.softmax(logits.to(torch.float64), dim=-1)
            x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length :] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j, i])
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x


# (gen_length, block_length, steps): steps = gen and gen / 2, one block and several
GRID = [(32, 8, 32), (32, 8, 16), (64, 16, 32), (32, 32, 16), (64, 8, 64)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("head_scale", [1.0, 40.0, 400.0])  # x400: probabilities of exactly 1.0 even in float64
@pytest.mark.parametrize("batch", [1, 3])
def test_same_tokens_as_llada_generate(dtype, head_scale, batch):
    """Every setting of the grid, token for token; exact ties fall where ``torch.topk`` puts them."""
    hf, model = llada(dtype, head_scale)
    prompt, am = prompts(batch)
    for gen, block, steps in GRID:
        ref = llada_generate(hf, prompt, am, steps, gen, block)
        ids, full_am = canvas(prompt, am, gen)
        out = tabes.generate(model, ids, sampler="confidence", steps=steps, block_length=block, attention_mask=full_am)
        assert torch.equal(out.sequences, ref), f"gen {gen}, block {block}, steps {steps}"
        assert int(out.forwards.max()) == steps  # one forward a step, as the reference


def test_near_certain_tokens_are_ordered_as_the_reference_orders_them():
    """The hard case that float32 confidences got wrong: with a x40 head many probabilities are
    above 1 - 6e-8, which float32 rounds to 1.0, and the tie then went to the lowest position."""
    hf, model = llada(torch.float64, 40.0)
    prompt, am = prompts(1)
    ids, _ = canvas(prompt, am, 32)
    g = torch.Generator().manual_seed(1)
    half = (torch.rand(ids.shape, generator=g) < 0.5) & (ids == MASK)  # a state halfway through a decode
    ids[half] = torch.randint(1, MASK, ids.shape, generator=g)[half]
    pred = tabes.protocol.predict(model, ids, where=ids == MASK)
    conf = pred.confidence[ids == MASK]
    saturated = conf.float() == 1.0
    assert saturated.sum() >= 2  # in float32 these would tie
    assert conf.dtype == torch.float64 and conf[saturated].unique().numel() >= 2  # in float64 they still order
