"""Confidence-threshold parallel decoding (Fast-dLLM).

Commit every masked position whose confidence exceeds ``threshold``; at least one (the most
confident), and at least the loop's budget, so the call still ends within its steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class ThresholdConfig:
    """threshold: commit positions with confidence above this value, in (0, 1]."""

    threshold: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


@register
class ThresholdSampler:
    """Adaptive: commits max(budget, #confidence > threshold, 1) per step."""

    name: ClassVar[str] = "threshold"
    fixed_budget: ClassVar[bool] = False
    Config = ThresholdConfig

    def __init__(self, config: ThresholdConfig | None = None) -> None:
        self.config = config or ThresholdConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        above = ((pred.confidence > self.config.threshold) & state.maskable).sum(-1)
        k = torch.maximum(torch.maximum(above, state.budget), torch.ones_like(above))
        commit = top_k_mask(pred.confidence, state.maskable, k)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
