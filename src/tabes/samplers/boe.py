"""Backward-on-Entropy (BoE) steering (TABES, arXiv 2602.00250).

One step, per row (the numbers match ``docs/boe.md``; ``point="mask"`` merges 1 and 3, below):

    1. forward:     pi_i, H_i, c_i for every masked position i
    2. prefilter:   candidates C = top-r masked positions by confidence (at least the budget b)
    3. surrogate:   inject e~_i = sum_v pihat_i(v) E[v], pihat_i ~ pi_i^(1/tau), at each i in C;
                    every other position keeps its embedding (masked ones keep e_mask);
                    probes P = masked positions not in C (with rho < 1: the top ceil(rho*L)
                    of them by entropy); one forward from embeddings gives
                    H~ = sum_{j in P} H(pi~_j)
    4. backward:    g_i = dH~ / de~_i (gradients w.r.t. the injected embeddings only)
    5. TIS:         TIS_i = -<g_i, e~_i - e_i>  (first-order predicted drop of H~ when i is revealed;
                    e_i = e_mask, or the noise token's embedding on a uniform-noise model)
    6. score:       s_i = c_i^gamma * norm(TIS_i) - lambda_ac * max(0, h_t - H_i)^2, h_t = h_max * t
                    commit the top-b candidates by s_i

Cost: 2 forwards + 1 backward per step (``point="mask"``: 1 forward + 1 backward, the entropy
linearised at the current embeddings instead of at e~). The backward runs through ActiveQueryAttention with the
active set chosen by ``active``: ``"candidates"`` (A = C), ``"candidates+probes"`` (A = C and P)
or ``"dense"`` (no AQA; the -AQA ablation).

Endgame: a row with no probes left (every masked position is a candidate) has nothing to steer
by, so it falls back to confidence order for that step and skips steps 3-5 (no surrogate
forward, no backward). The trace marks such rows with ``"fallback": true`` (so are the rows
that adaptive steering, ``ambiguity`` or ``steer_below`` below 1, leaves to confidence order); ``"steered"`` is its opposite.

Gradients are enabled only inside step 3-4, and only the injected embeddings are inputs of
``torch.autograd.grad``: nothing accumulates on model parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tabes.protocol import Denoiser, select_rows
from tabes.samplers.base import StepResult, StepState, contradicted, top_k_mask
from tabes.samplers.registry import register

ACTIVE_SETS = ("candidates", "candidates+probes", "dense")
NORMS = ("minmax", "rank")
POINTS = ("soft", "mask")


@dataclass(frozen=True)
class BoEConfig:
    """Every knob of BoE steering.

    Attributes:
        r: candidates per step (the top-r masked positions by confidence; at least the budget).
        tau: sharpening temperature of the soft embeddings, pihat ~ pi^(1/tau); tau -> 0 is the argmax token.
        gamma: confidence gating exponent in c^gamma * norm(TIS).
        lambda_ac: weight of the anti-collapse penalty (0 disables it).
        h_max: entropy floor at t = 1 (nats); the floor decays as h_t = h_max * t.
        rho: active fraction; probes are the top ceil(rho * L) remaining masked positions by
            entropy (rho = 1 keeps all of them).
        active: AQA active set: "candidates", "candidates+probes" or "dense" (full backward).
        norm: how TIS is mapped to a common scale over the candidates of a row:
            "minmax" to [0, 1], or "rank" (rank / (|C| - 1)).
        use_tis: False drops TIS (score c^gamma - anti-collapse): the -TIS ablation; it then
            needs no surrogate forward and no backward.
        point: where the entropy is linearised. "soft" (the paper): a second forward with the
            soft embeddings e~ injected at the candidates, gradient taken there (2 forwards + 1
            backward per step). "mask": the step's own forward, run with gradients from the
            current embeddings (candidates still hold e_mask), gives confidence, probes and H~;
            TIS_i = -<dH~/de_i, e~_i - e_mask> is the same first-order estimate taken at the
            other end of the segment (1 forward + 1 backward per step). Its active set is every
            masked position (known before the forward), so it needs active "candidates+probes"
            or "dense".
        ambiguity: adaptive steering. A row is steered only when confidence order is
            ambiguous there: the gap between its b-th and (b+1)-th most confident masked
            positions (b = the step's budget) is below this value; other rows commit by
            confidence and skip the surrogate forward and the backward. 1.0 (the default)
            steers every step. With point="mask" the step's forward already ran with
            gradients, so only a batch in which no row is ambiguous skips the backward.
        steer_below: adaptive steering by confidence. A row is steered only when its b-th
            most confident masked position has confidence below this value: the budget forces
            a commit the model is unsure of. Otherwise the b most confident positions are
            committed (they are all at least this sure) and the surrogate forward and the
            backward are skipped. 1.0 (the default) steers every step. Combines with
            ``ambiguity`` (both must hold); with point="mask" the same caveat applies.
        consistency: for parallel decoding (budgets above 1): the surrogate forward predicts
            every candidate with the other candidates injected; candidates whose argmax there
            differs from the step's proposal go last (committed only if the budget needs
            them), the consistent ones are ranked by the usual score. Needs point="soft".
        repair: BoE with repair. The surrogate forward sees the committed cells with the
            candidates injected; a committed (not given) cell whose own token has probability
            below ``repair`` there, while another token is the argmax, is re-masked (at most
            one per row and step, the least probable; never on a block's last step). 0 (the
            default) disables it. Needs point="soft".
    """

    r: int = 4
    tau: float = 0.5
    gamma: float = 1.0
    lambda_ac: float = 0.0
    h_max: float = 1.0
    rho: float = 1.0
    active: str = "candidates+probes"
    norm: str = "minmax"
    use_tis: bool = True
    point: str = "soft"
    ambiguity: float = 1.0
    steer_below: float = 1.0
    consistency: bool = False
    repair: float = 0.0

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not self.lambda_ac >= 0:
            raise ValueError(f"lambda_ac must be >= 0, got {self.lambda_ac}")
        if not self.h_max >= 0:
            raise ValueError(f"h_max must be >= 0, got {self.h_max}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if self.active not in ACTIVE_SETS:
            raise ValueError(f"active must be one of {ACTIVE_SETS}, got {self.active!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if not 0 <= self.repair < 1:
            raise ValueError(f"repair must be in [0, 1), got {self.repair}")
        if self.repair > 0 and self.point != "soft":
            raise ValueError("repair needs the surrogate forward of point='soft', got point='mask'")
        if self.consistency and self.point != "soft":
            raise ValueError("consistency needs the surrogate forward of point='soft', got point='mask'")
        if not 0 <= self.ambiguity <= 1:
            raise ValueError(f"ambiguity must be in [0, 1], got {self.ambiguity}")
        if not 0 <= self.steer_below <= 1:
            raise ValueError(f"steer_below must be in [0, 1], got {self.steer_below}")
        if self.point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, got {self.point!r}")
        if self.point == "mask" and self.active == "candidates":
            raise ValueError(
                "point='mask' needs its active set before the forward: use active='candidates+probes' or 'dense', got 'candidates'"
            )


def _normalise(tis: Tensor, cand: Tensor, how: str) -> Tensor:
    """Map TIS over each row's candidates to [0, 1]; (B, L) -> (B, L), 0 off candidates."""
    if how == "rank":
        s = tis.masked_fill(~cand, float("-inf"))
        rank = torch.sort(s, dim=-1, stable=True).indices.argsort(-1)  # ascending rank, candidates last
        n = cand.sum(-1, keepdim=True)
        pos = rank - (tis.shape[1] - n)  # 0 .. n-1 among candidates
        return (pos.float() / (n - 1).clamp_min(1)).where(cand, 0.0)
    lo = tis.masked_fill(~cand, float("inf")).amin(-1, keepdim=True)
    hi = tis.masked_fill(~cand, float("-inf")).amax(-1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (tis - lo) / span.clamp_min(1e-30), torch.ones_like(tis))
    return out.where(cand, 0.0)


