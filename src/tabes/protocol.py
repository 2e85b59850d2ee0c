"""The denoiser protocol every model meets, and the typed outputs of generation.

A *denoiser* maps a partly masked sequence to per-position logits. Samplers talk to models
only through this protocol, so a sampler never imports a concrete model. Positional
information (learned positions, RoPE, Sudoku row/column/box embeddings) is added *inside*
:meth:`Denoiser.logits_from_embeds`: ``embed`` returns token embeddings only, so a soft
mixture of rows of :meth:`Denoiser.token_embeddings` is a valid input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """What a masked-diffusion model must provide.

    Attributes:
        vocab_size: V, the size of the output distribution (the mask token included).
        mask_id: id of the mask token; its logit is excluded when decoding.
    """

    vocab_size: int
    mask_id: int

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings. ids (B, L) long -> (B, L, D)."""
        ...

    def token_embeddings(self) -> Tensor:
        """The input-embedding matrix E, (V_in, D), with ``embed(ids) == E[ids]``."""
        ...

    def logits_from_embeds(
        self, embeds: Tensor, *, attention_mask: Tensor | None = None, active: Tensor | None = None, grad_rows: Tensor | None = None
    ) -> Tensor:
        """Logits from input embeddings.

        Args:
            embeds: (B, L, D) token embeddings (hard or soft).
            attention_mask: optional (B, L) bool, False for padding keys.
            active: optional (B, L) bool. When given, the backward pass sends gradient only
                through the attention query rows where ``active`` is True
                (ActiveQueryAttention); the forward values are unchanged.
            grad_rows: optional (B, L) bool, a hint: the rows of ``embeds`` whose gradient the
                caller reads. A model may treat the other rows as constants and skip their
                backward; it may also ignore the hint. Values and the gradient at these
                rows are the same either way.

        Returns:
            (B, L, V) logits.
        """
        ...

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """Logits from ids, (B, L) -> (B, L, V)."""
        ...


@dataclass
class GenerationOutput:
    """Result of :func:`tabes.generate`.

    Attributes:
        sequences: (B, L) long, the decoded ids; no mask is left.
        forwards: (B,) long, denoiser forward passes that each row took part in.
        backwards: (B,) long, backward passes that each row took part in.
        steps: (B,) long, decoding steps each row took (adaptive samplers may finish early).
        seconds: wall-clock time of the whole call.
        trace: per-step records (dicts) when tracing was requested in memory, else empty.
        remasked: (B,) long, committed positions each row masked again (remasking samplers;
            zeros for the others).
        steered: (B,) long, steps on which the sampler reported ``info["steered"]`` true for
            the row (BoE: steps that ran the surrogate and the backward); None when the
            sampler does not report it.
        search: per-row counts of a search (``dfs``: ``nodes``, ``backtracks``, ``solved``,
            ``gave_up``, each (B,)); None for the step loop.
    """

    sequences: Tensor
    forwards: Tensor
    backwards: Tensor
    steps: Tensor
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)
    remasked: Tensor | None = None
    steered: Tensor | None = None
    search: dict[str, Tensor] | None = None

    @property
    def fwd_equiv(self) -> Tensor:
        """(B,) forward-equivalents: a backward pass counts as two forwards."""
        return self.forwards + 2 * self.backwards


