"""``tabes bench aqa``: ActiveQueryAttention backward against the dense backward.

For each sequence length L and active fraction rho, on our MDM architecture at a realistic
width (``layout="sequence"``, random weights), it times the backward pass of BoE's surrogate
(future entropy at the probes w.r.t. the injected candidate embeddings):

- ``dense_ms``: full backward (no active mask);
- ``aqa_ms``: the backward as BoE runs it, |A| = ceil(rho * L) active rows: exact
  ActiveQueryAttention, the candidates as the only rows whose input gradient is read
  (``grad_rows``) and row-skipping linear layers (``MDMConfig.skip_rows``);
- ``attn_only_ms``: the same with plain autograd around the attention (``skip_rows=False``),
  i.e. what the attention kernel alone gives;
- ``kv_ms``: the approximate ``kv`` mode, for comparison;
- ``attn_share``: the attention backward's share of the dense backward time: 1 - (the dense
  backward with an attention whose backward is free) / ``dense_ms``, timed in the same loop;
- ``bound``: the Amdahl bound 1 - attn_share, the AQA/dense ratio reached if attention's
  backward cost fell to zero.

Dense and AQA are timed side by side in one process, interleaved, and the medians over
``repeats`` are reported. ``step_ratio`` rows compare a whole BoE step with a confidence step.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from tabes.models.mdm import MDM, MDMConfig
from tabes.ops.aqa import kernels
from tabes.samplers.boe import future_entropy


@dataclass(frozen=True)
class AQABenchConfig:
    """Settings of the AQA benchmark (reported with the numbers)."""

    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 8  # the shipped Sudoku model's depth
    vocab_size: int = 256
    batch: int = 1
    candidates: int = 4
    repeats: int = 5
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"  # the weights' and embeddings' dtype (float32, bfloat16, float16)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_model(L: int, cfg: AQABenchConfig) -> MDM:
    """The benchmark architecture: our MDM with learned positions, random weights, eval mode."""
    model = MDM(
        MDMConfig(
            vocab_size=cfg.vocab_size,
            mask_id=cfg.vocab_size - 1,
            seq_len=L,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_layers=cfg.n_layers,
            layout="sequence",
        )
    )
    return model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)).eval()


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _surrogate(model: MDM, L: int, cfg: AQABenchConfig, rho: float, g: torch.Generator):
    """Build one BoE surrogate problem; returns a closure per mode that runs forward + backward
    and returns only the backward's milliseconds."""
    B = cfg.batch
    ids = torch.randint(0, cfg.vocab_size - 1, (B, L), generator=g)
    masked = torch.rand(B, L, generator=g) < 0.7
    ids[masked] = model.mask_id
    order = torch.rand(B, L, generator=g).argsort(-1)
    cand = torch.zeros(B, L, dtype=torch.bool)
    cand.scatter_(1, order[:, : cfg.candidates], True)
    n_active = max(cfg.candidates + 1, math.ceil(rho * L))
    probes = torch.zeros(B, L, dtype=torch.bool)
    probes.scatter_(1, order[:, cfg.candidates : n_active], True)
    ids, cand, probes = ids.to(cfg.device), cand.to(cfg.device), probes.to(cfg.device)
    base = model.embed(ids).detach()
    soft = (torch.randn(B, L, model.config.d_model, generator=g) * 0.02).to(device=cfg.device, dtype=base.dtype)

    def run(active, mode="exact", skip_rows=True):
        model.config.aqa_mode, model.config.skip_rows = mode, skip_rows
        inj = soft.clone().requires_grad_(True)
        emb = torch.where(cand[..., None], inj, base)
        h = future_entropy(model, emb, probes, active=active, grad_rows=None if active is None else cand).sum()  # as BoE calls it
        _sync(cfg.device)
        t = time.perf_counter()
        torch.autograd.grad(h, inj)
        _sync(cfg.device)
        return (time.perf_counter() - t) * 1e3

    return run, cand | probes