def _budget_edge(conf: Tensor, maskable: Tensor, budget: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) confidences of each row's b-th and (b+1)-th most confident maskable positions
    (b = budget); the (b+1)-th is -1 when no maskable position follows the b-th."""
    top = conf.masked_fill(~maskable, -1.0).sort(-1, descending=True).values  # (B, L)
    kth = top.gather(1, (budget - 1).clamp_min(0)[:, None]).squeeze(1)
    nxt = top.gather(1, budget.clamp_max(top.shape[1] - 1)[:, None]).squeeze(1)
    return kth, nxt


def _confidence_gap(kth: Tensor, nxt: Tensor) -> Tensor:
    """(B,) gap between the b-th and (b+1)-th confidences (1 when nothing follows the b-th:
    confidence order is then not ambiguous)."""
    return torch.where(nxt >= 0, kth - nxt, torch.ones_like(kth))


def _probe_entropy(logits: Tensor, probes: Tensor, mask_id: int) -> Tensor:
    """(B, L, V) logits, (B, L) probes -> (B,) summed entropy at the probes (mask token excluded).

    Only the probe rows are gathered and normalised, so a long sequence with few probes (a
    block) costs O(#probes * V), forward and backward."""
    idx = probes.nonzero(as_tuple=True)
    rows = logits[idx]  # (n, V)
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))  # float32 at least, float64 kept
    rows = rows.masked_fill(torch.arange(rows.shape[-1], device=rows.device) == mask_id, float("-inf"))
    logp = torch.log_softmax(rows, dim=-1)
    ent = -(logp.exp() * logp.clamp_min(-1e4)).sum(-1)  # (n,)
    return torch.zeros(probes.shape[0], dtype=ent.dtype, device=ent.device).index_add(0, idx[0], ent)


