"""``dfs``: a complete depth-first search whose branching rule is a model's ranking.

A decode commits what the model ranks first and never takes it back, so one wrong guess on a
hard puzzle is fatal. ``dfs`` keeps the model as the guide and adds what search people use:
every node is a partial sequence; a node that breaks a rule is pruned and the search backtracks
to its next sibling. It works for any task that states its rules as :class:`Constraints`
(Sudoku's are :class:`tabes.tasks.sudoku.rules.SudokuRules`).

At each node (one per unfinished row and round, the rows' forwards batched):

1. ``propagate`` (option): the task's own deductions (Sudoku: naked and hidden singles);
2. prune: a contradiction, or an undecided position with no allowed token, is a dead end (one
   backtrack);
3. no undecided position left: solved;
4. branch: the ``rule`` sampler's step, with budget 1, on the model whose logits are restricted
   to the allowed tokens, picks the position; its tokens are tried in the (restricted)
   model's probability order, most probable first. ``rule=mrv`` is the model-free
   minimum-remaining-values rule: the position with the fewest allowed tokens, tokens in id
   order, no forward at all.

``fill`` (> 0) also commits, in every child, the other undecided positions whose restricted
probability exceeds it (most probable first, each only while still allowed), as the step loop
commits several tokens a step. Those are not choices: a contradiction below backtracks to the
last real choice, so with ``fill`` the search is no longer complete.

The search gives up on a row after ``max_nodes`` expanded nodes. Per row, the output's
``search`` holds ``nodes`` (expanded nodes), ``backtracks`` (dead ends), ``solved`` and
``gave_up``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from tabes.protocol import CountingDenoiser, Denoiser, GenerationOutput, select_rows
from tabes.samplers import get_sampler, register
from tabes.samplers.base import StepState

MODEL_FREE = "mrv"


class Constraints(Protocol):
    """A task's rules, for a search. ``x`` (B, L) long holds the mask id at undecided positions."""

    def allowed(self, x: Tensor) -> Tensor:
        """(B, L) -> (B, L, V) bool: the tokens each position may hold given every other decided
        position (at a decided position: whether its own token is still allowed)."""
        ...

    def propagate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) -> ((B, L) with every forced position decided, (B,) bool False on a contradiction)."""
        ...


@dataclass(frozen=True)
class DFSConfig:
    """rule: a step sampler spec ranking where to branch, or ``mrv`` (model-free); max_nodes: the
    per-row budget of expanded nodes; propagate: run the task's deductions at every node; fill:
    also commit positions above this restricted probability in every child (0: off)."""

    rule: str = "confidence"
    max_nodes: int = 2000
    propagate: bool = True
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")
        if not 0 <= self.fill < 1:
            raise ValueError(f"fill must be in [0, 1), got {self.fill}")
        if self.rule != MODEL_FREE:
            rule = get_sampler(self.rule)
            if not hasattr(rule, "step"):
                raise ValueError(f"rule must be a step sampler or {MODEL_FREE!r}, got the search {self.rule!r}")


class _Restricted:
    """A denoiser whose logits are -inf at tokens the rules forbid at undecided positions."""

    def __init__(self, model: Denoiser, forbid: Tensor) -> None:
        self.model, self.forbid = model, forbid  # forbid: (R, L, V) bool
        self.vocab_size, self.mask_id = model.vocab_size, model.mask_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def _restrict(self, logits: Tensor) -> Tensor:
        m = logits.shape[0] // self.forbid.shape[0]  # a sampler may repeat its batch
        return logits.masked_fill(self.forbid.repeat(m, 1, 1), float("-inf"))

    def subset(self, local: Tensor) -> _Restricted:
        """The same restriction for a subset of the rows (a sampler that steps some rows only)."""
        return _Restricted(select_rows(self.model, local), self.forbid[local])

    def embed(self, ids: Tensor) -> Tensor:
        return self.model.embed(ids)

    def token_embeddings(self) -> Tensor:
        return self.model.token_embeddings()

    def logits_from_embeds(self, embeds: Tensor, **kw: Any) -> Tensor:
        return self._restrict(self.model.logits_from_embeds(embeds, **kw))

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        return self.logits_from_embeds(self.embed(ids), attention_mask=attention_mask)


@register
class DepthFirstSearch:
    """Complete depth-first search, branching where ``rule`` ranks first; one forward per node."""

    name: ClassVar[str] = "dfs"
    fixed_budget: ClassVar[bool] = False
    Config = DFSConfig

    def __init__(self, config: DFSConfig | None = None) -> None:
        self.config = config or DFSConfig()
        self.rule = None if self.config.rule == MODEL_FREE else get_sampler(self.config.rule)

    def run(
        self,
        model: Denoiser,
        ids: Tensor,
        *,
        steps: int = 1,
        constraints: Constraints | None = None,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
        progress: Any = None,
        **_: Any,
    ) -> GenerationOutput:
        """Search every row of ``ids`` (B, L) until it is solved, proven to have no solution, or out of
        budget; ``steps`` is unused (a node commits one choice). Rows that end unsolved keep their
        input ids. ``constraints`` is required."""
        if constraints is None:
            raise ValueError("dfs needs the task's rules: pass constraints= (e.g. tabes.tasks.sudoku.rules.SudokuRules())")
        start = time.perf_counter()
        cfg, mask_id = self.config, model.mask_id
        B, L = ids.shape
        dev = ids.device
        out = ids.clone()
        counts = {k: torch.zeros(B, dtype=torch.long, device=dev) for k in ("forwards", "backwards", "nodes", "backtracks")}
        solved = torch.zeros(B, dtype=torch.bool, device=dev)
        gave_up = torch.zeros(B, dtype=torch.bool, device=dev)
        stacks: list[list[Tensor]] = [[ids[b]] for b in range(B)]
        while True:
            rows = [b for b in range(B) if stacks[b] and not solved[b] and not gave_up[b]]
            if not rows:
                break
            r = torch.tensor(rows, dtype=torch.long, device=dev)
            x = torch.stack([stacks[b].pop() for b in rows])  # (R, L) one node per row
            ok = torch.ones(len(rows), dtype=torch.bool, device=dev)
            if cfg.propagate:
                x, ok = constraints.propagate(x)
            allowed = constraints.allowed(x)  # (R, L, V)
            undecided = x == mask_id
            own = allowed.gather(-1, x.clamp_max(allowed.shape[-1] - 1)[..., None]).squeeze(-1)
            dead = ~ok | (undecided & ~allowed.any(-1)).any(-1) | (~undecided & ~own).any(-1)
            done = ~dead & ~undecided.any(-1)
            counts["nodes"][r] += 1
            counts["backtracks"][r[dead]] += 1
            for j in done.nonzero().flatten().tolist():
                out[rows[j]], solved[rows[j]] = x[j], True
            open_ = (~dead & ~done).nonzero().flatten()
            if open_.numel():
                self._branch(model, constraints, x[open_], allowed[open_], r[open_], stacks, counts, generator)
            for b in rows:
                if not solved[b] and counts["nodes"][b] >= cfg.max_nodes and stacks[b]:
                    gave_up[b] = True
            if progress is not None:
                progress(int(done.sum()))
        steps_taken = counts["nodes"].clone()
        search = {"nodes": counts["nodes"], "backtracks": counts["backtracks"], "solved": solved, "gave_up": gave_up}
        return GenerationOutput(out, counts["forwards"], counts["backwards"], steps_taken, time.perf_counter() - start, search=search)

    def _branch(self, model, constraints: Constraints, x: Tensor, allowed: Tensor, rows: Tensor, stacks, counts, generator) -> None:
        """Push the children of each node of ``x`` (R, L) onto its row's stack, best last."""
        mask_id = model.mask_id
        undecided = x == mask_id
        V = allowed.shape[-1]
        if self.rule is None:  # minimum remaining values, tokens in id order
            n_allowed = allowed.sum(-1).masked_fill(~undecided, V + 1)
            cell = n_allowed.argmin(-1)  # (R,) the first of the fewest
            order = torch.arange(V, device=x.device).flip(0).expand(x.shape[0], V)  # pushed in reverse: lowest id on top
            probs = None
        else:
            forbid = undecided[..., None] & ~allowed
            counted = CountingDenoiser(model, rows, counts["forwards"], counts["backwards"])
            state = StepState(
                x=x,
                maskable=undecided,
                fixed=~undecided,
                budget=torch.ones(x.shape[0], dtype=torch.long, device=x.device),
                step=0,
                num_steps=1,
                t=1.0,
                temperature=0.0,
                generator=generator,
            )
            with torch.enable_grad() if getattr(self.rule, "name", "") == "boe" else torch.no_grad():
                result = self.rule.step(_Restricted(counted, forbid), state)
            commit = result.commit & undecided
            logp = result.prediction.logits.float().detach()  # (R, L, V), forbidden tokens at -inf
            logp = logp.masked_fill(~allowed, float("-inf"))
            # the rule's position; a rule that committed nothing falls back to the most confident
            surest = result.prediction.confidence.masked_fill(~undecided, -1).argmax(-1)
            cell = torch.where(commit.any(-1), commit.float().argmax(-1), surest)
            probs = torch.softmax(logp, dim=-1)
            order = None
        for j in range(x.shape[0]):
            c = int(cell[j])
            if probs is None:
                values = [int(v) for v in order[j] if allowed[j, c, v]]
            else:
                pc = probs[j, c]
                values = [int(v) for v in pc.argsort(descending=True) if allowed[j, c, v]][::-1]  # least probable pushed first
            for v in values:
                child = x[j].clone()
                child[c] = v
                if self.config.fill > 0 and probs is not None:
                    child = self._fill(child, probs[j], c, constraints, mask_id)
                stacks[int(rows[j])].append(child)

    def _fill(self, child: Tensor, probs: Tensor, chosen: int, constraints: Constraints, mask_id: int) -> Tensor:
        """Commit the other undecided positions of ``child`` (L,) whose top probability in ``probs``
        (L, V) exceeds ``fill``, most probable first, each only if the rules still allow it."""
        top, tok = probs.max(-1)  # (L,)
        for i in top.argsort(descending=True).tolist():
            if float(top[i]) <= self.config.fill:
                break
            if i != chosen and child[i] == mask_id and bool(constraints.allowed(child[None])[0, i, tok[i]]):
                child[i] = tok[i]
        return child
