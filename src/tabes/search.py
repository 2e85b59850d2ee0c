"""Search over whole decodes, one layer above the decoding loop.

A *step sampler* (:mod:`tabes.samplers`) picks what to commit at one step of
:func:`tabes.generate.generate`. A *search* runs the loop itself, several times, and chooses
among the results; it is registered in the same registry, so ``--sampler bon:n=4`` and
``decode(model, ids, sampler="bon:n=4")`` work like any sampler spec. :func:`decode` is the
entry point that takes either kind: the tasks, the benches, the lm-eval model and the CLI call
it; the loop never calls a search, so the layers import one way only:
``search -> generate -> samplers``.

``bon`` (denoising-entropy best-of-N, arXiv 2512.21336): for each block, decode the block
``n`` times with the ``base`` sampler at ``temperature`` (> 0, so the trajectories differ),
with the block's share of the steps, and keep, per row, the trajectory with the lowest
accumulated masked entropy (the sum over its steps of the entropy of the still-masked
positions). Cost: n times the base sampler's passes, all counted on the row. A row's n
particles decode together, from one seed drawn per block, so a row's result does not depend
on the other rows of its batch (the price is smaller batches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from tabes.blocks import plan_blocks
from tabes.generate import generate
from tabes.protocol import Denoiser, GenerationOutput
from tabes.samplers import Sampler, get_sampler, register


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
class BestOfN:
    """Best of n base-sampler trajectories per block by accumulated masked entropy. n x the base's passes."""

    name: ClassVar[str] = "bon"
    fixed_budget: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True  # one seed per block from the generator
    Config = BoNConfig

    def __init__(self, config: BoNConfig | None = None) -> None:
        self.config = config or BoNConfig()
        self.base = get_sampler(self.config.base)  # validates the base spec
        if is_search(self.base):
            raise ValueError(f"base must be a step sampler, got the search {self.config.base!r}")

    def run(
        self,
        model: Denoiser,
        ids: Tensor,
        *,
        steps: int,
        block_length: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
        trace: bool = False,
        region: Tensor | None = None,
        eos_id: int | None = None,
        **_: Any,
    ) -> GenerationOutput:
        """Decode ``ids`` (B, L) block by block; see the module docstring. Trace records are
        the chosen trajectory's own step records, with ``bon_scores`` and ``bon_best`` added."""
        start = time.perf_counter()
        n = self.config.n
        x = ids.clone()
        B, L = x.shape
        masked = x == model.mask_id
        if region is not None:
            masked &= region
        forwards = torch.zeros(B, dtype=torch.long, device=x.device)
        backwards = torch.zeros(B, dtype=torch.long, device=x.device)
        nsteps = torch.zeros(B, dtype=torch.long, device=x.device)
        records: list[dict[str, Any]] = []
        for (lo, hi), block_steps in plan_blocks(masked, steps, block_length):
            block = torch.zeros(L, dtype=torch.bool, device=x.device)
            block[lo:hi] = True
            # one seed per block, shared by the rows: row b's particles depend only on row b
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"))
            for b in range(B):
                if not (masked[b] & block).any():
                    continue
                am = None if attention_mask is None else attention_mask[b : b + 1].repeat(n, 1)
                out = generate(
                    model,
                    x[b : b + 1].repeat(n, 1),  # (n, L) particles
                    sampler=self.base,
                    steps=block_steps,
                    temperature=self.config.temperature,
                    generator=torch.Generator(device=x.device).manual_seed(seed),
                    attention_mask=am,
                    trace=True,
                    region=block & masked[b],
                    eos_id=eos_id,
                )
                score = torch.zeros(n, device="cpu")  # trace values are Python floats
                for rec in out.trace:
                    score[rec["row"]] += rec["masked_entropy"]
                best = int(score.argmin())
                x[b] = out.sequences[best]
                forwards[b] += out.forwards.sum()
                backwards[b] += out.backwards.sum()
                nsteps[b] += out.steps[best]
                if trace:
                    scores = [round(v, 4) for v in score.tolist()]
                    records += [{**r, "row": b, "bon_scores": scores, "bon_best": best} for r in out.trace if r["row"] == best]
        return GenerationOutput(x, forwards, backwards, nsteps, time.perf_counter() - start, records)


