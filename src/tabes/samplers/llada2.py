"""LLaDA 2's commit and edit rule (diffusers' ``BlockRefinementScheduler``, mask mode).

Each step, in the current block:

- **commit**: every masked position whose confidence exceeds ``threshold``, if there are at
  least the step's budget of them; otherwise the budget's most confident ones;
- **edit** (``editing_threshold > 0``): every committed, non-prompt position whose greedy token
  now differs from the one it holds, with confidence above ``editing_threshold``, takes the new
  token.

Confidence is LLaDA 2's: the float32 softmax probability of the greedy token (tabes' other
samplers rank by float64 probabilities), and each row's top-k is ``torch.topk`` over the block's
positions only, as the scheduler takes it. Run it with ``blocks="llada2"`` (block alignment,
block-causal forward, the block schedule, post-steps and EOS early stop: :mod:`tabes.blocks`) to
decode as ``LLaDA2Pipeline`` does; under the default pace it is a threshold rule with editing.
The mask token is never proposed (the pipeline's softmax keeps it; ``docs/llm.md``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from tabes.protocol import Denoiser, Prediction
from tabes.samplers.base import StepResult, StepState
from tabes.samplers.registry import register


@dataclass(frozen=True)
class LLaDA2Config:
    """threshold: commit every masked position above this confidence when there are at least the
    budget of them (> 1 forces top-k); editing_threshold: edit committed tokens whose new greedy
    token is above this confidence (0 turns editing off). Defaults: ``LLaDA2Pipeline``'s."""

    threshold: float = 0.7
    editing_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if not 0 <= self.editing_threshold <= 1:
            raise ValueError(f"editing_threshold must be in [0, 1] (0: no editing), got {self.editing_threshold}")


@register
class LLaDA2Sampler:
    """Adaptive: commits max(budget, #confidence > threshold) per step, and edits (see module)."""

    name: ClassVar[str] = "llada2"
    fixed_budget: ClassVar[bool] = False
    Config = LLaDA2Config

    def __init__(self, config: LLaDA2Config | None = None) -> None:
        self.config = config or LLaDA2Config()

    @property
    def edits(self) -> bool:
        return self.config.editing_threshold > 0

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        block = state.block if state.block is not None else torch.ones_like(state.maskable[0])
        # a block is one run of positions: slices (views), not index copies
        idx = slice(*state.span) if state.span is not None else block.nonzero().squeeze(-1)
        # the token and its float32 probability (the scheduler's sampled_probs), in the block only
        if state.temperature > 0:
            pred = state.predict(model)
            tok = pred.tokens[:, idx]
            conf = torch.softmax(pred.logits[:, idx].float(), dim=-1).gather(-1, tok[..., None]).squeeze(-1)  # (B, block)
        else:
            pred, tok, conf = _block_prediction(model, state, idx)
        commit = torch.zeros_like(state.maskable)
        c = torch.where(state.maskable[:, idx], conf, float("-inf"))  # (B, block)
        high = c > self.config.threshold
        for b, (k, n_high) in enumerate(zip(state.budget.tolist(), high.sum(-1).tolist())):
            if n_high >= k:
                commit[b, idx] |= high[b]
            elif k > 0:
                top = torch.topk(c[b], k).indices
                commit[b, top + idx.start if isinstance(idx, slice) else idx[top]] = True
        edit = None
        if self.edits:  # committed positions of the block (neither maskable nor given: no mask is left there)
            editable = ~(state.maskable[:, idx] | state.fixed[:, idx])
            edit = torch.zeros_like(state.maskable)
            edit[:, idx] = editable & (conf > self.config.editing_threshold) & (tok != state.x[:, idx])
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, edit=edit)


def _block_prediction(model: Denoiser, state: StepState, idx: torch.Tensor | slice) -> tuple[Prediction, torch.Tensor, torch.Tensor]:
    """Greedy proposals at the block's positions ``idx`` only, as the scheduler makes them: the argmax
    and its float32 softmax probability (held in ``confidence``; ``lse`` follows from it). The other
    positions keep their tokens, with confidence and entropy 0: no work on the prefix the model sees.
    Returns the prediction and the block's (B, n) tokens and float32 probabilities."""
    logits = state.logits if state.logits is not None else model.logits(state.x, attention_mask=state.attention_mask)
    logits[:, idx, model.mask_id] = float("-inf")  # this step's own logits: never the mask token
    lf = logits[:, idx].to(torch.promote_types(logits.dtype, torch.float32))
    top, tok = lf.max(-1)  # the argmax (the first maximal index) and its logit, at a third of argmax's cost on a CPU
    p = torch.softmax(lf.float(), dim=-1).gather(-1, tok[..., None]).squeeze(-1)  # float32, as the scheduler
    tokens = state.x.clone()
    tokens[:, idx] = tok
    pred = _BlockPrediction(logits, tokens, idx, top, p)
    return pred, tok, p


class _BlockPrediction(Prediction):
    """A :class:`Prediction` of the block's positions only, whose (B, L) ``confidence``, ``entropy``
    and ``lse`` are made on first use (the loop reads the tokens; a trace or a caller may read the
    rest): the confidence is the token's float32 probability (0 off the block), the entropy 0, and
    ``lse`` the token's logit less its log-probability (0 off the block)."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor, idx, top: torch.Tensor, p: torch.Tensor) -> None:
        self.logits, self.tokens = logits, tokens
        self._idx, self._top, self._p = idx, top, p

    def _full(self, dtype: torch.dtype, values: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros(self.tokens.shape, dtype=dtype, device=self.tokens.device)
        if values is not None:
            out[:, self._idx] = values
        return out

    @functools.cached_property
    def confidence(self) -> torch.Tensor:
        return self._full(torch.float64, self._p)

    @functools.cached_property
    def entropy(self) -> torch.Tensor:
        return self._full(torch.float32, None)

    @functools.cached_property
    def lse(self) -> torch.Tensor:
        return self._full(self._top.dtype, self._top - self._p.log())
