"""Denoising-entropy best-of-N (arXiv 2512.21336), on top of any sampler.

At its first step in a block, ``bon`` decodes the whole block ``n`` times with the ``base``
sampler at ``temperature`` (> 0, so the trajectories differ), with the steps the block has
left, through the same decoding loop (:func:`tabes.generate` with a ``region``). It keeps,
per row, the trajectory with the lowest accumulated masked entropy (the sum over its steps
of the entropy of the still-masked positions) and commits that trajectory's tokens at once.
Cost: n times the base sampler's passes, all counted on the row.

The n particles of a row are decoded together, one row at a time, from one seed drawn per
call: a row's result then does not depend on the other rows of its batch (the price is
smaller batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser, add_counts, unwrap
from tabes.samplers import register
from tabes.samplers.base import StepResult, StepState


@dataclass(frozen=True)
class BoNConfig:
    """n: trajectories per row; base: the sampler spec run n times; temperature: their Gumbel temperature."""

    n: int = 4
    base: str = "confidence"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (trajectories must differ), got {self.temperature}")
        if self.base.split(":", 1)[0] == "bon":
            raise ValueError(f"base cannot be bon itself, got {self.base!r}")


@register
class BoNSampler:
    """Best of n base-sampler trajectories by accumulated masked entropy. n x the base's passes."""

    name: ClassVar[str] = "bon"
    fixed_budget: ClassVar[bool] = False
    Config = BoNConfig

    def __init__(self, config: BoNConfig | None = None) -> None:
        from tabes.samplers import get_sampler

        self.config = config or BoNConfig()
        self.base = get_sampler(self.config.base)  # validates the base spec

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        from tabes.generate import generate

        n = self.config.n
        B, L = state.x.shape
        region = state.maskable.any(0)  # (L,) this block's masked positions
        # one seed per call, shared by the rows: row b's particles depend only on row b and
        # the seed, so a row gives the same result alone or in a batch
        seed = int(torch.randint(0, 2**62, (1,), generator=state.generator))
        tokens = torch.empty_like(state.x)
        scores, bests = [], []
        forwards = torch.zeros(B, dtype=torch.long)
        backwards = torch.zeros(B, dtype=torch.long)
        for b in range(B):  # the n particles of a row decode together
            xs = state.x[b : b + 1].repeat(n, 1)  # (n, L)
            am = None if state.attention_mask is None else state.attention_mask[b : b + 1].repeat(n, 1)
            out = generate(
                unwrap(model),
                xs,
                sampler=self.base,
                steps=state.steps_left,
                temperature=self.config.temperature,
                generator=torch.Generator().manual_seed(seed),
                attention_mask=am,
                trace=True,
                region=region,
            )
            score = torch.zeros(n)
            for rec in out.trace:
                score[rec["row"]] += rec["masked_entropy"]
            best = int(score.argmin())
            tokens[b] = out.sequences[best]
            forwards[b], backwards[b] = out.forwards.sum(), out.backwards.sum()
            scores.append([round(v, 4) for v in score.tolist()])
            bests.append(best)
        add_counts(model, forwards, backwards)
        commit = state.maskable & (tokens != model.mask_id)
        pred = state.predict(model, logits=torch.zeros(B, L, model.vocab_size))  # no extra pass: a placeholder for the trace
        info = {"bon_scores": scores, "bon_best": bests}
        return StepResult(commit=commit, tokens=tokens, prediction=pred, info=info)
