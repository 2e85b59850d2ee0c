"""TIS fidelity of each ActiveQueryAttention mode against the dense backward.

Along BoE trajectories (dense backward, greedy) on real puzzles, every steered step computes
the Token Influence Score of the same candidates several ways: dense backward (the
reference), and AQA with the active set "candidates" or "candidates+probes" in the exact mode,
plus the approximate ``kv`` mode. For each AQA variant it reports the mean Spearman rank correlation of TIS with
the dense TIS over the candidates, and how often the committed top-b set by BoE's score is
the same as with dense TIS, and how well each ranks the candidates by the true entropy drop
(measured by revealing each candidate in turn). The one-pass variant (``point="mask"``: entropy linearised at the
current embeddings) is compared against the same reference, the paper's soft-point TIS.
"""

from __future__ import annotations

import math
import statistics

import torch

from tabes.protocol import predict
from tabes.samplers import get_sampler
from tabes.samplers.base import StepState, top_k_mask
from tabes.samplers.boe import BoEConfig, _normalise, token_influence
from tabes.tasks import sudoku

# (AQA mode, active set, linearisation point)
VARIANTS = (
    ("exact", "candidates", "soft"),
    ("exact", "candidates+probes", "soft"),
    ("kv", "candidates+probes", "soft"),
    ("kv", "candidates", "soft"),
    ("exact", "candidates+probes", "mask"),
    ("exact", "dense", "mask"),
)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() < 2:
        return float("nan")
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def tis_fidelity(
    model, puzzles: list[list[int]], *, config: BoEConfig | None = None, steps: int = 81, max_steps_per_puzzle: int = 20
) -> list[dict]:
    """Rows ``{mode, active, point, spearman, top_b_agreement, spearman_true_drop, n_steps}``, means
    over steered steps. ``spearman_true_drop`` ranks TIS against the actual fall of the probe
    entropy when each candidate alone is revealed (one extra forward per candidate); the first
    two rows are the dense reference itself and plain confidence, for scale."""
    cfg = config or BoEConfig()
    sampler = get_sampler("boe", **{**cfg.__dict__, "active": "dense"})
    old_mode = model.config.aqa_mode
    stats = {v: {"rho": [], "agree": [], "true": []} for v in VARIANTS}
    ref = {"dense": [], "confidence": [], "confidence_vs_dense": []}  # Spearman with the true drop
    try:
        for cells in puzzles:
            x = torch.tensor([sudoku.to_ids(cells)])
            for _ in range(max_steps_per_puzzle):
                masked = x == model.mask_id
                n = int(masked.sum())
                if n == 0:
                    break
                budget = torch.tensor([-(-n // max(1, steps))])
                with torch.no_grad():
                    pred = predict(model, x, where=masked)
                cand = top_k_mask(pred.confidence, masked, torch.clamp(budget, min=cfg.r))
                probes = masked & ~cand
                if cfg.rho < 1:
                    probes = top_k_mask(pred.entropy, probes, torch.tensor([math.ceil(cfg.rho * x.shape[1])]))
                if not probes.any():
                    break
                model.config.aqa_mode = "exact"
                dense, _ = token_influence(model, x, pred.probs, cand, probes, tau=cfg.tau, active="dense")

                def commit_of(tis, pred=pred, cand=cand, budget=budget):
                    penalty = cfg.lambda_ac * (cfg.h_max - pred.entropy).clamp_min(0) ** 2
                    return top_k_mask(pred.confidence**cfg.gamma * _normalise(tis, cand, cfg.norm) - penalty, cand, budget)

                ref_commit = commit_of(dense)
                drop = _true_drop(model, x, pred, cand, probes)
                ref["dense"].append(_spearman(dense[cand], drop))
                ref["confidence"].append(_spearman(pred.confidence[cand], drop))
                ref["confidence_vs_dense"].append(_spearman(pred.confidence[cand], dense[cand]))
                for mode, active, point in VARIANTS:
                    model.config.aqa_mode = mode
                    tis, _ = token_influence(model, x, pred.probs, cand, probes, tau=cfg.tau, active=active, point=point)
                    stats[mode, active, point]["rho"].append(_spearman(tis[cand], dense[cand]))
                    stats[mode, active, point]["agree"].append(float(torch.equal(commit_of(tis), ref_commit)))
                    stats[mode, active, point]["true"].append(_spearman(tis[cand], drop))
                model.config.aqa_mode = "exact"
                # advance along the dense-BoE trajectory
                state = StepState(
                    x=x, maskable=masked, fixed=~masked, budget=budget, step=0, num_steps=steps, t=1.0, temperature=0.0, generator=None
                )
                res = sampler.step(model, state)
                x = torch.where(res.commit, res.tokens, x)
    finally:
        model.config.aqa_mode = old_mode
    rows = [
        {
            "mode": "dense",
            "active": "dense",
            "point": "soft",
            "spearman": 1.0,
            "top_b_agreement": 1.0,
            "spearman_true_drop": _mean(ref["dense"]),
            "n_steps": len(ref["dense"]),
        },
        {
            "mode": "confidence",
            "active": "-",
            "point": "-",
            "spearman": _mean(ref["confidence_vs_dense"]),
            "top_b_agreement": None,
            "spearman_true_drop": _mean(ref["confidence"]),
            "n_steps": len(ref["confidence"]),
        },
    ]
    for (mode, active, point), s in stats.items():
        rows.append(
            {
                "mode": mode,
                "active": active,
                "point": point,
                "spearman": _mean(s["rho"]),
                "top_b_agreement": _mean(s["agree"]),
                "spearman_true_drop": _mean(s["true"]),
                "n_steps": len(s["agree"]),
            }
        )
    return rows


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v == v]  # drop NaN (a step with fewer than 2 distinct values)
    return round(statistics.mean(vals), 4) if vals else None


@torch.no_grad()
def _true_drop(model, x: torch.Tensor, pred, cand: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """(1, L) -> (|C|,): the actual fall of the summed probe entropy when each candidate alone is
    revealed with its argmax token (one forward per candidate, batched), in candidate order."""
    idx = cand[0].nonzero().squeeze(-1)
    xs = x.repeat(idx.numel(), 1)
    xs[torch.arange(idx.numel()), idx] = pred.tokens[0, idx]
    after = predict(model, xs, where=xs == model.mask_id).entropy  # (|C|, L)
    before = (pred.entropy[0] * probes[0]).sum()
    return before - (after * probes[0]).sum(-1)


def cache_fidelity(
    model,
    ids: torch.Tensor,
    *,
    steps: int,
    block_length: int | None,
    cache: str = "dual",
    attention_mask: torch.Tensor | None = None,
    config: BoEConfig | None = None,
) -> dict:
    """TIS through the block KV cache against the uncached TIS, along uncached BoE trajectories.

    Every block starts with the cache's refresh; at every step, the candidates and probes of the
    uncached forward get their TIS twice: uncached (the reference) and through the cache (the
    surrogate forward and backward on the query positions, cached keys and values constant).
    The decode follows the uncached BoE commits. Shapes: ids (B, L), attention_mask (B, L).

    Returns ``{cache, block_length, steps, spearman, same_commit, confidence_spearman,
    n_steps}``: the mean Spearman correlation of cached with uncached TIS over each steered row's
    candidates, how often BoE's committed set is the same with either TIS, and the
    correlation of plain confidence with the uncached TIS for scale.
    """
    from tabes.blocks import plan_blocks
    from tabes.cache import BlockCache
    from tabes.protocol import CountingDenoiser

    cfg = config or BoEConfig()
    mask_id = model.mask_id
    x = ids.clone()
    B, L = x.shape
    fixed = x != mask_id
    everyone = torch.arange(B, device=x.device)
    rho, agree, conf_rho = [], [], []
    for (lo, hi), block_steps in plan_blocks(~fixed, steps, block_length):
        in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
        in_block[lo:hi] = True
        bc = BlockCache(model, cache, L, (lo, hi), B)
        bc.fill(x, everyone, attention_mask)
        counts = torch.zeros(B, dtype=torch.long, device=x.device)
        view = CountingDenoiser(model, everyone, counts, counts.clone(), bc)
        for s in range(block_steps):
            masked = (x == mask_id) & in_block & ~fixed
            n = masked.sum(-1)
            if not bool(n.any()):
                break
            budget = torch.div(n + (block_steps - s) - 1, block_steps - s, rounding_mode="floor")
            with torch.no_grad():
                pred = predict(model, x, where=masked, attention_mask=attention_mask)
            cand = top_k_mask(pred.confidence, masked, torch.clamp(budget, min=cfg.r))
            probes = masked & ~cand
            steer = probes.any(-1)
            gate = pred.confidence.clamp_min(0) ** cfg.gamma
            score = pred.confidence
            if bool(steer.any()):
                kw = dict(tau=cfg.tau, active=cfg.active, attention_mask=attention_mask)
                ref, _ = token_influence(model, x, pred.probs, cand, probes, **kw)
                cached, _ = token_influence(view, x, pred.probs, cand, probes, **kw)
                ref_score = gate * _normalise(ref, cand, cfg.norm)
                cached_score = gate * _normalise(cached, cand, cfg.norm)
                for b in steer.nonzero().squeeze(-1).tolist():
                    c = cand[b]
                    rho.append(_spearman(cached[b][c], ref[b][c]))
                    conf_rho.append(_spearman(pred.confidence[b][c], ref[b][c]))
                    k = budget[b : b + 1]
                    agree.append(
                        float(torch.equal(top_k_mask(ref_score[b : b + 1], c[None], k), top_k_mask(cached_score[b : b + 1], c[None], k)))
                    )
                score = torch.where(steer[:, None], ref_score, pred.confidence)
            commit = top_k_mask(score, cand, budget)
            x = torch.where(commit, pred.tokens, x)
    return {
        "cache": cache,
        "block_length": block_length,
        "steps": steps,
        "spearman": _mean(rho),
        "same_commit": _mean(agree),
        "confidence_spearman": _mean(conf_rho),
        "n_steps": len(agree),
    }


def tis_problem(seed: int = 0, *, scale: float = 8.0, aqa_mode: str = "kv"):
    """A small TIS problem: our Sudoku MDM at width 32, 2 layers, 2 heads, float64, random
    weights multiplied by ``scale`` (sharper than the init, so that TIS varies visibly), two
    grids with 60% of the cells masked, the 6 most confident masked cells per grid as
    candidates and the other masked cells as probes. Returns (model, x, prediction,
    candidates, probes)."""
    from tabes.models.mdm import MDM, MDMConfig

    torch.manual_seed(seed)
    model = MDM(MDMConfig(d_model=32, n_layers=2, n_heads=2, aqa_mode=aqa_mode)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(0, 9, (2, 81), generator=g)
    x[torch.rand(2, 81, generator=g) < 0.6] = model.mask_id
    masked = x == model.mask_id
    with torch.no_grad():
        pred = predict(model, x, where=masked)
    cand = top_k_mask(pred.confidence, masked, torch.tensor([6, 6]))
    return model, x, pred, cand, masked & ~cand


def half_precision_error(dtype: str = "bfloat16", *, seeds: int = 6, scale: float = 4.0, keep_probs: bool = True) -> list[dict]:
    """TIS of each backward with the model in ``dtype`` against the same backward in float64,
    on :func:`tis_problem` (weights x ``scale``). ``keep_probs=False`` makes AQA recompute P
    from the log-sum-exp (the path of long sequences) instead of keeping it. Rows
    ``{backward, dtype, keep_probs, rel_error, per_seed}``: the relative L2 error
    ||TIS_dtype - TIS_float64|| / ||TIS_float64||, averaged over ``seeds`` models.
    """
    from tabes.ops.aqa import kernels

    half = getattr(torch, dtype)
    backwards = {"dense": ("exact", "dense"), "exact": ("exact", "candidates+probes"), "kv": ("kv", "candidates+probes")}
    rows = []
    with kernels(keep_probs_max=(1 << 22) if keep_probs else 0):
        for name, (mode, active) in backwards.items():
            errors = []
            for seed in range(seeds):
                model, x, pred, cand, probes = tis_problem(seed, scale=scale, aqa_mode=mode)
                tis = [
                    token_influence(model.to(dt), x, pred.probs, cand, probes, tau=0.5, active=active)[0].double()
                    for dt in (torch.float64, half)
                ]
                errors.append(float((tis[1] - tis[0]).norm() / tis[0].norm().clamp_min(1e-30)))
            rows.append(
                {
                    "backward": name,
                    "dtype": dtype,
                    "keep_probs": keep_probs,
                    "rel_error": round(statistics.mean(errors), 4),
                    "per_seed": [round(e, 4) for e in errors],
                }
            )
    return rows