@dataclass
class Prediction:
    """One denoiser forward pass turned into per-position proposals.

    Attributes:
        logits: (B, L, V) float, mask logit set to -inf.
        tokens: (B, L) long, proposed token (argmax, or Gumbel-max sample at temperature > 0).
        confidence: (B, L) float64, probability of the proposed token (a float64 softmax at
            the positions that needed a proposal, so near-certain tokens still order).
        entropy: (B, L) float32, entropy of the distribution in nats at the positions that
            needed a proposal (``where`` of :func:`predict`), 0 elsewhere.
        lse: (B, L) float32, log-sum-exp of ``logits`` over the vocabulary.
    """

    logits: Tensor
    tokens: Tensor
    confidence: Tensor
    entropy: Tensor
    lse: Tensor

    @functools.cached_property
    def logprobs(self) -> Tensor:
        """(B, L, V) float32 log-softmax of ``logits`` (computed on first use)."""
        return _at_least_float32(self.logits) - self.lse[..., None]

    @property
    def probs(self) -> Tensor:
        """(B, L, V) float32 probabilities."""
        return self.logprobs.exp()

    def probs_at(self, where: Tensor, rows: Tensor | None = None) -> Tensor:
        """(n, V) float32 probabilities at the True positions of ``where``, in row-major order:
        (B, L) bool, or (R, L) bool for the batch rows ``rows`` ((R,) long). Costs O(n V)."""
        r, pos = where.nonzero(as_tuple=True)
        if rows is not None:
            r = rows[r]
        return (_at_least_float32(self.logits[r, pos]) - self.lse[r, pos][:, None]).exp()


