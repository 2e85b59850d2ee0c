"""``tabes bench peers``: tabes against the installed reference decoders, side by side on one CPU.

For each model and setting, the reference and tabes decode the same prompts, alternating, ``repeats``
times; a row says whether the tokens were identical and the median seconds per generated token of
each. The time each spends inside the model's forward is measured too: what is left is the decoding
loop's own overhead (``*_loop_s_per_token``).

References (each only where installed):

- diffusers' ``LLaDA2Pipeline`` with ``BlockRefinementScheduler`` against ``blocks="llada2"`` and
  the ``llada2`` sampler. Models: the shipped ``text-demo`` ModernBERT (its tokenizer, a
  word-problem prompt) and a random float32 BERT (width 256, 4 layers, vocabulary 1,000; random
  prompts), batch 1 and 4.
- transformers' ``DiffusionGemmaForBlockDiffusion.generate()`` (its default generation config,
  seeded) against the ``native`` sampler with the same seed, on a random float32 DiffusionGemma
  (width 128, 4 layers, 8 experts of which 2 active, vocabulary 1,000, canvas 32; a random
  16-token prompt, gen 64), batch 1 and 4. A row ``boe vs native`` gives BoE's cost per token on
  the same model against the model's own rule (different rules: ``identical`` is null).
  diffusers' ``DiffusionGemmaPipeline`` (0.42.1) is not run: under transformers 5.25 it passes
  ``past_key_values=`` to the decoder's mask builder, which takes ``cache=``, and raises
  ``TypeError`` (``docs/llm.md``).

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
    """Time spent in the modules' forward calls (``seconds``), measured by hooks on the modules
    themselves (modules that do not call each other)."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.seconds, self._start = 0.0, 0.0
        self._hooks = [h for m in modules for h in (m.register_forward_pre_hook(self._begin), m.register_forward_hook(self._end))]

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
        setting = f"block {block}, {steps} steps/block, threshold 0.7, editing {editing or 'off'}"
        rows.append(_timed_row(name, "diffusers LLaDA2Pipeline", setting, same, t_ours, f_ours, t_ref, f_ref, B, gen, repeats))
    timed.close()
    return rows


def _random_diffusion_gemma():
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    torch.manual_seed(0)
    text = dict(
        vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, global_head_dim=32, num_experts=8, top_k_experts=2, moe_intermediate_size=128,
        sliding_window=64, layer_types=["sliding_attention", "full_attention"] * 2, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        max_position_embeddings=1024,
    )  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    return DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=32)).eval()


def _timed_row(name: str, reference: str, setting: str, same, t_ours, f_ours, t_ref, f_ref, batch: int, gen: int, repeats: int) -> dict:
    tokens = batch * gen

    def med(v: list[float]) -> float:
        return statistics.median(v) / tokens

    return {
        "model": name,
        "reference": reference,
        "setting": setting,
        "identical": same,
        "tabes_s_per_token": round(med(t_ours), 6),
        "reference_s_per_token": round(med(t_ref), 6),
        "ratio": round(statistics.median(t_ours) / statistics.median(t_ref), 3),
        "tabes_loop_s_per_token": round(med([a - b for a, b in zip(t_ours, f_ours)]), 6),
        "reference_loop_s_per_token": round(med([a - b for a, b in zip(t_ref, f_ref)]), 6),
        "batch": batch,
        "gen": gen,
        "repeats": repeats,
        "cpu": cpu_info().describe(),
        "threads": torch.get_num_threads(),
    }


def _diffusion_gemma_rows(batch: int, repeats: int, gen: int = 64) -> list[dict]:
    """``model.generate()`` vs ``native`` (same seed), and ``boe`` vs ``native``, on one random model."""
    from tabes.models.diffusion_gemma import DiffusionGemmaDenoiser
    from tabes.search import decode

    hf = _random_diffusion_gemma()
    model = DiffusionGemmaDenoiser(hf)
    timed = _Timer(hf.model.encoder, hf.model.decoder)
    prompts = torch.randint(3, 1000, (batch, 16), generator=torch.Generator().manual_seed(batch))
    ids = torch.cat([prompts, torch.full((batch, gen), model.mask_id)], 1)
    runs: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("ref", "native", "boe")}
    same = True

    def run(key: str, fn):
        timed.seconds = 0.0
        start = time.perf_counter()
        out = fn()
        runs[key][0].append(time.perf_counter() - start)
        runs[key][1].append(timed.seconds)
        return out

    for r in range(repeats):
        torch.manual_seed(r)
        ref = run("ref", lambda: hf.generate(prompts, max_new_tokens=gen).sequences)
        ours = run(
            "native", lambda r=r: decode(model, ids, sampler="native", steps=1, generator=torch.Generator().manual_seed(r)).sequences
        )
        same = same and torch.equal(ours, ref)
        run("boe", lambda: decode(model, ids, sampler="boe", steps=gen, block_length=32))
    name = "diffusiongemma-random-128x4-moe8"
    setting = "default generation config (48 steps/canvas, EB 0.1, adaptive stop), canvas 32"
    rows = [_timed_row(name, "transformers DiffusionGemma generate()", setting, same, *runs["native"], *runs["ref"], batch, gen, repeats)]
    rows.append(
        _timed_row(
            name, "tabes native (boe vs native)", f"boe, {gen} steps, block 32", None, *runs["boe"], *runs["native"], batch, gen, repeats
        )
    )
    timed.close()
    return rows


def run_peers_bench(repeats: int = 3, gen: int = 64) -> list[dict]:
    """Every row of the module docstring; references that are not installed are left out."""
    rows = []
    try:
        from transformers import DiffusionGemmaForBlockDiffusion  # noqa: F401
    except ImportError:
        pass
    else:
        for batch in (1, 4):
            rows += _diffusion_gemma_rows(batch, repeats)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return rows
    from tabes.loading import load

    demo = load("text-demo")
    tok = demo.tokenizer
    prompt = "Question: Leo has 56 stickers. He loses 6. Sam gives Leo 4 more. How many stickers does Leo have now?\nAnswer:"
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    for batch in (1, 4):
        rows += _llada2_rows("text-demo", demo.model, demo.mask_id, tok.eos_token_id, ids.repeat(batch, 1), gen, repeats)
        prompts = torch.randint(5, 999, (batch, 24), generator=torch.Generator().manual_seed(batch))
        rows += _llada2_rows("bert-random-256x4", _random_bert(), 999, 3, prompts, gen, repeats)
    return rows
