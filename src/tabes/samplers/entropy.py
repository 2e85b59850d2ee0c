"""Lowest entropy first (Dream ``entropy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


@dataclass(frozen=True)
class EntropyConfig:
    """No options: the score is -H_i."""


@register
class EntropySampler:
    """Score -H_i; commit the top-b. One forward pass per step."""

    name: ClassVar[str] = "entropy"
    fixed_budget: ClassVar[bool] = True
    Config = EntropyConfig

    def __init__(self, config: EntropyConfig | None = None) -> None:
        self.config = config or EntropyConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        commit = top_k_mask(-pred.entropy, state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
