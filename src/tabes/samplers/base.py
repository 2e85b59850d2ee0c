"""The sampler interface: what the decoding loop hands a sampler and what it gets back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from tabes.protocol import Denoiser, Prediction, predict


@dataclass
class StepState:
    """Everything a sampler may look at in one denoising step (rows still decoding only).

    Attributes:
        x: (B, L) long, current ids; masked positions hold ``mask_id``.
        maskable: (B, L) bool, masked positions of the current block: the positions a
            sampler may commit this step.
        fixed: (B, L) bool, positions given by the caller; never changed.
        budget: (B,) long, tokens the schedule asks to commit this step (>= 1 where a row has
            masked positions).
        step: 0-based index of this step within the whole call.
        num_steps: T, total steps of the call.
        t: diffusion time of this step, in (0, 1]: 1 at a block's first step, 1/T at its last.
        temperature: 0 for greedy tokens, > 0 for Gumbel sampling.
        steps_left: steps left in the current block, this one included.
        generator: the only source of randomness a sampler may use.
        attention_mask: optional (B, L) bool, False on padding.
        carry: what this sampler returned as ``StepResult.carry`` at the row's previous step
            (rows of this step), or None at a row's first step: per-row memory across steps,
            e.g. the previous step's distributions (KLASS).
        logits: (B, L, V) logits of ``x`` from a forward the loop already ran and counted (a
            cached block's refresh forward, at the block's first step), or None.
            :meth:`predict` uses them instead of a new forward, as Fast-dLLM does.
        block: (L,) bool, the current block's positions, or None.
        span: ``(lo, hi)`` the block's positions as one run (``block`` is True exactly on
            ``lo:hi``), when the loop knows it, or None.
    """

    x: Tensor
    maskable: Tensor
    fixed: Tensor
    budget: Tensor
    step: int
    num_steps: int
    t: float
    temperature: float
    generator: torch.Generator | None
    attention_mask: Tensor | None = None
    steps_left: int = 1
    carry: Tensor | None = None
    logits: Tensor | None = None
    block: Tensor | None = None
    span: tuple[int, int] | None = None

    def predict(self, model: Denoiser, x: Tensor | None = None, logits: Tensor | None = None) -> Prediction:
        """One forward pass on ``x`` (default: the current ids, whose ``self.logits`` are reused
        when the loop has them) with this step's temperature."""
        if x is None:
            x, logits = self.x, self.logits if logits is None else logits
        where = x == model.mask_id
        return predict(
            model,
            x,
            where=where,
            temperature=self.temperature,
            generator=self.generator,
            attention_mask=self.attention_mask,
            logits=logits,
        )


@dataclass
class StepResult:
    """What a sampler decides in one step.

    Attributes:
        commit: (B, L) bool, positions to unmask now (a subset of ``maskable``).
        tokens: (B, L) long, the token for each committed position (ignored elsewhere).
        prediction: the forward pass the decision used, for tracing.
        remask: optional (B, L) bool, previously committed positions to mask again (ReMDM).
        edit: optional (B, L) bool, committed positions of the block whose token becomes
            ``tokens`` (LLaDA 2's editing; a sampler that edits has a true ``edits`` attribute).
        info: per-row extra trace fields, each a list of length B of JSON-able values.
        carry: optional (B, ...) tensor the loop hands back as ``StepState.carry`` at each
            row's next step.
    """

    commit: Tensor
    tokens: Tensor
    prediction: Prediction
    remask: Tensor | None = None
    edit: Tensor | None = None
    info: dict[str, list[Any]] = field(default_factory=dict)
    carry: Tensor | None = None


class Sampler(Protocol):
    """A decoding rule. One class per file, registered by name, with a frozen config.

    ``fixed_budget`` is True when each step commits exactly ``state.budget`` tokens per row;
    adaptive samplers commit at least that many (so the call still ends in ``num_steps``) and
    may finish early. A sampler that draws from ``state.generator`` even at temperature 0 has
    a true ``stochastic`` attribute (absent means False): its draws depend on the batch shape,
    so a server decodes it alone.
    """

    name: ClassVar[str]
    fixed_budget: ClassVar[bool]
    config: Any

    def step(self, model: Denoiser, state: StepState) -> StepResult: ...


def top_k_mask(scores: Tensor, allowed: Tensor, k: Tensor) -> Tensor:
    """Select the ``k[b]`` highest-scoring allowed positions of each row.

    Args:
        scores: (B, L) float; higher is better (float64 scores are compared in float64).
        allowed: (B, L) bool.
        k: (B,) long, clamped to the number of allowed positions.

    Returns:
        (B, L) bool mask. Each row is chosen on its own by ``torch.topk`` over the row with
        ``-inf`` outside ``allowed``, exactly as LLaDA's ``generate.py`` and Fast-dLLM choose
        (``torch.topk(confidence[j], k)``), so exact ties (probabilities that round to 1.0) fall
        as they fall there, and a row's choice does not depend on the batch it is decoded in.
    """
    s = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(~allowed, float("-inf"))  # float64 stays float64
    k = torch.minimum(k, allowed.sum(-1))
    out = torch.zeros_like(allowed)
    for b, kb in enumerate(k.tolist()):
        if kb > 0:
            out[b, torch.topk(s[b], kb).indices] = True
    return out & allowed


def config_fields(config: Any) -> dict[str, Any]:
    """The fields of a sampler config as a plain dict."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


def uniform(n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n,) uniform noise drawn from ``generator`` (on the generator's own device, so a CPU
    generator also drives a CUDA decode) and moved to ``device``."""
    src = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, dtype=dtype, device=src).to(device)


def contradicted(logits: Tensor, x: Tensor, committed: Tensor, threshold: float, per_row: int = 1, *, mask_id: int | None = None) -> Tensor:
    """Committed tokens that a forward contradicts: (B, L) bool.

    A committed position i is contradicted when the forward's probability of its own token,
    p_i(x_i), is below ``threshold`` and another token is the forward's argmax; each row
    returns at most ``per_row`` of them, the least probable first. The mask token never
    counts: give its id as ``mask_id`` when the logits are raw (it is then set to -inf here,
    on a float copy), or pass logits whose mask logit is already -inf.

    Shapes: logits (B, L, V), x (B, L) long, committed (B, L) bool.
    """
    if threshold <= 0 or not committed.any():
        return torch.zeros_like(committed)
    lf = logits.float()
    if mask_id is not None:
        lf = lf.clone() if lf is logits else lf  # never write into the caller's logits
        lf[..., mask_id] = float("-inf")
    own = lf.gather(-1, x.clamp_max(lf.shape[-1] - 1)[..., None]).squeeze(-1) - torch.logsumexp(lf, dim=-1)  # (B, L) log p(x_i)
    bad = committed & (own < math.log(threshold)) & (lf.argmax(-1) != x)
    return top_k_mask(-own, bad, bad.sum(-1).clamp_max(per_row))