@dataclass(frozen=True)
class NativeConfig:
    """Overrides of the checkpoint's own rule; 0 (or -1 for the temperatures and the stability)
    keeps its generation config's value. steps: denoising steps per canvas (the loop's ``steps``
    is not used); entropy_bound: the EB acceptance bound; t_min/t_max: the linear temperature
    schedule's ends; stability/confidence: the adaptive stop's thresholds; stopping: false runs
    every step; schedule: false drops the temperature schedule."""

    steps: int = 0
    entropy_bound: float = 0.0
    t_min: float = -1.0
    t_max: float = -1.0
    stability: int = -1
    confidence: float = 0.0
    stopping: bool = True
    schedule: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "entropy_bound", "confidence"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the generation config's), got {getattr(self, name)}")
        for name in ("t_min", "t_max", "stability"):
            if getattr(self, name) < 0 and getattr(self, name) != -1:
                raise ValueError(f"{name} must be >= 0 (-1: the generation config's), got {getattr(self, name)}")


@register
class Native:
    """The checkpoint's own decoding rule, as its generation config sets it (DiffusionGemma: model.generate())."""

    name: ClassVar[str] = "native"
    fixed_budget: ClassVar[bool] = False
    stochastic: ClassVar[bool] = True
    Config = NativeConfig

    def __init__(self, config: NativeConfig | None = None) -> None:
        self.config = config or NativeConfig()

    def run(
        self,
        model: Denoiser,
        ids: Tensor,
        *,
        steps: int,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
        region: Tensor | None = None,
        **_: Any,
    ) -> GenerationOutput:
        """Decode ``ids`` (B, L), whose masked positions are the last columns of every row, with
        ``model.native_generate``; ``steps`` is not used (see :class:`NativeConfig`)."""
        if not hasattr(model, "native_generate"):
            raise ValueError(
                f"sampler 'native': the model ({type(model).__name__}) ships no decoding rule of its own; "
                "native is for DiffusionGemma checkpoints"
            )
        start = time.perf_counter()
        masked = ids == model.mask_id
        if region is not None:
            masked &= region
        B, L = ids.shape
        cols = masked.any(0).nonzero()
        P = int(cols[0]) if len(cols) else L
        if P == L or not bool(masked[:, P:].all()):
            raise ValueError(
                "sampler 'native' decodes a prompt followed by masks: every row's masked positions must be the same last columns"
            )
        c = self.config
        settings = model.native_settings(
            max_denoising_steps=c.steps or None,
            entropy_bound=c.entropy_bound or None,
            t_min=None if c.t_min == -1 else c.t_min,
            t_max=None if c.t_max == -1 else c.t_max,
            stability_threshold=None if c.stability == -1 else c.stability,
            confidence_threshold=c.confidence or None,
            stopping=c.stopping,
        )
        if not c.schedule:
            settings.t_min = settings.t_max = None
        gen = generator if generator is not None else torch.Generator(device=ids.device)
        am = None if attention_mask is None else attention_mask[:, :P]
        out = model.native_generate(ids[:, :P], new_tokens=L - P, generator=gen, attention_mask=am, settings=settings)
        seq = out.sequences[:, :L]  # whole canvases; a gen length that is not a multiple of the canvas is cut
        zeros = torch.zeros(B, dtype=torch.long, device=ids.device)
        return GenerationOutput(seq, out.forwards, zeros, out.steps, time.perf_counter() - start)


from tabes import dfs  # noqa: E402, F401  (registers the dfs search beside bon)


def is_search(sampler: object) -> bool:
    """True for a registered search (it runs whole decodes), False for a step sampler."""
    return hasattr(sampler, "run") and not hasattr(sampler, "step")


def decode(
    model: Denoiser,
    ids: Tensor,
    *,
    sampler: str | Sampler | BestOfN = "confidence",
    steps: int,
    trace: bool | str | Path | None = None,
    constraints: Any = None,
    **kwargs: Any,
) -> GenerationOutput:
    """Decode ``ids`` with any registered spec: a step sampler runs :func:`tabes.generate.generate`,
    a search (``bon``, ``dfs``) runs its own search above it. Arguments as for ``generate``;
    ``constraints`` (a task's :class:`tabes.dfs.Constraints`) is for ``dfs`` and ignored by the others.

    Example:
        >>> out = decode(model, ids, sampler="bon:n=4,base=margin", steps=27)  # doctest: +SKIP
    """
    sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
    if not is_search(sampler):
        return generate(model, ids, sampler=sampler, steps=steps, trace=trace, **kwargs)
    if isinstance(trace, (str, Path)):
        raise ValueError(f"sampler {sampler.name!r}: trace must be True or False, not a path")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if kwargs.get("cache", "none") != "none":
        raise ValueError(f"sampler {sampler.name!r} searches over whole decodes and has no KV cache; use cache='none'")
    kwargs.pop("cache", None)
    kwargs.pop("progress", None)  # a search reports no per-step progress
    kwargs.pop("temperature", None)  # the search's own temperature drives its particles
    if constraints is not None:
        kwargs["constraints"] = constraints
    return sampler.run(model, ids, steps=steps, trace=bool(trace), **kwargs)
