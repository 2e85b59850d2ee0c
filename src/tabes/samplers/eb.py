"""Entropy-bounded parallel decoding (EB-Sampler, arXiv 2505.24857).

Sort the masked positions by entropy, ascending, and commit the largest prefix S whose
entropy sum minus its largest entropy stays at most ``gamma``: sum_{i in S} H_i - max_{i in S} H_i
<= gamma. The first position always qualifies, so at least one token is committed; the
loop's budget is a floor, so the call still ends within its steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class EBConfig:
    """gamma: error budget in nats for the entropy sum beyond the largest term."""

    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")


@register
class EBSampler:
    """Adaptive: commits max(budget, entropy-bounded prefix) per step."""

    name: ClassVar[str] = "eb"
    fixed_budget: ClassVar[bool] = False
    Config = EBConfig

    def __init__(self, config: EBConfig | None = None) -> None:
        self.config = config or EBConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        h = pred.entropy.masked_fill(~state.maskable, float("inf"))  # (B, L)
        h_sorted = torch.sort(h, dim=-1, stable=True).values
        finite = torch.isfinite(h_sorted)
        csum = torch.where(finite, h_sorted, 0.0).cumsum(-1)
        ok = finite & (csum - torch.where(finite, h_sorted, 0.0) <= self.config.gamma)  # prefix sums are monotone
        k = torch.maximum(ok.sum(-1), state.budget)
        commit = top_k_mask(-pred.entropy, state.maskable, k)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
