"""The decoding loop, written once.

    for each block (semi-autoregressive decoding; one block by default):
        0. with a KV cache: one full forward stores the keys and values outside the block;
           its logits serve the block's first step (no second forward on the same ids)
        while the block's pace (tabes.blocks) gives a next step:
            1. masked  = masked positions of the block, per row
            2. rows, budget = the pace's: by default the rows with masks left, each asked for
               ceil(#masked / steps left in the block) (linear schedule); LLaDA 2's pace steps
               every row with its block schedule, and runs post-steps while edits go on
            3. result  = sampler.step(denoiser, state)    # forwards/backwards are counted
            4. commit result.tokens at result.commit (and result.edit); apply result.remask
               (never on given positions, never on a block's last step; counted); after an
               EOS, fill the row with EOS (LLaDA 2: freeze it); keep result.carry for the
               row's next step (StepState.carry)
            5. trace   = one record per row: positions, tokens, confidence, entropy, extras

Positions that are not masked on input are *given* and never change. Each block's last step
has a budget equal to everything still masked there, so no mask is left at the end (LLaDA 2's
pace: unless the row was frozen at its EOS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tabes.blocks import LinearPace, LLaDA2Blocks, LLaDA2Pace, finished_at_eos, plan_blocks, resolve_blocks
from tabes.cache import BlockCache, check_cache_mode, supports_cache
from tabes.protocol import CountingDenoiser, Denoiser, GenerationOutput, unwrap
from tabes.samplers import Sampler, get_sampler
from tabes.samplers.base import StepState


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
    blocks: str | LLaDA2Blocks = "tabes",
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
            at once: the row stops growing and spends no more passes. Under ``blocks="llada2"``:
            LLaDA 2's early stop instead (the row is frozen, its later masks stay masks).
        cache: ``"none"``, ``"prefix"`` or ``"dual"``: a block KV cache (:mod:`tabes.cache`),
            refreshed by one full forward at every block start; the block's steps run the
            model on the block's positions (``"prefix"``: and everything after them) only.
            The sampler then sees that window of positions only (its state, its trace fields
            other than ``positions``/``remasked``, its memory, reset at each block start).
            Needs a model with cache support.
        blocks: ``"tabes"`` (blocks from the first masked position, the model sees the whole
            sequence, a linear schedule per row), or ``"llada2"`` / a
            :class:`tabes.blocks.LLaDA2Blocks`: LLaDA 2's block refinement as diffusers'
            ``LLaDA2Pipeline`` runs it (aligned blocks, block-causal, each block's length spread
            over its steps, editing and post-steps with an editing sampler such as ``llada2``,
            EOS early stop); ``steps`` is then the steps per block times the blocks decoded.
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
    sampler, fixed = _checked(model, ids, sampler, steps, block_length, temperature, cache, region)
    start = time.perf_counter()
    mask_id = model.mask_id
    x = ids.clone()
    B, L = x.shape
    policy = resolve_blocks(blocks)
    plan = plan_blocks(~fixed, steps, block_length, aligned=policy is not None)
    counts, carry, ends = _Counts(B, x.device), _Carry(B, x.device), _Ends(B, x.device, policy, eos_id, fixed, mask_id)
    cond = _Carry(B, x.device) if getattr(model, "conditioned", False) else None  # a model's own memory (self-conditioning)
    records = _Trace(trace)
    advance, close_bar = _progress(progress, steps, sampler.name)
    step = 0
    try:
        for block, ((lo, hi), block_steps) in enumerate(plan):
            in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
            in_block[lo:hi] = True
            seen = L if policy is None else hi  # LLaDA 2: the model sees the sequence up to the block's end
            if policy is not None:
                carry.reset()  # a sampler's memory has the shape of the positions it saw, which grow by a block
            if cond is not None:
                cond.reset()  # a new block starts without the model's memory
            # 0. with a cache: the refresh forward; its logits serve the block's first step
            am = None if attention_mask is None else attention_mask[:, :seen]
            block_cache, win, fresh = _open_block(model, cache, x[:, :seen], (in_block & ~fixed)[:, :seen], (lo, hi), am, counts, carry)
            pace = LinearPace(block_steps) if policy is None else LLaDA2Pace(block_steps, hi - lo, policy.max_post_steps, _edits(sampler))
            s = 0
            # 1. masked positions of the block; 2. which rows step, with what budget (blocks.py)
            live = in_block & ~fixed  # the block's positions the loop may fill
            while (nxt := pace.next(masked := (x == mask_id) & live)) is not None:
                rows, budget = nxt
                r = slice(None) if rows.numel() == B else rows  # every row: slices instead of copies
                # with a cache the block's first step sees every position, as Fast-dLLM's does; later ones the window
                w = slice(0, seen) if fresh is not None and s == 0 else win
                if fresh is not None and s == 1:
                    carry.reset()  # a sampler's memory has the shape of the positions it saw
                # 3. the sampler's step, on the rows stepping
                state = StepState(
                    x=x[r, w],
                    maskable=masked[r, w],
                    fixed=fixed[r, w],
                    budget=budget,
                    step=step,
                    num_steps=steps,
                    t=pace.steps_left / block_steps,
                    steps_left=pace.steps_left,
                    temperature=temperature,
                    generator=generator,
                    attention_mask=None if attention_mask is None else attention_mask[r, w],
                    carry=carry.get(rows),
                    logits=None if fresh is None or s else fresh[rows],
                    block=in_block[w],
                    span=(lo - w.start, hi - w.start),
                )
                memory = None if cond is None else cond.get(rows)
                result = sampler.step(CountingDenoiser(model, rows, counts.forwards, counts.backwards, block_cache, memory), state)
                edits = _edit_mask(result, state, mask_id)
                commit, edit = ends.keep(rows, result.commit & state.maskable, edits)
                if sampler.fixed_budget and not torch.equal(commit.sum(-1), budget):
                    raise RuntimeError(f"sampler {sampler.name!r} committed {commit.sum(-1).tolist()} tokens, budget was {budget.tolist()}")
                # 4. commit (and edit), then optional remasking (never given positions, never the last step)
                xw = torch.where(changed := commit | edit, result.tokens, state.x)
                again = None
                if result.remask is not None and pace.steps_left > 1:
                    again = result.remask & ~state.fixed & in_block[w] & (xw != mask_id)
                    xw = xw.masked_fill(again, mask_id)
                xr = x[r]  # a view of x when every row steps
                xr[:, w] = xw
                if ends.fill_eos is not None or not isinstance(r, slice):
                    x[r] = ends.fill(xr, fixed[r])
                ends.after_step(x[:, :seen], rows, changed, result.tokens)
                counts.add_step(rows, result, again)
                carry.put(rows, result.carry)
                if cond is not None and result.prediction is not None:  # the block's logits condition the row's next step
                    cond.put(rows, result.prediction.logits[:, lo - w.start : hi - w.start].detach())
                # 5. trace; a caller watching the steps may end rows
                new = records.add(step, block, rows, state, result, commit, budget, w.start) if trace or on_step else []
                if on_step is not None and (ended := on_step(step, x, new)) is not None:
                    fixed = fixed | ended.to(fixed.device)[:, None]
                    live = in_block & ~fixed
                pace.after(edits is not None and bool(edits.any()), ends.all_finished)
                step, s = step + 1, s + 1
                advance(1)
            if s < block_steps:  # the block ended early: its unused steps count as done
                advance(block_steps - s)
                step += block_steps - s
            if ends.all_finished:
                break
    finally:
        records.close()
        close_bar()
    return counts.output(x, time.perf_counter() - start, records.records)


def _checked(
    model: Denoiser, ids: Tensor, sampler: Any, steps: int, block_length: int | None, temperature: float, cache: str, region: Tensor | None
) -> tuple[Any, Tensor]:
    """``generate``'s arguments checked (``ValueError`` names the bad one): ``(sampler, fixed)``,
    the sampler object and the (B, L) positions that never change (given, or outside ``region``)."""
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
    fixed = ids != model.mask_id  # (B, L) given positions
    if region is not None:
        L = ids.shape[1]
        if region.shape != (L,) or region.dtype != torch.bool:
            raise ValueError(f"region must be an (L,) = ({L},) bool tensor, got {tuple(region.shape)} {region.dtype}")
        fixed = fixed | ~region  # outside the region nothing changes, masks included
    return sampler, fixed


def _edits(sampler: Any) -> bool:
    """Whether the sampler may edit committed tokens (``StepResult.edit``; LLaDA 2's editing)."""
    return bool(getattr(sampler, "edits", False))


def _edit_mask(result: Any, state: StepState, mask_id: int) -> Tensor | None:
    """The positions a step edits: committed (not masked, not given) positions of the block."""
    if result.edit is None:
        return None
    return result.edit & ~state.fixed & state.block & (state.x != mask_id)


class _Ends:
    """How rows end at ``eos_id``: tabes' EOS fill under the default pace, LLaDA 2's early stop
    under ``blocks="llada2"`` (a finished row is frozen: its commits and edits are dropped)."""

    def __init__(
        self, batch: int, device: torch.device, policy: LLaDA2Blocks | None, eos_id: int | None, fixed: Tensor, mask_id: int
    ) -> None:
        self.fill_eos = eos_id if policy is None else None
        self.stop_eos = eos_id if policy is not None and policy.eos_early_stop else None
        self.mask_id = mask_id
        self.frozen = torch.zeros(batch, dtype=torch.bool, device=device)
        self.any_frozen = False
        free = (~fixed).any(0).nonzero()
        self.start = int(free[0]) if len(free) else fixed.shape[1]  # the first generated position

    def keep(self, rows: Tensor, commit: Tensor, edit: Tensor | None) -> tuple[Tensor, Tensor]:
        """The step's commits and edits, less those of frozen rows."""
        edit = torch.zeros_like(commit) if edit is None else edit
        if self.stop_eos is None or not self.any_frozen:  # nothing is frozen (yet)
            return commit, edit
        live = ~self.frozen[rows][:, None]
        return commit & live, edit & live

    def fill(self, xr: Tensor, fixed: Tensor) -> Tensor:
        """With the EOS fill: each row's masks after its first committed EOS become EOS."""
        if self.fill_eos is None:
            return xr
        ended = ((xr == self.fill_eos) & ~fixed).cumsum(-1) > 0
        return torch.where(ended & (xr == self.mask_id) & ~fixed, self.fill_eos, xr)

    def after_step(self, x: Tensor, rows: Tensor, changed: Tensor, tokens: Tensor) -> None:
        """With the early stop: freeze the rows that finished this step (``changed`` (R, W): the
        positions committed or edited, to ``tokens``)."""
        if self.stop_eos is None:
            return
        eos_hits = changed & (tokens == self.stop_eos)
        if not bool(eos_hits.any()):
            return
        committed = torch.zeros_like(self.frozen)
        committed[rows] = eos_hits.any(-1)
        self.frozen |= finished_at_eos(x, self.start, self.stop_eos, self.mask_id, committed)
        self.any_frozen = bool(self.frozen.any())

    @property
    def all_finished(self) -> bool:
        return self.any_frozen and bool(self.frozen.all())


class _Counts:
    """Per-row accounting of one call: passes, steps, remasked positions, steered steps."""

    def __init__(self, batch: int, device: torch.device) -> None:
        zeros = lambda: torch.zeros(batch, dtype=torch.long, device=device)
        self.forwards, self.backwards, self.steps, self.remasked = zeros(), zeros(), zeros(), zeros()
        self.steered: Tensor | None = None
        self._zeros = zeros

    def add_step(self, rows: Tensor, result: Any, remasked: Tensor | None) -> None:
        """Count one step of ``rows``; ``remasked`` (R, W) bool, the positions masked again."""
        if rows.numel() == self.steps.numel():  # every row (the rows are distinct): no index
            self.steps += 1
        else:
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
            if result.edit is not None:  # the positions this step asked to edit, and their new tokens
                pos_e = (result.edit[j] & ~state.fixed[j]).nonzero().squeeze(-1)
                rec["edited"], rec["edited_tokens"] = (pos_e + offset).tolist(), result.tokens[j, pos_e].tolist()
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
