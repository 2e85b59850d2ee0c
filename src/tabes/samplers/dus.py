"""DUS: dilated unmasking (Luxembourg et al. 2025, arXiv 2506.19037).

A planner-free schedule: positions are visited in the dilated (bit-reversal, van der Corput)
order of their index, so the positions unmasked together in one step are far apart, never
neighbours, and each step's tokens are as close to conditionally independent as a fixed order
can make them. Each step commits the first ``budget`` masked positions in that order (their
tokens from the step's forward; the model's confidence plays no part). With blocks of 2^k
positions and the budget doubling, this is the paper's log2(B) passes per block.

On Sudoku, the order runs over the row-major cell index: 0, 64, 32, 16, 80, 48, 8, ... , so a
step's cells fall in different rows and mostly in different boxes. It ignores the model, as in
the paper, and is the fixed-order baseline of the frontier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tabes.protocol import Denoiser
from tabes.samplers.base import StepResult, StepState, top_k_mask
from tabes.samplers.registry import register


def dilated_rank(length: int, device: torch.device | str = "cpu") -> Tensor:
    """(length,) long: each position's rank in the bit-reversal order of 0..2^k-1 (2^k >= length)."""
    bits = max(1, (length - 1).bit_length())
    idx = torch.arange(length, device=device)
    rev = torch.zeros_like(idx)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev.argsort().argsort()


@dataclass(frozen=True)
class DUSConfig:
    """No options: the order is fixed by the positions."""


@register
class DUSSampler:
    """Dilated unmasking: a fixed bit-reversal order of positions, far-apart positions per step. 1 forward per step."""

    name: ClassVar[str] = "dus"
    fixed_budget: ClassVar[bool] = True
    Config = DUSConfig

    def __init__(self, config: DUSConfig | None = None) -> None:
        self.config = config or DUSConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        pred = state.predict(model)
        rank = dilated_rank(state.x.shape[1], state.x.device)  # (L,)
        score = -rank.float().expand_as(pred.confidence)
        commit = top_k_mask(score, state.maskable, state.budget)
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred)
