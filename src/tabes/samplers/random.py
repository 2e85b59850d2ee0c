"""Random order: commit b uniformly random masked positions (the MDM's native order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask, uniform
from tabes.samplers.registry import register


@dataclass(frozen=True)
class RandomConfig:
    """No options: positions are drawn from the step's ``torch.Generator``."""


@register
class RandomSampler:
    """Commit b uniformly random masked positions (batch-invariant). One forward pass per step."""

    name: ClassVar[str] = "random"
    fixed_budget: ClassVar[bool] = True
    stochastic: ClassVar[bool] = True  # draws from the generator at temperature 0
    Config = RandomConfig

    def __init__(self, config: RandomConfig | None = None) -> None:
        self.config = config or RandomConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        # one draw of L scores per step, shared by the rows: a row's order then does not
        # depend on the batch it is decoded in (each row's order is still uniformly random)
        scores = uniform(state.x.shape[1], state.generator, state.x.device)
        commit = top_k_mask(scores.expand_as(state.maskable), state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
