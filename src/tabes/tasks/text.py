"""Text generation with a tokenizer-carrying denoiser (e.g. :class:`tabes.models.hf.HFDenoiser`).

Each prompt is tokenized without special tokens (with them for a model that asks for them:
DiffusionGemma), left-padded to the longest prompt (padding
is hidden by the attention mask) and followed by ``gen_length`` mask tokens, which
:func:`tabes.generate` fills, optionally block by block, as LLaDA's ``generate.py`` and
Fast-dLLM do: every generated position is decoded, and the text is cut at the first EOS.

The padding token is the tokenizer's pad token, else its EOS token; never the mask token (a
padding position holding the mask id would be decoded as text, and the blocks would start in
the padding). A tokenizer that has neither, or whose pad token is the mask token, is refused
when a batch needs padding.

``eos_fill=True`` is a shortcut no reference decoder takes: once a row commits EOS, every later
masked position becomes EOS at once, with no further passes for that row. It saves passes,
but it changes the tokens: a position after the EOS no longer competes for the step budget,
so the positions that are still decoded (before the EOS too) are chosen differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tabes.protocol import GenerationOutput
from tabes.search import decode


@dataclass
class TextResult:
    """Completions (prompt excluded) and the decoding output behind them."""

    texts: list[str]
    output: GenerationOutput
    prompt_length: int


def encode_prompts(model, prompts: list[str], gen_length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompts followed by ``gen_length`` masks: ((B, P + gen_length) ids,
    (B, P + gen_length) bool attention mask, P), on the model's device."""
    tok = model.tokenizer
    return pad_prompts(model, [tok(p, add_special_tokens=prompt_specials(model))["input_ids"] for p in prompts], gen_length)


def prompt_specials(model) -> bool:
    """Whether prompts are tokenized with the tokenizer's special tokens (its BOS, ...): for a model
    that says so (DiffusionGemma, whose ``generate`` takes the tokenizer's ``input_ids`` as they come),
    not for masked models (LLaDA's and Fast-dLLM's decoders take the prompt without them)."""
    return bool(getattr(model, "prompt_special_tokens", False))


