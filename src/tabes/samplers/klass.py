"""KLASS: KL-adaptive stability sampling (arXiv 2511.05664).

A masked position is *stable* when its prediction is confident (probability of the proposed
token >= ``conf``) and has stopped moving: the KL divergence between this step's and the
previous step's predictive distribution at that position is <= ``kl``. Each step commits every
stable position, and at least the schedule's budget (the most confident ones), so the call
still ends within its steps; a row's first step has no previous distribution and commits its
budget by confidence. Cost: 1 forward per step; the previous distributions are kept per row
through the loop's ``carry``. Nothing in it is text-specific, so Sudoku needs no adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class KLASSConfig:
    """conf: confidence a stable position needs; kl: largest KL(p_t || p_t-1) (nats) of a stable position."""

    conf: float = 0.9
    kl: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.conf <= 1:
            raise ValueError(f"conf must be in (0, 1], got {self.conf}")
        if not self.kl >= 0:
            raise ValueError(f"kl must be >= 0, got {self.kl}")


@register
class KLASSSampler:
    """Adaptive: commits the confident positions whose distribution stopped moving (and at least the budget)."""

    name: ClassVar[str] = "klass"
    fixed_budget: ClassVar[bool] = False
    Config = KLASSConfig

    def __init__(self, config: KLASSConfig | None = None) -> None:
        self.config = config or KLASSConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        logp = pred.logprobs  # (B, L, V)
        stable = torch.zeros_like(state.maskable)
        kl = torch.full_like(pred.confidence, float("nan"))
        if state.carry is not None:
            prev = state.carry  # (B, L, V) log-probabilities of the row's previous step
            terms = torch.where(logp > float("-inf"), logp.exp() * (logp - prev), 0.0)  # 0 where p_t = 0
            kl = terms.nan_to_num(0.0, posinf=float("inf")).sum(-1).clamp_min(0)  # (B, L) KL(p_t || p_t-1)
            stable = state.maskable & (pred.confidence >= self.config.conf) & (kl <= self.config.kl)
        k = torch.maximum(stable.sum(-1), state.budget)
        # the stable positions first, then the most confident others up to the budget
        commit = top_k_mask(pred.confidence + 2.0 * stable, state.maskable, k)
        info = {"stable": [int(n) for n in stable.sum(-1)]}
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, info=info, carry=logp)
