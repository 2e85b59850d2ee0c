"""PC-Sampler: position-aware weight times frequency-calibrated confidence (Huang et al. 2025,
arXiv 2508.13021).

    score_i = exp(-lam * d_i) * min(alpha, -c_i * log f(x_i))

with c_i the probability of the proposed token x_i, f the background frequency of that token
and d_i the position's distance from the start of the region being decoded (the first masked
position of the row). The position weight steers decoding roughly left to right; the
calibration demotes tokens that are frequent everywhere (punctuation, "the"), whose high
confidence says little. The paper uses lam = 0.25 and alpha = 10 on text and lam = 0 on Sudoku.

Adaptations (the paper counts f over a text corpus): ``prior="uniform"`` takes f = 1/V, which
makes the calibration a constant factor (on Sudoku all digits are equally frequent, so this is
exact); ``prior="marginal"`` estimates f per row from the step's own forward, as the mean
predicted distribution over the masked positions, so no corpus and no extra pass are needed.
On Sudoku, d is the row-major cell distance; use ``pc:lam=0`` there, as the paper does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register

PRIORS = ("uniform", "marginal")


@dataclass(frozen=True)
class PCConfig:
    """lam: decay rate of the position weight exp(-lam * d) (0: no position bias); alpha: cap of
    the calibrated confidence; prior: background token frequencies, "uniform" or "marginal"."""

    lam: float = 0.25
    alpha: float = 10.0
    prior: str = "uniform"

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")


@register
class PCSampler:
    """Position-aware, frequency-calibrated confidence (PC-Sampler). 1 forward per step."""

    name: ClassVar[str] = "pc"
    fixed_budget: ClassVar[bool] = True
    Config = PCConfig

    def __init__(self, config: PCConfig | None = None) -> None:
        self.config = config or PCConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        cfg = self.config
        pred = state.predict(model)
        probs = pred.probs  # (B, L, V), mask token at 0
        if cfg.prior == "uniform":
            neg_log_f = torch.full_like(pred.confidence, math.log(model.vocab_size - 1))  # the mask token is never proposed
        else:
            w = state.maskable[..., None].to(probs.dtype)
            freq = (probs * w).sum(1) / w.sum(1).clamp_min(1)  # (B, V) mean prediction over the masked positions
            neg_log_f = -freq.gather(-1, pred.tokens).clamp_min(1e-9).log()  # (B, L)
        calibrated = (pred.confidence * neg_log_f).clamp_max(cfg.alpha)
        pos = torch.arange(state.x.shape[1], device=state.x.device)
        first = torch.where(state.maskable, pos, state.x.shape[1]).amin(-1, keepdim=True)  # (B, 1)
        weight = torch.exp(-cfg.lam * (pos - first).clamp_min(0).float())
        commit = top_k_mask(weight * calibrated, state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
