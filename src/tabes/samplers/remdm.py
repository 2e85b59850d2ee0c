"""ReMDM-style remasking (Wang et al. 2025, arXiv 2503.00307), random or by contradiction.

Each step commits the top-b masked positions by confidence, then re-masks previously
committed (never given) tokens, so later steps can repair early errors:

- ``schedule="random"`` (ReMDM's): each with probability ``eta``. The uniform draws are
  shared by the rows of a batch (one per position and step), so a row's result does not
  depend on the batch it is decoded in.
- ``schedule="confidence"`` (backtracking in the spirit of Saber, arXiv 2510.18165): the
  tokens the step's own forward contradicts, i.e. whose probability given everything else is
  below ``threshold`` while another token is the argmax; at most ``per_step`` per row, least
  probable first. Deterministic, and free: the forward is the one the step runs anyway.

Remasking stops for the last ``t_off`` fraction of each block's steps, and the loop never
remasks on a block's last step, so decoding still ends with no mask left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, contradicted, top_k_mask, uniform
from tabes.samplers.registry import register

SCHEDULES = ("random", "confidence")


@dataclass(frozen=True)
class ReMDMConfig:
    """eta: per-step remask probability of a committed token (random schedule); t_off: no
    remasking once t < t_off; schedule: "random" or "confidence"; threshold: the confidence
    schedule remasks tokens whose probability is below it; per_step: at most this many per
    row and step (confidence schedule)."""

    eta: float = 0.02
    t_off: float = 0.25
    schedule: str = "random"
    threshold: float = 0.1
    per_step: int = 1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.per_step < 1:
            raise ValueError(f"per_step must be >= 1, got {self.per_step}")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if not 0 <= self.t_off <= 1:
            raise ValueError(f"t_off must be in [0, 1], got {self.t_off}")


@register
class ReMDMSampler:
    """Confidence order plus re-masking of committed tokens (random or contradicted). 1 forward per step."""

    name: ClassVar[str] = "remdm"
    fixed_budget: ClassVar[bool] = True
    Config = ReMDMConfig

    def __init__(self, config: ReMDMConfig | None = None) -> None:
        self.config = config or ReMDMConfig()

    @property
    def stochastic(self) -> bool:
        """True when the random schedule draws remask noise, even at temperature 0."""
        return self.config.schedule == "random" and self.config.eta > 0

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        commit = top_k_mask(pred.confidence, state.maskable, state.budget)
        cfg, remask = self.config, None
        committed_before = (state.x != model.mask_id) & ~state.fixed
        if cfg.schedule == "confidence" and state.t >= cfg.t_off:
            remask = contradicted(pred.logits, state.x, committed_before, cfg.threshold, cfg.per_step)
        elif cfg.eta > 0 and state.t >= cfg.t_off:
            u = uniform(state.x.shape[1], state.generator, state.x.device)  # shared by the rows
            remask = committed_before & (u < cfg.eta)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, remask=remask)