def future_entropy(
    model: Denoiser,
    embeds: Tensor,
    probes: Tensor,
    *,
    attention_mask: Tensor | None = None,
    active: Tensor | None = None,
    grad_rows: Tensor | None = None,
) -> Tensor:
    """H~ per row: the summed entropy at the probe positions of a forward from ``embeds``.

    Shapes: embeds (B, L, D), probes (B, L) bool -> (B,). The mask token is excluded from
    each distribution, as in decoding. ``active``/``grad_rows``: see the Denoiser protocol.
    """
    logits = model.logits_from_embeds(embeds, attention_mask=attention_mask, active=active, grad_rows=grad_rows)  # (B, L, V)
    return _probe_entropy(logits, probes, model.mask_id)


def _scatter_rows(values: Tensor, where: Tensor) -> Tensor:
    """(n, D) values for the True positions of ``where`` (B, L), row-major -> (B, L, D), zero elsewhere."""
    out = values.new_zeros((*where.shape, values.shape[-1]))
    out[where] = values
    return out


def soft_embeddings(model: Denoiser, probs: Tensor, tau: float, where: Tensor | None = None) -> Tensor:
    """e~ = sum_v pihat(v) E[v] with pihat ~ probs^(1/tau): (B, L, V) -> (B, L, D), no gradient.

    With ``where`` (B, L) bool, only those positions are computed (the others are zero)."""
    E = model.token_embeddings()  # (V_in, D)
    with torch.no_grad():
        if where is None:
            pihat = torch.softmax(probs[..., : E.shape[0]].clamp_min(1e-30).log() / tau, dim=-1)  # (B, L, V_in)
            return (pihat.to(E.dtype) @ E).detach()
        return _scatter_rows(soft_embeddings(model, probs[where], tau), where)


def _tis(grad: Tensor, soft: Tensor, base: Tensor, candidates: Tensor) -> Tensor:
    """TIS_i = -<g_i, e~_i - e_i>: (B, L, D) gradient, soft embeddings and current embeddings ->
    (B, L) float32, 0 off candidates. e_i is what position i holds now: e_mask for a masked model,
    the noise token's embedding for a uniform-noise one (DiffusionGemma)."""
    return (-((grad * (soft - base)).sum(-1)).float()).where(candidates, 0.0)