def run_aqa_bench(lengths: list[int], rhos: list[float], cfg: AQABenchConfig | None = None, progress: bool = True) -> list[dict]:
    """Rows ``{L, rho, layers, dense_ms, aqa_ms, kv_ms, ratio, kv_ratio, attn_share, bound, default_ratio}``, one per (L, rho)."""
    cfg = cfg or AQABenchConfig()
    for L in lengths:
        if cfg.candidates >= L:
            raise ValueError(f"every length must exceed the {cfg.candidates} candidates, got {L}")
    for rho in rhos:
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    total = len(lengths) * len(rhos)
    bar = None
    if progress:
        from tabes.progress import progress_bar

        bar = progress_bar(total, "bench aqa", "cell")
    for L in lengths:
        model = bench_model(L, cfg)
        for p in model.parameters():
            p.requires_grad_(False)  # input gradients only, as in BoE
        for rho in rhos:
            run, active = _surrogate(model, L, cfg, rho, g)
            run(None)  # warm-up
            run(active)
            times: dict[str, list[float]] = {"dense": [], "aqa": [], "attn_only": [], "kv": [], "rest": []}
            for _ in range(cfg.repeats):  # interleaved, so drift in machine load hits all of them alike
                times["dense"].append(run(None))
                times["aqa"].append(run(active, "exact"))
                times["attn_only"].append(run(active, "exact", skip_rows=False))
                times["kv"].append(run(active, "kv"))
                with kernels(free_backward=True):
                    times["rest"].append(run(None))  # the dense backward without attention's
            med = {key: statistics.median(v) for key, v in times.items()}
            d = med["dense"]
            share = min(1.0, max(0.0, 1 - med["rest"] / d))
            rows.append(
                {
                    "L": L,
                    "rho": rho,
                    "dense_ms": round(d, 3),
                    "aqa_ms": round(med["aqa"], 3),
                    "attn_only_ms": round(med["attn_only"], 3),
                    "kv_ms": round(med["kv"], 3),
                    "ratio": round(med["aqa"] / d, 3),
                    "attn_only_ratio": round(med["attn_only"] / d, 3),
                    "kv_ratio": round(med["kv"] / d, 3),
                    "attn_share": round(share, 3),
                    "bound": round(1 - share, 3),
                    "layers": cfg.n_layers,
                    "device": cfg.device,
                    "dtype": cfg.dtype,
                    # the ratio of the mode BoE runs with by default (the models' default aqa_mode)
                    "default_ratio": round(med["aqa" if MDMConfig.aqa_mode == "exact" else "kv"] / d, 3),
                }
            )
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def step_ratio(L: int, *, model: MDM | None = None, batch: int = 8, repeats: int = 5, sampler: str = "boe", seed: int = 0) -> dict:
    """Median wall-clock of one BoE step over one confidence step at length L.

    Uses ``model`` (e.g. the shipped Sudoku model at L = 81) or the benchmark architecture.
    """
    from tabes.samplers import get_sampler
    from tabes.samplers.base import StepState

    g = torch.Generator().manual_seed(seed)
    if model is None:
        model = bench_model(L, AQABenchConfig())
    x = torch.randint(0, model.vocab_size - 1, (batch, L), generator=g)
    x[torch.rand(batch, L, generator=g) < 0.7] = model.mask_id
    masked = x == model.mask_id
    state = StepState(
        x=x,
        maskable=masked,
        fixed=~masked,
        budget=torch.ones(batch, dtype=torch.long),
        step=0,
        num_steps=L,
        t=1.0,
        temperature=0.0,
        generator=g,
    )
    samplers = {"confidence": get_sampler("confidence"), sampler: get_sampler(sampler)}
    times: dict[str, list[float]] = {k: [] for k in samplers}
    with torch.no_grad():
        for s in samplers.values():
            s.step(model, state)  # warm-up
        for _ in range(repeats):
            for k, s in samplers.items():
                times[k] += _time(lambda s=s: s.step(model, state), 1)
    conf, boe = statistics.median(times["confidence"]), statistics.median(times[sampler])
    return {
        "L": L,
        "batch": batch,
        "sampler": sampler,
        "confidence_ms": round(conf, 2),
        "boe_ms": round(boe, 2),
        "step_ratio": round(boe / conf, 3),
    }
