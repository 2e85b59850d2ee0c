"""Confidence / low-confidence remasking (MaskGIT, LLaDA): commit the most probable proposals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class ConfidenceConfig:
    """No options: the score is the proposed token's probability c_i."""


@register
class ConfidenceSampler:
    """Score c_i = max_v pi_i(v); commit the top-b. One forward pass per step."""

    name: ClassVar[str] = "confidence"
    fixed_budget: ClassVar[bool] = True
    Config = ConfidenceConfig

    def __init__(self, config: ConfidenceConfig | None = None) -> None:
        self.config = config or ConfidenceConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        commit = top_k_mask(pred.confidence, state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
