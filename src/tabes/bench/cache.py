"""``tabes bench cache``: wall-clock per generated token with and without the block KV cache.

The model is a bidirectional Llama-style transformers model with random weights (4 layers,
width 256, 4 heads, MLP 1024, vocabulary 8,192 by default), decoding ``gen`` masked tokens
after a random ``prompt`` in blocks of ``block`` positions, one token per step. Every
(sampler, cache) configuration decodes the same input; the configurations run interleaved,
``repeats`` times, and each reports the median.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from tabes.generate import generate


@dataclass(frozen=True)
class CacheBenchConfig:
    """Settings of :func:`run_cache_bench`."""

    prompt: int = 768
    gen: int = 256
    block: int = 32
    steps: int | None = None  # None: one token per step (steps = gen)
    layers: int = 4
    width: int = 256
    heads: int = 4
    mlp: int = 1024
    vocab: int = 8192
    repeats: int = 1
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("prompt", "gen", "block", "layers", "width", "heads", "mlp", "vocab", "repeats"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def bench_model(cfg: CacheBenchConfig):
    """The benchmark's random bidirectional Llama-style model as an :class:`tabes.models.hf.HFDenoiser`."""
    import transformers

    from tabes.models.hf import HFDenoiser

    torch.manual_seed(cfg.seed)
    config = transformers.LlamaConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.prompt + cfg.gen,
    )
    model = transformers.LlamaForCausalLM(config).to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
    return HFDenoiser(model, mask_id=cfg.vocab - 1, bidirectional=True)


def run_cache_bench(
    cfg: CacheBenchConfig,
    samplers: tuple[str, ...] = ("confidence", "boe"),
    caches: tuple[str, ...] = ("none", "prefix", "dual"),
    progress=None,
) -> list[dict]:
    """Rows ``{sampler, cache, prompt, gen, block, steps, s_per_token, speedup, agree_with_none, ...}``.

    ``speedup`` is the uncached time of the same sampler over this row's (needs ``"none"`` in
    ``caches``); ``agree_with_none`` is the fraction of generated tokens equal to the uncached
    decode's (the cache is an approximation after each block's first step).
    """
    model = bench_model(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    L = cfg.prompt + cfg.gen
    ids = torch.randint(0, cfg.vocab - 1, (1, L), generator=g).to(cfg.device)
    ids[:, cfg.prompt :] = model.mask_id
    steps = cfg.steps or cfg.gen
    if model.routes_attention is False:
        raise RuntimeError("the benchmark model does not route attention through the registry")
    configs = [(s, c) for s in samplers for c in caches]
    times: dict[tuple[str, str], list[float]] = {k: [] for k in configs}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    for _ in range(cfg.repeats):
        for key in configs:
            sampler, cache = key
            start = time.perf_counter()
            out = generate(model, ids, sampler=sampler, steps=steps, block_length=cfg.block, cache=cache)
            times[key].append(time.perf_counter() - start)
            outputs[key] = out.sequences[0, cfg.prompt :]
            if progress is not None:
                progress(f"{sampler:<12} cache={cache:<7} {times[key][-1]:8.2f} s")
    rows = []
    for sampler, cache in configs:
        med = statistics.median(times[(sampler, cache)])
        base = times.get((sampler, "none"))
        row = {
            "sampler": sampler,
            "cache": cache,
            "prompt": cfg.prompt,
            "gen": cfg.gen,
            "block": cfg.block,
            "steps": steps,
            "s_per_token": round(med / cfg.gen, 6),
            "speedup": round(statistics.median(base) / med, 3) if base else None,
            "agree_with_none": round(float((outputs[(sampler, cache)] == outputs[(sampler, "none")]).float().mean()), 4)
            if (sampler, "none") in outputs
            else None,
            "layers": cfg.layers,
            "width": cfg.width,
            "vocab": cfg.vocab,
            "dtype": cfg.dtype,
            "device": cfg.device,
            "threads": torch.get_num_threads(),
            "batch": 1,
            "repeats": cfg.repeats,
        }
        rows.append(row)
    conf = {r["cache"]: r["s_per_token"] for r in rows if r["sampler"] == "confidence"}
    for r in rows:  # each row's cost per token relative to confidence with the same cache
        r["vs_confidence"] = round(r["s_per_token"] / conf[r["cache"]], 3) if r["cache"] in conf else None
    return rows