def _at_least_float32(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def predict(
    model: Denoiser,
    x: Tensor,
    *,
    where: Tensor,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
    logits: Tensor | None = None,
) -> Prediction:
    """Run one forward pass on ``x`` (or reuse ``logits``) and propose a token per position.

    Every position gets a token and its confidence; the entropy and the Gumbel noise are
    computed only at ``where``, so the (B, L, V) work is a log-sum-exp and an argmax, and the
    rest is O(#where * V) (a long sequence with a short block to decode pays little for the
    positions it does not decode).

    Args:
        x: (B, L) long ids.
        where: (B, L) bool, positions that need a proposal.
        temperature: 0 for argmax, > 0 for a Gumbel-max sample of softmax(logits / T) at ``where``.
        generator: the source of randomness for the Gumbel noise.
        logits: reuse these (B, L, V) logits instead of calling the model.
    """
    if logits is None:
        logits = model.logits(x, attention_mask=attention_mask)
    is_mask = torch.arange(logits.shape[-1], device=logits.device) == model.mask_id
    logits = logits.masked_fill(is_mask, float("-inf"))  # a new tensor: the caller's logits are untouched
    lf = _at_least_float32(logits)
    lse = torch.logsumexp(lf, dim=-1)  # (B, L)
    tokens = lf.max(-1).indices  # (B, L) the argmax (the first maximal index), at a third of argmax's cost on a CPU
    idx = where.nonzero(as_tuple=True)
    logp = torch.log_softmax(lf[idx], dim=-1)  # (n, V) log-probabilities where a proposal is needed
    if temperature > 0:
        # float64: the double log of a float32 uniform loses the tail of the Gumbel distribution
        u = torch.rand((idx[0].numel(), logits.shape[-1]), generator=generator, dtype=torch.float64, device=logits.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
        tokens[idx] = (logp.double() / temperature + gumbel).float().argmax(-1)
    confidence = (lf.gather(-1, tokens[..., None]).squeeze(-1) - lse).exp().double()
    # where a proposal is needed, the probability as LLaDA's and Fast-dLLM's decoders take it: a float64
    # softmax. A float32 probability saturates at 1.0 above 1 - 6e-8, and near-certain tokens then tie
    confidence[idx] = torch.softmax(lf[idx].double(), dim=-1).gather(-1, tokens[idx][:, None]).squeeze(-1)
    entropy = torch.zeros(tokens.shape, dtype=torch.float32, device=logits.device)
    entropy[idx] = (-(logp.exp() * logp.clamp_min(-1e4)).sum(-1)).float()
    return Prediction(logits=logits, tokens=tokens, confidence=confidence, entropy=entropy, lse=lse)


class CountingDenoiser:
    """Wraps a denoiser for a sub-batch of rows and counts passes per original row.

    ``rows`` (R,) long are distinct row ids into the (B,) counters. A call on a batch of ``m *
    len(rows)`` sequences (a sampler that repeats its batch ``m`` times, e.g. to score ``m``
    candidates) counts ``m`` passes for every row. A backward pass through the output of a call
    is counted by a gradient hook on that output.

    With ``cache`` (a :class:`tabes.cache.BlockCache`), every call runs through the block's
    KV cache: the transformer runs on the block's query positions only.
    """

    def __init__(
        self, model: Denoiser, rows: Tensor, forwards: Tensor, backwards: Tensor, cache: Any = None, condition: Tensor | None = None
    ) -> None:
        self.model, self.rows, self.forwards, self.backwards = model, rows, forwards, backwards
        self.cache = cache
        self.condition = condition  # (R, ...) the rows' conditioning from their previous step (a ``conditioned`` model's)
        self.vocab_size, self.mask_id = model.vocab_size, model.mask_id

    def __getattr__(self, name: str) -> Any:  # pass through anything else (config, device, ...)
        return getattr(self.model, name)

    def _multiplicity(self, batch: int) -> int:
        n = self.rows.numel()
        if batch % n:
            raise RuntimeError(f"a sampler called the denoiser on {batch} sequences for {n} rows; use a multiple of {n}")
        return batch // n

    def subset(self, local: Tensor) -> CountingDenoiser:
        """The same model for a subset of this sub-batch's rows, (k,) long local indices."""
        cond = None if self.condition is None else self.condition[local]
        return CountingDenoiser(self.model, self.rows[local], self.forwards, self.backwards, self.cache, cond)

    def embed(self, ids: Tensor) -> Tensor:
        return self.model.embed(ids)

    def token_embeddings(self) -> Tensor:
        return self.model.token_embeddings()

    def logits_from_embeds(
        self, embeds: Tensor, *, attention_mask: Tensor | None = None, active: Tensor | None = None, grad_rows: Tensor | None = None
    ) -> Tensor:
        m = self._multiplicity(embeds.shape[0])
        if self.cache is not None:  # a sampler's m-fold batch repeats the rows (tiled)
            out = self.cache.logits(embeds, self.rows.repeat(m), attention_mask=attention_mask, active=active)
        elif self.condition is not None:  # repeated like the rows
            cond = self.condition.repeat(m, *([1] * (self.condition.dim() - 1)))
            out = self.model.logits_from_embeds(embeds, attention_mask=attention_mask, active=active, grad_rows=grad_rows, condition=cond)
        else:
            out = self.model.logits_from_embeds(embeds, attention_mask=attention_mask, active=active, grad_rows=grad_rows)
        if self.rows.numel() == self.forwards.numel():  # every row (the rows are distinct): no index
            self.forwards += m
        else:
            self.forwards[self.rows] += m
        if out.requires_grad:

            def count_backward(grad: Tensor) -> Tensor:
                self.backwards[self.rows] += m
                return grad

            out.register_hook(count_backward)
        return out

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        return self.logits_from_embeds(self.embed(ids), attention_mask=attention_mask)


def select_rows(model: Denoiser, local: Tensor) -> Denoiser:
    """The model for a subset of the current rows: keeps per-row pass counts (and any per-row
    wrapping) right when ``model`` has a ``subset`` method, as the loop's :class:`CountingDenoiser`
    does; any other denoiser is returned as is."""
    return model.subset(local) if callable(getattr(type(model), "subset", None)) else model


def add_counts(model: Denoiser, forwards: Tensor, backwards: Tensor) -> None:
    """Add passes made outside the loop's counter (e.g. by a nested decode on the unwrapped
    model) to the loop's per-row counts; (B,) long each. No-op for other denoisers."""
    if isinstance(model, CountingDenoiser):
        model.forwards[model.rows] += forwards
        model.backwards[model.rows] += backwards


def unwrap(model: Denoiser) -> Denoiser:
    """The denoiser behind the loop's counting wrapper (itself for any other denoiser)."""
    return model.model if isinstance(model, CountingDenoiser) else model
