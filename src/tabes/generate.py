"""The decoding loop, written once.

    for each block (semi-autoregressive decoding; one block by default):
        0. with a KV cache: one full forward stores the keys and values outside the block
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
    forwards = torch.zeros(B, dtype=torch.long, device=x.device)
    backwards = torch.zeros(B, dtype=torch.long, device=x.device)
    nsteps = torch.zeros(B, dtype=torch.long, device=x.device)
    remasked = torch.zeros(B, dtype=torch.long, device=x.device)
    steered: Tensor | None = None
    records: list[dict[str, Any]] = []
    carry: Tensor | None = None  # (B, ...) each row's sampler memory from its previous step
    has_carry = torch.zeros(B, dtype=torch.bool, device=x.device)
    sink = open(trace, "w") if isinstance(trace, (str, Path)) else None  # noqa: SIM115

    if region is not None:
        if region.shape != (L,) or region.dtype != torch.bool:
            raise ValueError(f"region must be an (L,) = ({L},) bool tensor, got {tuple(region.shape)} {region.dtype}")
        fixed = fixed | ~region  # outside the region nothing changes, masks included
    plan = plan_blocks(~fixed, steps, block_length)
    bar = advance = None
    if callable(progress):
        advance = progress
    elif progress:
        from tabes.progress import progress_bar

        bar = progress_bar(steps, f"decoding ({sampler.name})", "step")
        advance = bar.update
    step = 0
    try:
        for block, ((lo, hi), block_steps) in enumerate(plan):
            in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
            in_block[lo:hi] = True
            block_cache = None
            win = slice(0, L)  # the positions the sampler sees: all, or with a cache the query window
            if cache != "none":  # the refresh forward: one full pass per block, for the rows with work in it
                todo = (((x == mask_id) & in_block & ~fixed).any(-1)).nonzero().squeeze(-1)
                if todo.numel():
                    block_cache = BlockCache(unwrap(model), cache, L, (lo, hi), B, device=x.device)
                    block_cache.fill(x, todo, attention_mask)
                    forwards[todo] += 1
                    win = slice(block_cache.lo, block_cache.hi)
                    carry, has_carry = None, torch.zeros_like(has_carry)  # a sampler's memory has the window's shape
            for s in range(block_steps):
                # 1. masked positions of the block; rows with none sit this step out
                masked = (x == mask_id) & in_block & ~fixed  # (B, L)
                n_masked = masked.sum(-1)
                rows = (n_masked > 0).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    if advance is not None:
                        advance(block_steps - s)
                    step += block_steps - s
                    break
                # 2. linear schedule: spread what is left over the steps left
                steps_left = block_steps - s
                budget = torch.div(n_masked[rows] + steps_left - 1, steps_left, rounding_mode="floor")
                # 3. the sampler's step, on the rows still decoding
                state = StepState(
                    x=x[rows, win],
                    maskable=masked[rows, win],
                    fixed=fixed[rows, win],
                    budget=budget,
                    step=step,
                    num_steps=steps,
                    t=steps_left / block_steps,
                    steps_left=steps_left,
                    temperature=temperature,
                    generator=generator,
                    attention_mask=None if attention_mask is None else attention_mask[rows, win],
                    carry=None if carry is None or not bool(has_carry[rows].all()) else carry[rows],
                )
                counted = CountingDenoiser(model, rows, forwards, backwards, block_cache)
                result = sampler.step(counted, state)
                commit = result.commit & state.maskable
                if sampler.fixed_budget and not torch.equal(commit.sum(-1), budget):
                    raise RuntimeError(f"sampler {sampler.name!r} committed {commit.sum(-1).tolist()} tokens, budget was {budget.tolist()}")
                # 4. commit, then optional remasking (never given positions, never the last step)
                xw = torch.where(commit, result.tokens, state.x)
                if result.remask is not None and steps_left > 1:
                    again = result.remask & ~state.fixed & in_block[win] & (xw != mask_id)
                    remasked[rows] += again.sum(-1)
                    xw = xw.masked_fill(again, mask_id)
                xr = x[rows]
                xr[:, win] = xw
                if eos_id is not None:  # a row that has ended stops growing: fill its later masks with EOS
                    ended = ((xr == eos_id) & ~fixed[rows]).cumsum(-1) > 0
                    xr = torch.where(ended & (xr == mask_id) & ~fixed[rows], eos_id, xr)
                x[rows] = xr
                nsteps[rows] += 1
                if "steered" in result.info:
                    if steered is None:
                        steered = torch.zeros(B, dtype=torch.long, device=x.device)
                    steered[rows] += torch.tensor(result.info["steered"], dtype=torch.long, device=x.device)
                if result.carry is not None:
                    if carry is None:
                        carry = result.carry.new_zeros((B, *result.carry.shape[1:]))
                    carry[rows] = result.carry
                    has_carry[rows] = True
                # 5. trace
                if trace:
                    pred = result.prediction
                    for j, r in enumerate(rows.tolist()):
                        pos = commit[j].nonzero().squeeze(-1)
                        rec = {
                            "step": step,
                            "block": block,
                            "row": r,
                            "t": state.t,
                            "budget": int(budget[j]),
                            "positions": (pos + win.start).tolist(),
                            "tokens": result.tokens[j, pos].tolist(),
                            "confidence": [round(v, 6) for v in pred.confidence[j, pos].tolist()],
                            "entropy": [round(v, 6) for v in pred.entropy[j, pos].tolist()],
                            "masked_entropy": round(float(pred.entropy[j][state.maskable[j]].sum()), 6),
                        }
                        if result.remask is not None:
                            rec["remasked"] = ((result.remask[j] & ~state.fixed[j]).nonzero().squeeze(-1) + win.start).tolist()
                        rec.update({k: v[j] for k, v in result.info.items()})
                        if sink is not None:
                            sink.write(json.dumps(rec) + "\n")
                        else:
                            records.append(rec)
                step += 1
                if advance is not None:
                    advance(1)
    finally:
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    return GenerationOutput(
        sequences=x,
        forwards=forwards,
        backwards=backwards,
        steps=nsteps,
        seconds=time.perf_counter() - start,
        trace=records,
        remasked=remasked,
        steered=steered,
    )
