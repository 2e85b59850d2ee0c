"""tabes under ``blocks="llada2"`` with the ``llada2`` sampler against diffusers' own ``LLaDA2Pipeline`` with
``BlockRefinementScheduler`` (diffusers is installed by the dev extra; the pipeline is imported and driven
here, nothing of it is copied): the same tokens, over a grid of block lengths, steps, prompt lengths (the
prompt's tail inside the first block, or not), batch 1 and 3, float32 and float64, plain and near-certain
(x40) output heads, editing on and off, post-steps and EOS early stop.

The stand-in model is a tiny random BERT (bidirectional over what it is given; the pipeline gives it the
sequence up to the current block's end). Its output bias is -inf at the mask token: the pipeline's softmax
keeps the mask token and may commit it, tabes never proposes it (``docs/llm.md``).
"""

from __future__ import annotations

import itertools

import pytest
import torch

try:  # diffusers 0.42 cannot import beside transformers 4.x (they need different huggingface-hub majors)
    import diffusers
except ImportError as err:
    pytest.skip(f"needs diffusers importable (the dev extra, with transformers 5): {err}", allow_module_level=True)
transformers = pytest.importorskip("transformers")

from tabes import generate  # noqa: E402
from tabes.blocks import LLaDA2Blocks  # noqa: E402
from tabes.models.hf import HFDenoiser  # noqa: E402

V, MASK, EOS = 40, 39, 3


def _bert(scale: float, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = transformers.BertForMaskedLM(cfg).to(dtype).eval()
    with torch.no_grad():
        dec = model.cls.predictions.decoder
        dec.weight.mul_(scale)
        dec.bias.mul_(scale)
        dec.bias[MASK] = float("-inf")
    return model


def reference(model, prompts: torch.Tensor, *, gen, block, steps, threshold, editing, post, eos_stop) -> torch.Tensor:
    """diffusers' pipeline: (B, gen) tokens."""
    pipe = diffusers.LLaDA2Pipeline(model=model, scheduler=diffusers.BlockRefinementScheduler(), tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(
            input_ids=prompts,
            gen_length=gen,
            block_length=block,
            num_inference_steps=steps,
            temperature=0.0,
            threshold=threshold,
            editing_threshold=editing,
            max_post_steps=post,
            eos_early_stop=eos_stop,
            eos_token_id=EOS,
            mask_token_id=MASK,
            output_type="seq",
        )
    return out.sequences


def ours(model, prompts: torch.Tensor, *, gen, block, steps, threshold, editing, post, eos_stop):
    """tabes with the matching spec: (B, gen) tokens and the output."""
    B, P = prompts.shape
    total = -(-(P + gen) // block) * block  # the pipeline pads to whole blocks; the tail is hidden
    ids = torch.full((B, total), MASK, dtype=torch.long)
    ids[:, :P] = prompts
    attn = torch.zeros(B, total, dtype=torch.bool)
    attn[:, : P + gen] = True
    per_block = min(steps, gen)  # the pipeline's min(num_inference_steps, gen_length // minimal_topk)
    decoded_blocks = total // block - P // block
    out = generate(
        HFDenoiser(model, mask_id=MASK),
        ids,
        sampler=f"llada2:threshold={threshold},editing_threshold={editing}",
        steps=per_block * decoded_blocks,
        block_length=block,
        blocks=LLaDA2Blocks(max_post_steps=post, eos_early_stop=eos_stop),
        eos_id=EOS,
        attention_mask=attn,
        trace=True,
    )
    return out.sequences[:, P : P + gen], out


GRID = [
    # gen, block, steps, P, batch, dtype, scale, threshold, editing, post, eos_stop
    *itertools.product([16, 32], [8, 16], [4, 8], [5, 8], [1, 3], [torch.float64], [40.0], [0.7], [0.5], [16], [True]),
    *itertools.product([32], [8], [8], [5], [3], [torch.float32, torch.float64], [1.0, 4.0], [0.3], [0.1, 0.0], [2, 16], [True, False]),
    *itertools.product([24], [8, 16], [3, 16], [7], [3], [torch.float32], [4.0, 40.0], [0.9, 1.5], [0.05], [1], [True]),
]


@pytest.fixture(scope="module")
def models():
    return {(d, s): _bert(s, d) for d in (torch.float32, torch.float64) for s in (1.0, 4.0, 40.0)}


@pytest.mark.parametrize("gen,block,steps,P,batch,dtype,scale,threshold,editing,post,eos_stop", GRID)
def test_same_tokens_as_the_pipeline(models, gen, block, steps, P, batch, dtype, scale, threshold, editing, post, eos_stop):
    model = models[(dtype, scale)]
    prompts = torch.randint(4, MASK, (batch, P), generator=torch.Generator().manual_seed(P * 7 + batch))
    kw = dict(gen=gen, block=block, steps=steps, threshold=threshold, editing=editing, post=post, eos_stop=eos_stop)
    got, _ = ours(model, prompts, **kw)
    assert torch.equal(got, reference(model, prompts, **kw))


def test_the_grid_reaches_edits_post_steps_and_early_stops(models):
    """The grid above is only as good as the cases it reaches: edits, rows frozen at EOS with masks left,
    and blocks that run past their last mask."""
    edited = frozen = post_steps = 0
    for gen, block, steps, P, batch, dtype, scale, threshold, editing, post, eos_stop in GRID:
        prompts = torch.randint(4, MASK, (batch, P), generator=torch.Generator().manual_seed(P * 7 + batch))
        kw = dict(gen=gen, block=block, steps=steps, threshold=threshold, editing=editing, post=post, eos_stop=eos_stop)
        got, out = ours(models[(dtype, scale)], prompts, **kw)
        edited += sum(bool(r.get("edited")) for r in out.trace)
        frozen += int((got == MASK).any(-1).sum())
        post_steps += sum(not r["positions"] and bool(r.get("edited")) for r in out.trace)
    assert edited > 10 and frozen > 3 and post_steps > 3, (edited, frozen, post_steps)


@pytest.mark.parametrize("block,steps", [(16, 8), (8, 8), (32, 16)])
def test_generate_text_equals_the_pipeline_on_the_shipped_text_model(block, steps):
    """``generate_text(..., blocks="llada2")`` with a real tokenizer and a trained ModernBERT (float32), EOS early
    stop included: the pipeline's tokens."""
    import tabes
    from tabes.tasks.text import generate_text

    model = tabes.load("text-demo")
    tok = model.tokenizer
    prompt = "Question: Leo has 56 stickers. He loses 6. Sam gives Leo 4 more. How many stickers does Leo have now?\nAnswer:"
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    pipe = diffusers.LLaDA2Pipeline(model=model.model, scheduler=diffusers.BlockRefinementScheduler(), tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(input_ids=ids, gen_length=64, block_length=block, num_inference_steps=steps, temperature=0.0, output_type="seq",
                   eos_token_id=tok.eos_token_id, mask_token_id=model.mask_id).sequences  # fmt: skip
    P = ids.shape[1]
    blocks_decoded = -(-(P + 64) // block) - P // block
    res = generate_text(model, [prompt], gen_length=64, steps=steps * blocks_decoded, block_length=block, sampler="llada2", blocks="llada2")
    assert torch.equal(res.output.sequences[:, P : P + 64], ref)
