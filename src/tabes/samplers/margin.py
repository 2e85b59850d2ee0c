"""Top-2 margin (Kim et al. 2025; Dream ``topk_margin``): commit where p1 - p2 is largest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class MarginConfig:
    """No options: the score is the gap between the two most probable tokens."""


@register
class MarginSampler:
    """Score p1 - p2 of each masked position; commit the top-b. One forward pass per step."""

    name: ClassVar[str] = "margin"
    fixed_budget: ClassVar[bool] = True
    Config = MarginConfig

    def __init__(self, config: MarginConfig | None = None) -> None:
        self.config = config or MarginConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        top2 = pred.probs.topk(2, dim=-1).values  # (B, L, 2)
        commit = top_k_mask(top2[..., 0] - top2[..., 1], state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
