"""``tabes bench peers``: tabes against the installed reference decoders, side by side on one CPU.

For each model and setting, the reference and tabes decode the same prompts, alternating, ``repeats``
times; a row says whether the tokens were identical and the median seconds per generated token of
each. The time each spends inside the model's forward is measured too: what is left is the decoding
loop's own overhead (``*_loop_s_per_token``).

References (each only where installed): diffusers' ``LLaDA2Pipeline`` with ``BlockRefinementScheduler``
against ``blocks="llada2"`` and the ``llada2`` sampler. Models: the shipped ``text-demo`` ModernBERT
(its tokenizer, a word-problem prompt) and a random float32 BERT (width 256, 4 layers, vocabulary
1,000; random prompts), batch 1 and 4.

Row keys: ``model, reference, setting, identical, tabes_s_per_token, reference_s_per_token, ratio``
(tabes over reference), ``tabes_loop_s_per_token, reference_loop_s_per_token, batch, gen, repeats,
cpu, threads``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from tabes.hardware import cpu_info


class _Timer:
    """Time spent in a module's forward calls (``seconds``), measured by hooks on the module itself."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds, self._start = 0.0, 0.0
        self._hooks = [module.register_forward_pre_hook(self._begin), module.register_forward_hook(self._end)]

    def close(self) -> None:
        """Take the hooks off the module (a model timed twice would otherwise carry both timers)."""
        for h in self._hooks:
            h.remove()

    def _begin(self, module: Any, args: Any) -> None:
        self._start = time.perf_counter()

    def _end(self, module: Any, args: Any, out: Any) -> None:
        self.seconds += time.perf_counter() - self._start


def _random_bert(vocab: int = 1000, mask_id: int = 999, width: int = 256) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=2 * width,
        max_position_embeddings=512,
    )
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.decoder.bias[mask_id] = float("-inf")  # the pipeline may commit the mask token; tabes never does
    return model


def _llada2_rows(
    name: str, hf_model: torch.nn.Module, mask_id: int, eos_id: int, prompts: torch.Tensor, gen: int, repeats: int
) -> list[dict]:
    import diffusers

    from tabes.generate import generate
    from tabes.models.hf import HFDenoiser

    rows = []
    timed = _Timer(hf_model)
    ours_model = HFDenoiser(hf_model, mask_id=mask_id)
    pipe = diffusers.LLaDA2Pipeline(model=hf_model, scheduler=diffusers.BlockRefinementScheduler(), tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    B, P = prompts.shape
    for block, steps, editing in [(32, 16, 0.0), (32, 16, 0.5), (16, 8, 0.5)]:
        total = -(-(P + gen) // block) * block
        ids = torch.full((B, total), mask_id, dtype=torch.long)
        ids[:, :P] = prompts
        attn = torch.zeros(B, total, dtype=torch.bool)
        attn[:, : P + gen] = True
        blocks_decoded = total // block - P // block
        t_ref, t_ours, f_ref, f_ours = [], [], [], []
        same = True
        for _ in range(repeats):
            timed.seconds = 0.0
            start = time.perf_counter()
            with torch.no_grad():
                ref = pipe(
                    input_ids=prompts,
                    gen_length=gen,
                    block_length=block,
                    num_inference_steps=min(steps, gen),
                    temperature=0.0,
                    threshold=0.7,
                    editing_threshold=editing,
                    eos_token_id=eos_id,
                    mask_token_id=mask_id,
                    output_type="seq",
                ).sequences
            t_ref.append(time.perf_counter() - start)
            f_ref.append(timed.seconds)
            timed.seconds = 0.0
            start = time.perf_counter()
            out = generate(
                ours_model,
                ids,
                sampler=f"llada2:threshold=0.7,editing_threshold={editing}",
                steps=min(steps, gen) * blocks_decoded,
                block_length=block,
                blocks="llada2",
                eos_id=eos_id,
                attention_mask=attn,
            )
            t_ours.append(time.perf_counter() - start)
            f_ours.append(timed.seconds)
            same = same and torch.equal(out.sequences[:, P : P + gen], ref)
        tokens = B * gen

        def med(v: list[float], tokens: int = tokens) -> float:
            return statistics.median(v) / tokens

        rows.append(
            {
                "model": name,
                "reference": "diffusers LLaDA2Pipeline",
                "setting": f"block {block}, {steps} steps/block, threshold 0.7, editing {editing or 'off'}",
                "identical": same,
                "tabes_s_per_token": round(med(t_ours), 6),
                "reference_s_per_token": round(med(t_ref), 6),
                "ratio": round(statistics.median(t_ours) / statistics.median(t_ref), 3),
                "tabes_loop_s_per_token": round(med([a - b for a, b in zip(t_ours, f_ours)]), 6),
                "reference_loop_s_per_token": round(med([a - b for a, b in zip(t_ref, f_ref)]), 6),
                "batch": B,
                "gen": gen,
                "repeats": repeats,
                "cpu": cpu_info().describe(),
                "threads": torch.get_num_threads(),
            }
        )
    timed.close()
    return rows


def run_peers_bench(repeats: int = 3, gen: int = 64) -> list[dict]:
    """Every row of the module docstring; references that are not installed are left out."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return []
    from tabes.loading import load

    demo = load("text-demo")
    tok = demo.tokenizer
    prompt = "Question: Leo has 56 stickers. He loses 6. Sam gives Leo 4 more. How many stickers does Leo have now?\nAnswer:"
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    rows = []
    for batch in (1, 4):
        rows += _llada2_rows("text-demo", demo.model, demo.mask_id, tok.eos_token_id, ids.repeat(batch, 1), gen, repeats)
        prompts = torch.randint(5, 999, (batch, 24), generator=torch.Generator().manual_seed(batch))
        rows += _llada2_rows("bert-random-256x4", _random_bert(), 999, 3, prompts, gen, repeats)
    return rows