def token_influence(
    model: Denoiser,
    x: Tensor,
    probs: Tensor,
    candidates: Tensor,
    probes: Tensor,
    *,
    tau: float,
    active: str,
    attention_mask: Tensor | None = None,
    point: str = "soft",
    return_tokens: bool = False,
    soft: Tensor | None = None,
    return_logits: bool = False,
) -> tuple[Tensor, ...]:
    """Steps 3-5: the Token Influence Score of every candidate.

    Args:
        x: (B, L) current ids.
        probs: (B, L, V) the first forward's distributions (mask token excluded); may be None
            when ``soft`` is given.
        candidates, probes: (B, L) bool, disjoint.
        tau: soft-embedding sharpening temperature.
        active: AQA active set, one of ``ACTIVE_SETS``.
        point: "soft" linearises H~ at e~ (candidates injected), "mask" at the current
            embeddings (see :class:`BoEConfig`; its AQA active set is every masked position).
        soft: optional (B, L, D) soft embeddings e~ already computed at the candidates.

    Returns:
        tis (B, L) float32, zero off candidates, and future_entropy (B,) = H~ per row; with
        ``return_tokens`` also the (B, L) argmax tokens of the surrogate forward at the
        candidates (each predicted with the other candidates injected), -1 elsewhere; with
        ``return_logits`` last the surrogate forward's (B, L, V) logits, detached.
    """
    if soft is None:
        soft = soft_embeddings(model, probs, tau, where=candidates)  # (B, L, D) e~, used (and computed) at the candidates only
    with torch.no_grad():
        base = model.embed(x).detach()  # (B, L, D); masked positions hold e_mask (or their noise token)
    act = None
    if active == "candidates":
        act = candidates
    elif active == "candidates+probes":
        act = candidates | probes if point == "soft" else x == model.mask_id
    with torch.enable_grad():
        inj = (soft if point == "soft" else base).clone().requires_grad_(True)
        embeds = torch.where(candidates[..., None], inj, base)  # (B, L, D)
        # only the candidates' gradient is read
        logits = model.logits_from_embeds(embeds, attention_mask=attention_mask, active=act, grad_rows=candidates)  # (B, L, V)
        future = _probe_entropy(logits, probes, model.mask_id)  # (B,) H~
        if future.requires_grad:
            (grad,) = torch.autograd.grad(future.sum(), inj)  # rows are independent: each row's own dH~/de~
        else:  # no path from the probes back to the candidates (e.g. kv mode with A = C): no influence
            grad = torch.zeros_like(inj)
    tis = _tis(grad, soft, base, candidates)
    out = (tis, future.detach())
    if return_tokens:
        idx = candidates.nonzero(as_tuple=True)
        rows = logits.detach()[idx]  # (n, V), a copy
        rows[:, model.mask_id] = float("-inf")
        tokens = torch.full(candidates.shape, -1, dtype=torch.long, device=candidates.device)
        tokens[idx] = rows.argmax(-1)
        out = (*out, tokens)
    if return_logits:
        out = (*out, logits.detach())
    return out


