"""A block KV cache for the decoding loop (the semantics of Fast-dLLM, arXiv 2505.22618).

With block decoding, the positions outside the current block change little while the block is
decoded. So, at the start of each block, one full forward stores the keys and values of the
*context* positions in every layer; the block's steps then run the transformer on the
*query* positions only, which attend to the stored keys and values and to their own:

- ``"prefix"``: the context is everything before the block; the queries are the block and
  everything after it (the suffix is recomputed at every step).
- ``"dual"``: the context is everything outside the block, before and after it; the queries
  are the block's positions only.

The cache is refreshed at every block start. Logits at the context positions are those of the
refresh forward (stale constants); every sampler reads only the block's masked positions.

BoE through the cache: the surrogate forward and the backward cover the query positions only,
and the cached keys and values are constants (stop-gradient). The Token Influence Score then
omits the paths that run from a candidate through a context position's hidden states back
into the block; ``tabes bench fidelity --cache`` measures what that costs.

A model supports the cache by providing two methods (:class:`tabes.models.mdm.MDM` and
:class:`tabes.models.hf.HFDenoiser` do):

- ``fill_cache(embeds, *, context, attention_mask)``: (B, L, D) embeddings and the (L,) bool
  context positions -> ((B, L, V) logits, :class:`LayerKV`);
- ``logits_with_cache(embeds, *, positions, kv, attention_mask, active)``: (B, Lq, D)
  embeddings of the query positions (Lq,) long -> (B, Lq, V) logits; ``attention_mask`` is
  the (B, L) padding mask of the whole sequence, ``active`` (B, Lq) the AQA rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CACHE_MODES = ("none", "prefix", "dual")


@dataclass
class LayerKV:
    """Keys and values of the context positions, one pair per attention layer.

    Attributes:
        positions: (Lc,) long, the context positions, in the order of the key axis.
        keys, values: per layer (B, H_kv, Lc, Dh), no gradient.
    """

    positions: Tensor
    keys: list[Tensor]
    values: list[Tensor]

    def rows(self, index: Tensor) -> LayerKV:
        """The cache of the batch rows ``index`` ((n,) long, repeats allowed); itself, uncopied,
        when ``index`` is every row in order."""
        B = self.keys[0].shape[0] if self.keys else 0
        if index.numel() == B and bool((index == torch.arange(B, device=index.device)).all()):
            return self
        return LayerKV(self.positions, [k[index] for k in self.keys], [v[index] for v in self.values])


def supports_cache(model: object) -> bool:
    """Whether ``model`` provides ``fill_cache`` and ``logits_with_cache``."""
    return callable(getattr(model, "fill_cache", None)) and callable(getattr(model, "logits_with_cache", None))


def check_cache_mode(cache: str) -> str:
    """Validate a cache mode name; returns it."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    return cache


class BlockCache:
    """The cache of one block of one :func:`tabes.generate` call.

    Args:
        model: a denoiser with ``fill_cache``/``logits_with_cache``.
        mode: ``"prefix"`` or ``"dual"``.
        length: L, the sequence length.
        block: (lo, hi), the block's positions ``lo <= i < hi``.
        batch: B, rows of the whole batch (the cache is indexed by the loop's row ids).
        device: where the ids live (default: the model's embeddings' device).
    """

    def __init__(self, model, mode: str, length: int, block: tuple[int, int], batch: int, device: torch.device | str | None = None) -> None:
        if mode not in ("prefix", "dual"):
            raise ValueError(f"a block cache needs mode 'prefix' or 'dual', got {mode!r}")
        if not supports_cache(model):
            raise ValueError(f"{type(model).__name__} has no KV cache support (fill_cache / logits_with_cache); use cache='none'")
        lo, hi = block
        self.model, self.mode, self.length, self.batch = model, mode, length, batch
        self.lo, self.hi = lo, (hi if mode == "dual" else length)  # query positions lo <= i < self.hi
        self.device = torch.device(device) if device is not None else model.token_embeddings().device
        self.context = torch.ones(length, dtype=torch.bool, device=self.device)
        self.context[self.lo : self.hi] = False
        self.kv: LayerKV | None = None
        self.stale: Tensor | None = None  # (B, L, V) logits of the refresh forward

    @property
    def positions(self) -> Tensor:
        """(Lq,) long, the query positions the cached steps compute."""
        return torch.arange(self.lo, self.hi, device=self.device)

    def fill(self, x: Tensor, rows: Tensor, attention_mask: Tensor | None) -> None:
        """The refresh forward: store the context's keys and values for ``rows`` of ``x`` (B, L)."""
        model = self.model
        with torch.no_grad():
            embeds = model.embed(x[rows])
            am = None if attention_mask is None else attention_mask[rows]
            logits, kv = model.fill_cache(embeds, context=self.context.to(x.device), attention_mask=am)
        B = self.batch

        def full(t: Tensor) -> Tensor:  # (n, ...) for rows -> (B, ...)
            out = t.new_zeros((B, *t.shape[1:]))
            out[rows] = t
            return out

        self.kv = LayerKV(kv.positions, [full(k) for k in kv.keys], [full(v) for v in kv.values])
        self.stale = full(logits.detach())
        self.attention_mask = None if attention_mask is None else attention_mask.bool()  # (B, L), for the context's keys

    def logits(self, embeds: Tensor, rows: Tensor, *, attention_mask: Tensor | None = None, active: Tensor | None = None) -> Tensor:
        """Logits of a step inside the block, through the cache.

        Two forms: whole sequences (embeds (n, L, D), as any denoiser call), or the *window* of
        query positions only (embeds (n, Lq, D)), which is what :func:`tabes.generate` hands its
        samplers with a cache, so that no step pays for the (L, V) logits it does not decode.

        Args:
            embeds: (n, L, D) embeddings of the whole sequences (only the query positions are
                read), or (n, Lq, D) of the query positions.
            rows: (n,) long, the loop's row id of each sequence (repeats allowed).
            attention_mask: ignored: the padding mask given to :meth:`fill` covers every key.
            active: (n, L) or (n, Lq) bool AQA rows, like ``embeds``, or None.

        Returns:
            (n, Lq, V) logits for a window; (n, L, V) for whole sequences: computed at the query
            positions, the refresh forward's (constants) elsewhere.
        """
        if self.kv is None or self.stale is None:
            raise RuntimeError("the block cache was used before fill()")
        lo, hi = self.lo, self.hi
        whole = embeds.shape[1] == self.length
        if not whole and embeds.shape[1] != hi - lo:
            raise ValueError(f"embeds cover {embeds.shape[1]} positions: neither the sequence ({self.length}) nor the window ({hi - lo})")
        q_pos = self.positions.to(embeds.device)
        out = self.model.logits_with_cache(
            embeds[:, lo:hi] if whole else embeds,
            positions=q_pos,
            kv=self.kv.rows(rows),
            attention_mask=None if self.attention_mask is None else self.attention_mask[rows],
            active=active[:, lo:hi] if whole and active is not None else active,
        )  # (n, Lq, V)
        if not whole:
            return out
        full = self.stale.index_select(0, rows).to(out.dtype)  # (n, L, V), a copy
        full[:, lo:hi] = out  # autograd records the write: gradient reaches the query positions only
        return full
