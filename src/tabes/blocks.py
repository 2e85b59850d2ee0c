"""How the decoding loop paces a block: which rows step, with what budget, and when the block ends.

Two paces, chosen by :func:`tabes.generate.generate`'s ``blocks``:

- ``"tabes"`` (the default; LLaDA's ``generate.py`` and Fast-dLLM): blocks start at the first
  masked position; the model sees the whole sequence; a block runs its share of ``steps``, each
  step committing ``ceil(#masked / steps left)`` per row; a row with no masked position left sits
  out, and the block ends when no row has one.
- :class:`LLaDA2Blocks` (LLaDA 2.x, as diffusers' ``LLaDA2Pipeline`` with
  ``BlockRefinementScheduler`` decodes it): blocks are aligned to multiples of ``block_length``
  from position 0 (the block holding the first masked position is the first decoded, the
  prompt's tail sits in it as given tokens); the model sees the sequence up to the block's end
  only (block-causal); step ``s`` asks for ``schedule[s]`` tokens, the block's length spread
  evenly over its steps; every row steps while the block is open (a sampler that edits committed
  tokens, ``llada2:editing_threshold=...``, edits rows that have no mask left); once no row has a
  mask in the block, up to ``max_post_steps`` more steps run while any row is edited; a row that
  commits EOS with no mask between its prompt and that EOS is finished (frozen, its later masks
  stay masks), and the decode stops when every row is. The block stays open while any row,
  finished or not, has a mask in it, as in the pipeline, whose counts are batch-wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LLaDA2Blocks:
    """LLaDA 2's block refinement (see the module docstring); ``"llada2"`` is this with its defaults.

    Attributes:
        max_post_steps: steps after the block's last mask while edits go on (diffusers' default 16).
        eos_early_stop: freeze a row at its EOS (``generate``'s ``eos_id``) and stop when all are.
    """

    max_post_steps: int = 16
    eos_early_stop: bool = True

    def __post_init__(self) -> None:
        if self.max_post_steps < 0:
            raise ValueError(f"max_post_steps must be >= 0, got {self.max_post_steps}")


def resolve_blocks(blocks: str | LLaDA2Blocks) -> LLaDA2Blocks | None:
    """None for the default pace, the :class:`LLaDA2Blocks` otherwise; ``ValueError`` names a bad value."""
    if isinstance(blocks, LLaDA2Blocks):
        return blocks
    if blocks == "tabes":
        return None
    if blocks == "llada2":
        return LLaDA2Blocks()
    raise ValueError(f"blocks must be 'tabes', 'llada2' or a LLaDA2Blocks, got {blocks!r}")


def block_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens asked for at each of a block's ``steps``: ``block_length`` spread evenly, the first
    steps taking the remainder (``BlockRefinementScheduler.get_num_transfer_tokens``'s rule)."""
    base, rem = divmod(block_length, steps)
    return [base + (i < rem) for i in range(steps)]


class LinearPace:
    """The default pace of one block: ``steps`` steps, ``ceil(#masked / steps left)`` each."""

    def __init__(self, steps: int) -> None:
        self.steps, self.s = steps, 0

    @property
    def steps_left(self) -> int:
        return self.steps - self.s

    def next(self, masked: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(rows, budget)`` for the next step, or None when the block is over; ``masked`` (B, L):
        the block's masked positions of every row (LLaDA 2's frozen rows included: the loop drops
        their commits, not their masks)."""
        n = masked.sum(-1)
        rows = (n > 0).nonzero().squeeze(-1)
        if self.s >= self.steps or rows.numel() == 0:
            return None
        return rows, torch.div(n[rows] + self.steps_left - 1, self.steps_left, rounding_mode="floor")

    def after(self, edited: bool, finished_all: bool) -> None:
        self.s += 1


class LLaDA2Pace:
    """One block under :class:`LLaDA2Blocks` (the pipeline's inner loop, step for step)."""

    def __init__(self, steps: int, block_length: int, max_post_steps: int, edits: bool) -> None:
        self.steps, self.schedule, self.max_post, self.edits = steps, block_schedule(block_length, steps), max_post_steps, edits
        self.s = self.post = 0
        self.masks = self.open = True
        self._rows: Tensor | None = None

    @property
    def steps_left(self) -> int:
        return max(1, self.steps - self.s)

    def next(self, masked: Tensor) -> tuple[Tensor, Tensor] | None:
        if not self.open:
            return None
        self.masks = bool(masked.any())  # batch-wide, finished rows included
        self.post += not self.masks
        n = masked.sum(-1)
        if self._rows is None:  # every row steps, every step (the pipeline's batch-wide counts)
            self._rows = torch.arange(masked.shape[0], device=masked.device)
        rows = self._rows
        if self.s >= self.steps - 1:  # the last step takes what is left (the schedule's own share, unless a sampler remasked)
            return rows, n
        k = self.schedule[self.s] if self.masks else 0
        return rows, torch.clamp(n, max=k)

    def after(self, edited: bool, finished_all: bool) -> None:
        """``BlockRefinementScheduler.check_block_should_continue``'s rule."""
        if self.masks:
            self.s += 1
        out_of_steps = self.masks and self.s >= self.steps
        nothing_to_edit = not self.masks and (not self.edits or not edited or self.post > self.max_post)
        self.open = not (finished_all or out_of_steps or nothing_to_edit)


def plan_blocks(masked: Tensor, steps: int, block_length: int | None, aligned: bool = False) -> list[tuple[tuple[int, int], int]]:
    """The blocks of a decode and each block's share of the steps.

    ``masked`` (B, L) bool: the positions to generate. Blocks of ``block_length`` positions
    start at the first position masked in any row (``aligned``: at the multiple of
    ``block_length`` at or before it, as LLaDA 2 aligns them), one block to the end when None;
    the ``steps`` are split as evenly as possible, earlier blocks taking the remainder. Returns
    ``[((lo, hi), block_steps), ...]``; ``ValueError`` if there are fewer steps than blocks.
    """
    L = masked.shape[1]
    masked_any = masked.any(0).nonzero()
    first = int(masked_any[0]) if len(masked_any) else L
    if block_length is not None and aligned:
        first -= first % block_length
    spans = [(first, L)] if block_length is None else [(lo, min(lo + block_length, L)) for lo in range(first, L, block_length)]
    if steps < len(spans):
        raise ValueError(f"steps ({steps}) must be at least the number of blocks ({len(spans)})")
    return [(span, steps // len(spans) + (i < steps % len(spans))) for i, span in enumerate(spans)]


def finished_at_eos(x: Tensor, start: int, eos_id: int, mask_id: int, committed_eos: Tensor) -> Tensor:
    """(B,) rows finished now (``BlockRefinementScheduler.check_eos_finished``'s rule): the row
    committed EOS this step (``committed_eos`` (B,) bool), its first EOS lies at or after the first
    generated position ``start``, and no mask lies between ``start`` and that EOS. ``x`` (B, L)."""
    L = x.shape[1]
    pos = torch.arange(L, device=x.device)
    is_eos = x == eos_id
    first = torch.where(is_eos.any(-1), is_eos.long().argmax(-1), torch.full((x.shape[0],), L, device=x.device))
    gap = ((x == mask_id) & (pos >= start) & (pos < first[:, None])).any(-1)
    return committed_eos & (first < L) & (first >= start) & ~gap
