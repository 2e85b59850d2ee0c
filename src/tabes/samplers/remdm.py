"""ReMDM-style remasking (Wang et al. 2025, arXiv 2503.00307).

Each step commits the top-b masked positions by confidence, then re-masks each previously
committed (never given) token with probability ``eta``, so later steps can repair early
errors. Remasking stops for the last ``t_off`` fraction of each block's steps, and the loop
never remasks on a block's last step, so decoding still ends with no mask left. The uniform
draws are shared by the rows of a batch (one per position and step), so a row's result does
not depend on the batch it is decoded in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask, uniform
from tabes.samplers.registry import register


@dataclass(frozen=True)
class ReMDMConfig:
    """eta: per-step remask probability of a committed token; t_off: no remasking once t < t_off."""

    eta: float = 0.02
    t_off: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if not 0 <= self.t_off <= 1:
            raise ValueError(f"t_off must be in [0, 1], got {self.t_off}")


@register
class ReMDMSampler:
    """Confidence order plus random re-masking of committed tokens. 1 forward per step."""

    name: ClassVar[str] = "remdm"
    fixed_budget: ClassVar[bool] = True
    Config = ReMDMConfig

    def __init__(self, config: ReMDMConfig | None = None) -> None:
        self.config = config or ReMDMConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        commit = top_k_mask(pred.confidence, state.maskable, state.budget)
        remask = None
        if self.config.eta > 0 and state.t >= self.config.t_off:
            u = uniform(state.x.shape[1], state.generator, state.x.device)  # shared by the rows
            committed_before = (state.x != model.mask_id) & ~state.fixed
            remask = committed_before & (u < self.config.eta)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, remask=remask)
