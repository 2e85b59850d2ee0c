"""The decoding loop, written once.

    for each block (semi-autoregressive decoding; one block by default):
        0. with a KV cache: one full forward stores the keys and values outside the block;
           its logits serve the block's first step (no second forward on the same ids)
        for each of the block's steps:
            1. masked  = masked positions of the block, per row; rows with none sit out
            2. budget  = ceil(#masked / steps left in the block), per row (linear schedule)
            3. result  = sampler.step(denoiser, state)    # forwards/backwards are counted
            4. commit result.tokens at result.commit; apply result.remask (never on given
               positions, never on a block's last step; counted); after an EOS, fill the row with EOS;
               keep result.carry for the row's next step (StepState.carry)
            5. trace   = one record per row: positions, tokens, confidence, entropy, extras

Positions that are not masked on input are *given* and never change. Each block's last step
has a budget equal to everything still masked there, so no mask is left at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tabes.cache import BlockCache, check_cache_mode, supports_cache
from tabes.protocol import CountingDenoiser, Denoiser, GenerationOutput, unwrap
from tabes.samplers import Sampler, get_sampler
from tabes.samplers.base import StepState


def plan_blocks(masked: Tensor, steps: int, block_length: int | None) -> list[tuple[tuple[int, int], int]]:
    """The blocks of a decode and each block's share of the steps.

    ``masked`` (B, L) bool: the positions to generate. Blocks of ``block_length`` positions
    start at the first position masked in any row (one block to the end when None); the
    ``steps`` are split as evenly as possible, earlier blocks taking the remainder. Returns
    ``[((lo, hi), block_steps), ...]``; ``ValueError`` if there are fewer steps than blocks.
    """
    L = masked.shape[1]
    masked_any = masked.any(0).nonzero()
    first = int(masked_any[0]) if len(masked_any) else L
    spans = [(first, L)] if block_length is None else [(lo, min(lo + block_length, L)) for lo in range(first, L, block_length)]
    if steps < len(spans):
        raise ValueError(f"steps ({steps}) must be at least the number of blocks ({len(spans)})")
    return [(span, steps // len(spans) + (i < steps % len(spans))) for i, span in enumerate(spans)]


@torch.no_grad()
def generate(
    model: Denoiser,
    ids: Tensor,
    *,
    sampler: str | Sampler = "confidence",
    steps: int,
    block_length: int | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
    trace: bool | str | Path | None = None,
    progress: bool | Callable[[int], object] = False,
    region: Tensor | None = None,
    eos_id: int | None = None,
    cache: str = "none",
    on_step: Callable[[int, Tensor, list[dict[str, Any]]], Tensor | None] | None = None,
) -> GenerationOutput:
    """Unmask every masked position of ``ids`` in ``steps`` denoising steps.

    Args:
        model: any :class:`tabes.protocol.Denoiser`.
        ids: (B, L) long; ``model.mask_id`` marks the positions to generate, every other
            position is given and never changes.
        sampler: a sampler object or a registry spec such as ``"margin"`` or ``"boe:rho=0.25"``.
        steps: total denoising steps T (> 0); split as evenly as possible over the blocks.
        block_length: decode left to right in blocks of this many positions, starting at the
            first masked position of the batch; None decodes all positions as one block.
        temperature: 0 for greedy tokens, > 0 for Gumbel sampling.
        generator: the only source of randomness (Gumbel noise, random orders).
        attention_mask: optional (B, L) bool, False on padding keys.
        trace: True to collect per-step records in ``output.trace``; a path to write them as
            JSONL (one line per row and step).
        progress: True for a progress bar over steps; a callable is called with the number of
            steps done after each step instead (e.g. a caller's own bar across batches).
        region: optional (L,) bool; only masked positions inside it are decoded, masked
            positions outside it stay masked (e.g. one block, or an infilling span).
        eos_id: once a row commits this token, every masked position after it is set to it
            at once: the row stops growing and spends no more passes.
        cache: ``"none"``, ``"prefix"`` or ``"dual"``: a block KV cache (:mod:`tabes.cache`),
            refreshed by one full forward at every block start; the block's steps run the
            model on the block's positions (``"prefix"``: and everything after them) only.
            The sampler then sees that window of positions only (its state, its trace fields
            other than ``positions``/``remasked``, its memory, reset at each block start).
            Needs a model with cache support.
        on_step: called after every step with ``(step, x, records)``: the (B, L) ids so far
            (read-only) and that step's trace records (as with ``trace=True``). It may return a
            (B,) bool tensor of rows to end now: their masked positions stay masked and they
            sit out every later step (a server frees a disconnected client's row this way).

    Returns:
        :class:`tabes.protocol.GenerationOutput` with (B, L) sequences and per-row counts.

    Example:
        >>> out = generate(model, ids, sampler="margin", steps=81)  # doctest: +SKIP
        >>> out.sequences.shape, out.forwards
    """
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if block_length is not None and block_length <= 0:
        raise ValueError(f"block_length must be positive or None, got {block_length}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids must be a (B, L) long tensor, got shape {tuple(ids.shape)} and dtype {ids.dtype}")
    check_cache_mode(cache)
    if cache != "none" and not supports_cache(unwrap(model)):
        raise ValueError(f"cache={cache!r}: {type(unwrap(model)).__name__} has no KV cache support; use cache='none'")
    sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
    if not hasattr(sampler, "step"):
        raise ValueError(f"sampler {sampler.name!r} searches over whole decodes: call tabes.decode, not the step loop")
    start = time.perf_counter()
    mask_id = model.mask_id
    x = ids.clone()
    B, L = x.shape
    fixed = x != mask_id  # (B, L) given positions
    if region is not None:
        if region.shape != (L,) or region.dtype != torch.bool:
            raise ValueError(f"region must be an (L,) = ({L},) bool tensor, got {tuple(region.shape)} {region.dtype}")
        fixed = fixed | ~region  # outside the region nothing changes, masks included
    plan = plan_blocks(~fixed, steps, block_length)
    counts, carry = _Counts(B, x.device), _Carry(B, x.device)
    records = _Trace(trace)
    advance, close_bar = _progress(progress, steps, sampler.name)
    step = 0
    try:
        for block, ((lo, hi), block_steps) in enumerate(plan):
            in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
            in_block[lo:hi] = True
            # 0. with a cache: the refresh forward; its logits serve the block's first step
            block_cache, win, fresh = _open_block(model, cache, x, in_block & ~fixed, (lo, hi), attention_mask, counts, carry)
            for s in range(block_steps):
                # with a cache the block's first step sees every position, as Fast-dLLM's does; later ones the window
                w = slice(0, L) if fresh is not None and s == 0 else win
                if fresh is not None and s == 1:
                    carry.reset()  # a sampler's memory has the shape of the positions it saw
                # 1. masked positions of the block; rows with none sit this step out
                masked = (x == mask_id) & in_block & ~fixed  # (B, L)
                n_masked = masked.sum(-1)
                rows = (n_masked > 0).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    advance(block_steps - s)
                    step += block_steps - s
                    break
                # 2. linear schedule: spread what is left over the steps left
                steps_left = block_steps - s
                budget = torch.div(n_masked[rows] + steps_left - 1, steps_left, rounding_mode="floor")
                # 3. the sampler's step, on the rows still decoding
                state = StepState(
                    x=x[rows, w],
                    maskable=masked[rows, w],
                    fixed=fixed[rows, w],
                    budget=budget,
                    step=step,
                    num_steps=steps,
                    t=steps_left / block_steps,
                    steps_left=steps_left,
                    temperature=temperature,
                    generator=generator,
                    attention_mask=None if attention_mask is None else attention_mask[rows, w],
                    carry=carry.get(rows),
                    logits=None if fresh is None or s else fresh[rows],
                )
                result = sampler.step(CountingDenoiser(model, rows, counts.forwards, counts.backwards, block_cache), state)
                commit = result.commit & state.maskable
                if sampler.fixed_budget and not torch.equal(commit.sum(-1), budget):
                    raise RuntimeError(f"sampler {sampler.name!r} committed {commit.sum(-1).tolist()} tokens, budget was {budget.tolist()}")
                # 4. commit, then optional remasking (never given positions, never the last step)
                xw = torch.where(commit, result.tokens, state.x)
                again = None
                if result.remask is not None and steps_left > 1:
                    again = result.remask & ~state.fixed & in_block[w] & (xw != mask_id)
                    xw = xw.masked_fill(again, mask_id)
                xr = x[rows]
                xr[:, w] = xw
                if eos_id is not None:  # a row that has ended stops growing: fill its later masks with EOS
                    ended = ((xr == eos_id) & ~fixed[rows]).cumsum(-1) > 0
                    xr = torch.where(ended & (xr == mask_id) & ~fixed[rows], eos_id, xr)
                x[rows] = xr
                counts.add_step(rows, result, again)
                carry.put(rows, result.carry)
                # 5. trace; a caller watching the steps may end rows
                new = records.add(step, block, rows, state, result, commit, budget, w.start) if trace or on_step else []
                if on_step is not None and (ended := on_step(step, x, new)) is not None:
                    fixed = fixed | ended.to(fixed.device)[:, None]
                step += 1
                advance(1)
    finally:
        records.close()
        close_bar()
    return counts.output(x, time.perf_counter() - start, records.records)


class _Counts:
    """Per-row accounting of one call: passes, steps, remasked positions, steered steps."""

    def __init__(self, batch: int, device: torch.device) -> None:
        zeros = lambda: torch.zeros(batch, dtype=torch.long, device=device)
        self.forwards, self.backwards, self.steps, self.remasked = zeros(), zeros(), zeros(), zeros()
        self.steered: Tensor | None = None
        self._zeros = zeros

    def add_step(self, rows: Tensor, result: Any, remasked: Tensor | None) -> None:
        """Count one step of ``rows``; ``remasked`` (R, W) bool, the positions masked again."""
        self.steps[rows] += 1
        if remasked is not None:
            self.remasked[rows] += remasked.sum(-1)
        if "steered" in result.info:
            if self.steered is None:
                self.steered = self._zeros()
            self.steered[rows] += torch.tensor(result.info["steered"], dtype=torch.long, device=rows.device)

    def output(self, x: Tensor, seconds: float, trace: list[dict[str, Any]]) -> GenerationOutput:
        return GenerationOutput(
            sequences=x,
            forwards=self.forwards,
            backwards=self.backwards,
            steps=self.steps,
            seconds=seconds,
            trace=trace,
            remasked=self.remasked,
            steered=self.steered,
        )


class _Carry:
    """Each row's sampler memory from its previous step (``StepResult.carry``)."""

    def __init__(self, batch: int, device: torch.device) -> None:
        self.value: Tensor | None = None  # (B, ...)
        self.has = torch.zeros(batch, dtype=torch.bool, device=device)

    def get(self, rows: Tensor) -> Tensor | None:
        """The rows' memory, or None unless every one of them has some."""
        return None if self.value is None or not bool(self.has[rows].all()) else self.value[rows]

    def put(self, rows: Tensor, value: Tensor | None) -> None:
        if value is None:
            return
        if self.value is None:
            self.value = value.new_zeros((self.has.shape[0], *value.shape[1:]))
        self.value[rows] = value
        self.has[rows] = True

    def reset(self) -> None:
        self.value = None
        self.has = torch.zeros_like(self.has)


class _Trace:
    """Per-step records, in memory or written as JSONL to a path (``generate``'s ``trace``)."""

    def __init__(self, trace: bool | str | Path | None) -> None:
        self.records: list[dict[str, Any]] = []
        self.sink = open(trace, "w") if isinstance(trace, (str, Path)) else None  # noqa: SIM115
        self.keep = bool(trace) and self.sink is None  # records made only for a watcher are not kept

    def add(
        self, step: int, block: int, rows: Tensor, state: StepState, result: Any, commit: Tensor, budget: Tensor, offset: int
    ) -> list[dict[str, Any]]:
        """One record per row of this step, returned; positions are shifted by the window's ``offset``."""
        new = []
        pred = result.prediction
        for j, r in enumerate(rows.tolist()):
            pos = commit[j].nonzero().squeeze(-1)
            rec = {
                "step": step,
                "block": block,
                "row": r,
                "t": state.t,
                "budget": int(budget[j]),
                "positions": (pos + offset).tolist(),
                "tokens": result.tokens[j, pos].tolist(),
                "confidence": [round(v, 6) for v in pred.confidence[j, pos].tolist()],
                "entropy": [round(v, 6) for v in pred.entropy[j, pos].tolist()],
                "masked_entropy": round(float(pred.entropy[j][state.maskable[j]].sum()), 6),
            }
            if result.remask is not None:
                rec["remasked"] = ((result.remask[j] & ~state.fixed[j]).nonzero().squeeze(-1) + offset).tolist()
            rec.update({k: v[j] for k, v in result.info.items()})
            if self.sink is not None:
                self.sink.write(json.dumps(rec) + "\n")
            elif self.keep:
                self.records.append(rec)
            new.append(rec)
        return new

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def _progress(progress: bool | Callable[[int], object], steps: int, name: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    """``(advance, close)``: a caller's callable, a progress bar over ``steps``, or no-ops."""
    if callable(progress):
        return progress, lambda: None
    if progress:
        from tabes.progress import progress_bar

        bar = progress_bar(steps, f"decoding ({name})", "step")
        return bar.update, bar.close
    return (lambda n: None), (lambda: None)


def _open_block(
    model: Denoiser,
    cache: str,
    x: Tensor,
    block_masks: Tensor,
    span: tuple[int, int],
    attention_mask: Tensor | None,
    counts: _Counts,
    carry: _Carry,
) -> tuple[BlockCache | None, slice, Tensor | None]:
    """Start a block: ``(block_cache, window, fresh)``.

    Without a cache: ``(None, all positions, None)``. With one, the refresh forward runs for the
    rows with masked positions in the block (``block_masks`` (L,) bool: the block's positions
    that may be generated) and is counted; the window is the cache's query positions, and
    ``fresh`` (B, L, V) holds the refresh forward's logits for the block's first step, which sees
    the whole sequence (Fast-dLLM's semantics: no second forward on the same ids, and that
    step's top-k over the whole row). A sampler's memory is reset.
    """
    L = x.shape[1]
    todo = ((x == model.mask_id) & block_masks).any(-1).nonzero().squeeze(-1)
    if cache == "none" or not todo.numel():
        return None, slice(0, L), None
    block_cache = BlockCache(unwrap(model), cache, L, span, x.shape[0], device=x.device)
    block_cache.fill(x, todo, attention_mask)
    counts.forwards[todo] += 1
    carry.reset()
    return block_cache, slice(block_cache.lo, block_cache.hi), block_cache.stale
