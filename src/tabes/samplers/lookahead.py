"""Lookahead search over unmasking sets (LookUM-like, arXiv 2511.05563).

Each step draws ``k`` candidate unmasking sets of b positions: the greedy top-b by confidence
and k - 1 Gumbel-top-b samples over log-confidence (noise scaled by ``noise``). Each set is
committed tentatively and scored with one forward pass: the masked entropy that remains after
it, plus the entropy its own positions had when committed (without that charge the criterion
prefers committing the most uncertain positions, since their entropy then leaves the sum).
The set with the lowest total is kept. Cost: k + 1 forwards per step. The Gumbel draws are
shared by the rows of a batch, so a row's result does not depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser, predict
from tabes.samplers.base import StepResult, StepState, top_k_mask, uniform
from tabes.samplers.registry import register


@dataclass(frozen=True)
class LookaheadConfig:
    """k: candidate sets per step (k = 1 is plain confidence); noise: Gumbel scale of the samples."""

    k: int = 4
    noise: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


@register
class LookaheadSampler:
    """Best of k sampled unmasking sets by remaining masked entropy. k + 1 forwards per step."""

    name: ClassVar[str] = "lookahead"
    fixed_budget: ClassVar[bool] = True
    Config = LookaheadConfig

    def __init__(self, config: LookaheadConfig | None = None) -> None:
        self.config = config or LookaheadConfig()

    @property
    def stochastic(self) -> bool:
        """True when the candidate sets draw Gumbel noise (k > 1), even at temperature 0."""
        return self.config.k > 1

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        k = self.config.k
        pred = state.predict(model)
        logc = pred.confidence.clamp_min(1e-30).log()  # (B, L)
        sets = [top_k_mask(logc, state.maskable, state.budget)]
        for _ in range(k - 1):
            u = uniform(state.x.shape[1], state.generator, state.x.device, torch.float64).clamp_min(1e-300)
            gumbel = (-torch.log(-torch.log(u))).float().to(logc.device)  # (L,) shared by the rows
            sets.append(top_k_mask(logc + self.config.noise * gumbel, state.maskable, state.budget))
        if k == 1:
            return StepResult(commit=sets[0], tokens=pred.tokens, prediction=pred)
        cand = torch.stack(sets)  # (k, B, L)
        xs = torch.where(cand, pred.tokens, state.x).reshape(-1, state.x.shape[1])  # (k*B, L)
        am = None if state.attention_mask is None else state.attention_mask.repeat(k, 1)
        look = predict(model, xs, where=xs == model.mask_id, logits=model.logits(xs, attention_mask=am))  # entropy only
        remaining = (look.entropy * (xs == model.mask_id)).sum(-1).view(k, -1)  # (k, B)
        # every set is charged the entropy its committed positions had when they were committed:
        # the remaining entropy alone would reward committing the most uncertain positions
        # (their own entropy leaves the sum), i.e. exactly the risky choices
        spent = (pred.entropy[None] * cand).sum(-1)  # (k, B)
        best = (remaining + spent).argmin(0)  # (B,), ties -> the first (greedy) set
        commit = cand[best, torch.arange(state.x.shape[0], device=state.x.device)]
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, info={"lookahead_entropy": (remaining + spent).T.tolist()})