def pad_prompts(model, encoded: list[list[int]], gen_length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`encode_prompts` for prompts already tokenized (lists of ids)."""
    P = max(len(e) for e in encoded)
    pad = pad_id(model) if any(len(e) < P for e in encoded) else model.mask_id  # the value is unused without padding
    B, L = len(encoded), P + gen_length
    limit = getattr(model, "max_positions", None)
    if limit is not None and limit < L:
        raise ValueError(f"prompt ({P} tokens) + gen_length ({gen_length}) = {L} positions, more than the model's {limit}")
    device = model.token_embeddings().device  # the model's device: inputs go where the weights are
    ids = torch.full((B, L), model.mask_id, dtype=torch.long, device=device)
    attention_mask = torch.ones(B, L, dtype=torch.bool, device=device)
    for b, e in enumerate(encoded):
        ids[b, : P - len(e)] = pad
        attention_mask[b, : P - len(e)] = False
        ids[b, P - len(e) : P] = torch.tensor(e, dtype=torch.long, device=device)
    return ids, attention_mask, P


def completion(tok, gen: list[int], eos_ids: list[int] | None = None) -> tuple[str, int]:
    """The text of generated ids ``gen`` up to the first EOS, and how many ids that is.

    ``eos_ids``: the ids that end the text (None: the tokenizer's EOS; empty: nothing does)."""
    eos_ids = [tok.eos_token_id] if eos_ids is None and tok.eos_token_id is not None else eos_ids or []
    n = min((gen.index(e) for e in eos_ids if e in gen), default=len(gen))
    return tok.decode(gen[:n], skip_special_tokens=True), n


def pad_to_blocks(ids: torch.Tensor, attention_mask: torch.Tensor, block_length: int, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids and attention mask padded on the right to whole blocks of ``block_length``, with
    masks that attention does not see: LLaDA 2's pipeline decodes that tail with the last block."""
    B, tail = ids.shape[0], -ids.shape[1] % block_length
    ids = torch.cat([ids, ids.new_full((B, tail), mask_id)], 1)
    return ids, torch.cat([attention_mask, attention_mask.new_zeros((B, tail))], 1)


def pad_id(model) -> int:
    """The id that pads prompts: the tokenizer's pad token, else its EOS token, never the mask.

    Raises ``ValueError`` when the tokenizer has neither, or when the candidate is the mask id.
    """
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise ValueError("prompts of different lengths need padding, but the tokenizer has no pad token and no EOS token; set one")
    if pad == model.mask_id:
        raise ValueError(f"the tokenizer's pad token id {pad} is the mask id: padding would be decoded as text; set another pad token")
    return pad


def canvas_layout(model, gen_length: int, block_length: int | None, blocks: str = "tabes") -> tuple[int, int | None]:
    """``(gen_length, block_length)`` as a model that decodes whole canvases (``canvas_length``:
    DiffusionGemma) takes them: the length rounded up to whole canvases, the canvas as the block.
    Other models get them unchanged. ``ValueError`` (its message starts with the field) for
    another block length, or ``blocks`` other than ``"tabes"``, on such a model."""
    canvas = getattr(model, "canvas_length", None)
    if canvas is None:
        return gen_length, block_length
    if block_length not in (None, canvas):
        raise ValueError(f"block_length must be the model's canvas_length ({canvas}) or unset, got {block_length}")
    if blocks != "tabes":
        raise ValueError(f"blocks={blocks!r} is for masked models; this model decodes its own canvases")
    return -(-gen_length // canvas) * canvas, canvas


def generate_text(
    model,
    prompts: list[str],
    *,
    gen_length: int = 64,
    steps: int = 64,
    block_length: int | None = None,
    sampler="confidence",
    temperature: float = 0.0,
    seed: int = 0,
    eos_fill: bool = False,
    cache: str = "none",
    blocks: str = "tabes",
) -> TextResult:
    """Complete each prompt with ``gen_length`` generated tokens (the text ends at the first EOS).

    ``eos_fill``: fill a row's later masks with EOS once it commits one (faster, but not the
    reference decoders' tokens; see the module docstring).

    ``blocks="llada2"``: decode as diffusers' ``LLaDA2Pipeline`` does (:mod:`tabes.blocks`; use
    the ``llada2`` sampler for its commit and edit rule): blocks of ``block_length`` (default 32)
    aligned from position 0, the sequence padded with hidden masks to whole blocks, and a row
    that commits EOS stops there. ``steps`` is the steps per block times the blocks decoded.

    Example:
        >>> res = generate_text(tabes.load("path/to/llada"), ["2 + 2 ="], gen_length=32, steps=32, block_length=8)  # doctest: +SKIP
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("text generation needs a model with a tokenizer (a transformers checkpoint folder with tokenizer files)")
    if gen_length <= 0:
        raise ValueError(f"gen_length must be positive, got {gen_length}")
    if not prompts:
        raise ValueError("no prompts given")
    gen_length, block_length = canvas_layout(model, gen_length, block_length, blocks)
    ids, attention_mask, P = encode_prompts(model, prompts, gen_length)
    B = len(prompts)
    eos = tok.eos_token_id
    stop = eos if eos_fill else None
    if blocks == "llada2":
        block_length = block_length or 32
        ids, attention_mask = pad_to_blocks(ids, attention_mask, block_length, model.mask_id)
        stop = eos  # its EOS early stop
    out = decode(
        model,
        ids,
        sampler=sampler,
        steps=steps,
        block_length=block_length,
        temperature=temperature,
        generator=torch.Generator().manual_seed(seed),
        attention_mask=attention_mask,
        eos_id=stop,
        **({} if cache == "none" else {"cache": cache}),
        **({} if blocks == "tabes" else {"blocks": blocks}),
    )
    ends = getattr(model, "completion_eos", None)
    texts = [completion(tok, out.sequences[b, P : P + gen_length].tolist(), ends)[0] for b in range(B)]
    return TextResult(texts=texts, output=out, prompt_length=P)
