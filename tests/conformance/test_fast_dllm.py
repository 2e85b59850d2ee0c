"""tabes' block KV cache against Fast-dLLM's cached decoders, token for token and forward for forward.

The references are ``generate``, ``generate_with_prefix_cache`` and
``generate_with_dual_cache`` of ``llada/generate.py`` in NVlabs/Fast-dLLM (commit
f6b35ec3f1b16e1b3d3357938046559ae2d350fa), written below as plainly as the file has them, with
``get_transfer_index`` for ``remasking='low_confidence'``, ``temperature=0``, no threshold
and no factor:

- blocks start right after the prompt, ``steps // num_blocks`` steps each, and the same
  ``get_num_transfer_tokens`` schedule as LLaDA;
- ``generate``: a ``while True`` loop per block, one forward of the whole sequence a step,
  until the block has no mask;
- prefix cache: the block's first step *is* the refresh forward (``model(x, use_cache=True)``,
  its logits pick the first tokens); the cache is cut to the positions before the block; each
  later step runs ``x[:, start:]`` (block and suffix) against it;
- dual cache: the same refresh and first step; each later step runs ``x[:, start:end]``
  against the keys and values of every other position from the refresh;
- ``get_transfer_index``: ``x0 = argmax``, confidence ``softmax(logits.to(float64))`` at
  ``x0``, ``-inf`` off the masked positions of the block, ``torch.topk(confidence[j], k)``.

Fast-dLLM runs its own copy of LLaDA's model with a ``past_key_values`` argument; here that
cached forward is written out on the LLaDA stand-in's own modules (``_Fast``): keys and values
of the context positions come from the refresh, those of the query positions are fresh, and
RoPE rotates every position at its true place, as the full forward does.

As for LLaDA (``test_llada_generate``), the mask token's logit is set to -inf in the
reference: tabes never proposes ``[MASK]`` (``docs/llm.md``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tabes
from tests.conformance._models import MASK, canvas, llada, prompts
from tests.conformance.test_llada_generate import GRID, get_num_transfer_tokens


class _Fast:
    """The LLaDA stand-in's forward, with a KV cache as Fast-dLLM's model has one."""

    def __init__(self, hf) -> None:
        self.t = hf.model.transformer

    def _layer(self, blk, h, pos, kv_pos, past):
        B, T, C = h.shape
        nh, nkv = blk.config.n_heads, blk.config.n_kv_heads
        hs = C // nh
        a = blk.attn_norm(h)
        q = blk.q_proj(a).view(B, T, nh, hs).transpose(1, 2)
        k = blk.k_proj(a).view(B, T, nkv, hs).transpose(1, 2)
        v = blk.v_proj(a).view(B, T, nkv, hs).transpose(1, 2)
        present = (k, v)
        if past is not None and past[0].shape[2] == pos[0]:  # a prefix cache: the cached positions come first
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        elif past is not None:  # every position cached: the query positions' keys and values are fresh
            k_all, v_all = past[0].clone(), past[1].clone()
            k_all[:, :, pos], v_all[:, :, pos] = k, v
            k, v = k_all, v_all
        sin, cos = blk.rotary_emb.get_rotary_embedding(int(kv_pos.max()) + 1, h.device)
        rq = blk.rotary_emb.apply_rotary_pos_emb(sin[:, :, pos].float(), cos[:, :, pos].float(), q.float()).type_as(q)
        rk = blk.rotary_emb.apply_rotary_pos_emb(sin[:, :, kv_pos].float(), cos[:, :, kv_pos].float(), k.float()).type_as(k)
        att = type(blk)._scaled_dot_product_attention(blk, rq, rk, v)  # the class's own (tabes may route the instance's)
        h = h + blk.attn_out(att.transpose(1, 2).contiguous().view(B, T, C))
        f = blk.ff_norm(h)
        return h + blk.ff_out(F.silu(blk.ff_proj(f)) * blk.up_proj(f)), present

    def __call__(self, x, lo=0, hi=None, past_key_values=None):
        """Logits of positions lo..hi of x (B, L) and the layers' (keys, values) of those positions.
        ``past_key_values``: per layer the cached (keys, values) of positions 0..lo (prefix) or of
        every position (dual); the keys are then all L positions."""
        L = x.shape[1]
        hi = L if hi is None else hi
        pos = torch.arange(lo, hi)
        kv_pos = torch.arange(L)
        h = self.t.wte(x[:, lo:hi])
        presents = []
        for i, blk in enumerate(self.t.blocks):
            h, present = self._layer(blk, h, pos, kv_pos, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        return self.t.ff_out(self.t.ln_f(h)), presents


def get_transfer_index(logits, mask_index, x, num_transfer_tokens):
    logits = logits.clone()
    logits[:, :, MASK] = -torch.inf  # tabes never proposes [MASK] (module docstring)
    x0 = torch.argmax(logits, dim=-1)
    p = F.softmax(logits.to(torch.float64), dim=-1)
    x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -np.inf)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j])
        transfer_index[j, select_index] = True
    return x0, transfer_index


@torch.no_grad()
def fast_generate(model, prompt, steps, gen_length, block_length, cache, mask_id=MASK):
    """``generate`` (cache None), ``generate_with_prefix_cache`` or ``generate_with_dual_cache``: (x, nfe)."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    nfe = 0
    for num_block in range(num_blocks):
        start = prompt.shape[1] + num_block * block_length
        end = start + block_length
        block_mask_index = x[:, start:end] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps_per_block)
        i = 0
        if cache is not None:  # the refresh forward is the block's first step
            logits, past_key_values = model(x)
            mask_index = x == mask_id
            mask_index[:, end:] = 0
            x0, transfer_index = get_transfer_index(logits, mask_index, x, num_transfer_tokens[:, 0])
            x[transfer_index] = x0[transfer_index]
            nfe += 1
            i = 1
        while True:
            if (x[:, start:end] == mask_id).sum() == 0:
                break
            nfe += 1
            if cache is None:
                mask_index = x == mask_id
                logits, _ = model(x)
                mask_index[:, end:] = 0
                x0, transfer_index = get_transfer_index(logits, mask_index, x, num_transfer_tokens[:, i])
                x[transfer_index] = x0[transfer_index]
            elif cache == "prefix":  # keys: the cached prefix and the fresh block and suffix
                mask_index = x[:, start:] == mask_id
                mask_index[:, block_length:] = 0
                logits, _ = model(x, start, None, [(k[:, :, :start], v[:, :, :start]) for k, v in past_key_values])
                x0, transfer_index = get_transfer_index(logits, mask_index, x[:, start:], num_transfer_tokens[:, i])
                x[:, start:][transfer_index] = x0[transfer_index]
            else:  # dual: every position's cached keys, the block's replaced by fresh ones
                mask_index = x[:, start:end] == mask_id
                logits, _ = model(x, start, end, past_key_values)
                x0, transfer_index = get_transfer_index(logits, mask_index, x[:, start:end], num_transfer_tokens[:, i])
                x[:, start:end][transfer_index] = x0[transfer_index]
            i += 1
    return x, nfe


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("head_scale", [1.0, 40.0, 400.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_same_tokens_and_forwards_as_fast_dllm(cache, dtype, head_scale, batch):
    hf, model = llada(dtype, head_scale)
    fast = _Fast(hf)
    prompt, am = prompts(batch)
    for gen, block, steps in GRID:
        ref, nfe = fast_generate(fast, prompt, steps, gen, block, None if cache == "none" else cache)
        ids, _ = canvas(prompt, am, gen)
        # Fast-dLLM passes no attention mask: the model attends to the padding (so does the stand-in)
        out = tabes.generate(model, ids, sampler="confidence", steps=steps, block_length=block, cache=cache)
        assert torch.equal(out.sequences, ref), f"{cache}: gen {gen}, block {block}, steps {steps}"
        assert int(out.forwards.max()) == nfe, f"{cache}: {int(out.forwards.max())} forwards against Fast-dLLM's {nfe}"


def test_the_stand_in_cache_forward_is_the_full_forward():
    """The reference's cached forward, with nothing stale, equals the model's own forward."""
    hf, _ = llada(torch.float64, 1.0)
    fast = _Fast(hf)
    x = prompts(2)[0]
    full, kv = fast(x)
    assert torch.allclose(full, hf(x).logits, atol=1e-10)
    assert torch.allclose(fast(x, 3, 6, kv)[0], full[:, 3:6], atol=1e-10)
    assert torch.allclose(fast(x, 3, None, [(k[:, :, :3], v[:, :, :3]) for k, v in kv])[0], full[:, 3:], atol=1e-10)