@register
class BoESampler:
    """Backward-on-Entropy steering: confidence-gated Token Influence Score. 2 forwards + 1 backward per step."""

    name: ClassVar[str] = "boe"
    fixed_budget: ClassVar[bool] = True
    Config = BoEConfig

    def __init__(self, config: BoEConfig | None = None) -> None:
        self.config = config or BoEConfig()

    def step(self, model: Denoiser, state: StepState) -> StepResult:
        cfg = self.config
        B, L = state.x.shape
        # a row has probes iff it has more masked positions than candidates (known before the forward)
        n_cand = torch.clamp(state.budget, min=cfg.r)
        steer = (state.maskable.sum(-1) > n_cand) if cfg.use_tis else torch.zeros(B, dtype=torch.bool, device=state.x.device)
        one_pass = cfg.point == "mask" and bool(steer.any())
        # 1. forward (with gradients from the input embeddings when the entropy is linearised here)
        rows = steer.nonzero().squeeze(-1)
        if one_pass:
            # steered rows run their forward with gradients, the others a plain one; one
            # prediction over the assembled logits keeps the sampling noise of the batch
            sub, am = select_rows(model, rows), None if state.attention_mask is None else state.attention_mask[rows]
            emb = sub.embed(state.x[rows]).detach().requires_grad_(True)
            with torch.enable_grad():
                act = None if cfg.active == "dense" else state.maskable[rows]
                logits = sub.logits_from_embeds(emb, attention_mask=am, active=act, grad_rows=state.maskable[rows])  # (R, L, V)
            full = logits.detach().new_empty((B, *logits.shape[1:]))
            full[rows] = logits.detach()
            rest = (~steer).nonzero().squeeze(-1)
            if rest.numel():
                am_rest = None if state.attention_mask is None else state.attention_mask[rest]
                with torch.no_grad():
                    full[rest] = select_rows(model, rest).logits(state.x[rest], attention_mask=am_rest)
            pred = state.predict(model, logits=full)
        else:
            pred = state.predict(model)
        conf, ent = pred.confidence, pred.entropy
        if cfg.ambiguity < 1 or cfg.steer_below < 1:  # adaptive steering (see BoEConfig)
            kth, nxt = _budget_edge(conf, state.maskable, state.budget)
            if cfg.ambiguity < 1:  # only where confidence order is ambiguous
                steer = steer & (_confidence_gap(kth, nxt) < cfg.ambiguity)
            if cfg.steer_below < 1:  # only where the budget forces an unsure commit
                steer = steer & (kth < cfg.steer_below)
        # 2. prefilter: top-r by confidence (never fewer than the budget)
        cand = top_k_mask(conf, state.maskable, n_cand)
        probes = state.maskable & ~cand
        if cfg.rho < 1:
            probes = top_k_mask(ent, probes, torch.full((B,), math.ceil(cfg.rho * L), dtype=torch.long, device=state.x.device))
        # 3-5. surrogate forward (or the step's own), backward, TIS on the rows that have probes
        tis = torch.zeros(B, L, device=state.x.device)
        inconsistent = torch.zeros(B, L, dtype=torch.bool, device=state.x.device)
        remask = torch.zeros(B, L, dtype=torch.bool, device=state.x.device)
        future = torch.zeros(B, device=state.x.device)
        rows_steered = steer[rows] if one_pass else None
        rows = steer.nonzero().squeeze(-1)  # after the ambiguity gate
        if one_pass and rows.numel():
            keep = rows_steered.nonzero().squeeze(-1)  # the gated rows among those the forward ran with gradients
            with torch.enable_grad():
                h = _probe_entropy(logits[keep], probes[rows], model.mask_id)  # (R,) H~ at the current embeddings
                (grad,) = torch.autograd.grad(h.sum(), emb)  # rows are independent
            soft = soft_embeddings(model, pred.probs_at(cand[rows], rows), cfg.tau)  # (n, D) at the candidates
            tis[rows] = _tis(grad[keep], _scatter_rows(soft, cand[rows]), emb.detach()[keep], cand[rows])
            future[rows] = h.detach().float()
        elif not one_pass and rows.numel():
            sub = select_rows(model, rows)
            am = None if state.attention_mask is None else state.attention_mask[rows]
            soft = _scatter_rows(soft_embeddings(model, pred.probs_at(cand[rows], rows), cfg.tau), cand[rows])  # (R, L, D)
            out = token_influence(
                sub,
                state.x[rows],
                None,
                cand[rows],
                probes[rows],
                tau=cfg.tau,
                active=cfg.active,
                attention_mask=am,
                return_tokens=cfg.consistency,
                soft=soft,
                return_logits=cfg.repair > 0,
            )
            tis[rows], future[rows] = out[0], out[1].float()
            if cfg.consistency:  # the surrogate's own proposals (each candidate predicted with the others injected)
                inconsistent[rows] = cand[rows] & (out[2] != pred.tokens[rows])
            if cfg.repair > 0:  # committed cells the surrogate contradicts go back to the mask
                committed = (state.x[rows] != model.mask_id) & ~state.fixed[rows]
                remask[rows] = contradicted(out[-1], state.x[rows], committed, cfg.repair, mask_id=model.mask_id)
        # 6. score: confidence-gated normalised TIS minus the anti-collapse penalty
        h_t = cfg.h_max * state.t
        penalty = (h_t - ent).clamp_min(0) ** 2
        gate = conf.clamp_min(0) ** cfg.gamma
        if cfg.use_tis:
            score = gate * _normalise(tis, cand, cfg.norm) - cfg.lambda_ac * penalty
            score = torch.where(steer[:, None], score, conf)  # endgame (no probes): confidence order
            score = score - 1e3 * inconsistent  # the surrogate contradicts them: last, only if the budget needs them
        else:
            score = gate - cfg.lambda_ac * penalty
        commit = top_k_mask(score, cand, state.budget)
        info = {
            "candidates": [cand[b].nonzero().squeeze(-1).tolist() for b in range(B)],
            "probes": [int(n) for n in probes.sum(-1)],
            "tis": [tis[b][cand[b]].tolist() for b in range(B)],
            "cand_confidence": [conf[b][cand[b]].tolist() for b in range(B)],
            "cand_entropy": [ent[b][cand[b]].tolist() for b in range(B)],
            "h_t": [h_t] * B,
            "future_entropy": [round(float(v), 6) for v in future],
            "fallback": [cfg.use_tis and not bool(s) for s in steer],
            "steered": [bool(s) for s in steer],
            "inconsistent": [inconsistent[b].nonzero().squeeze(-1).tolist() for b in range(B)],
        }
        return StepResult(commit=commit, tokens=pred.tokens, prediction=pred, remask=remask if cfg.repair > 0 else None, info=info)
