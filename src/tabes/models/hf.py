"""Transformers checkpoints behind the :class:`tabes.protocol.Denoiser` protocol: the adapter the
masked families share, and ``load_hf``, which recognises a folder's family.

One file per family holds what is its own:

- :mod:`tabes.models.masked_lm`: any ``*ForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...) as an MDM.
- :mod:`tabes.models.llada`: LLaDA's layout (remote code; mask id 126336; attention hooked in its blocks).
- :mod:`tabes.models.dream`: Dream's layout (an MDM from an autoregressive model; logits shifted).
- :mod:`tabes.models.diffusion_gemma`: DiffusionGemma (uniform noise; its own adapter).

The shared pieces are here and in :mod:`tabes.models.attention` (the ``tabes_aqa`` attention
function, ActiveQueryAttention's context, the block KV cache's context, row-skipping linears).
A model whose attention layers do not call the registry keeps a dense backward, with one logged
warning; BoE's result is the same either way, only the time differs. Models whose attention does
not reach ``tabes_aqa`` cannot use the KV cache.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from tabes.cache import LayerKV
from tabes.models import masked_lm
from tabes.models.attention import ACTIVE, CALLED, KV, CacheCall, padded_positions, register_attention, row_skipping
from tabes.models.diffusion_gemma import is_diffusion_gemma, load_diffusion_gemma
from tabes.models.dream import LOGIT_SHIFT, shift_logits
from tabes.models.llada import default_mask_id, llada_blocks, route_llada
from tabes.ops.aqa import AQA_MODES

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
KINDS = ("auto", "masked-lm", "llada", "dream", "diffusion-gemma")


class HFDenoiser:
    """A transformers model as a denoiser.

    Args:
        model: a transformers ``PreTrainedModel`` returning ``.logits`` and accepting
            ``inputs_embeds``.
        mask_id: the mask token id.
        tokenizer: optional, for decoding text.
        logit_shift: 1 for Dream-style models (prediction for i at i - 1), else 0.
        bidirectional: pass a full (B, 1, L, L) additive mask so that a model built as a causal
            LM attends both ways (LLaDA/Dream stand-ins built from Llama/Qwen2 configs).
        aqa_mode: ActiveQueryAttention mode used when an active mask is passed.
    """

    def __init__(
        self, model, *, mask_id: int, tokenizer=None, logit_shift: int = 0, bidirectional: bool = False, aqa_mode: str = "kv"
    ) -> None:
        if "inputs_embeds" not in inspect.signature(model.forward).parameters:
            raise ValueError(f"{type(model).__name__}.forward does not accept inputs_embeds; BoE needs embedding inputs")
        if aqa_mode not in AQA_MODES:
            raise ValueError(f"aqa_mode must be one of {AQA_MODES}, got {aqa_mode!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(emb.shape[0])
        if not 0 <= mask_id < emb.shape[0]:
            raise ValueError(f"mask_id {mask_id} is outside the model's input vocabulary of {emb.shape[0]} tokens")
        self.mask_id = int(mask_id)
        self.logit_shift = int(logit_shift)
        self.bidirectional = bidirectional
        self.aqa_mode = aqa_mode
        self.skip_rows = True  # row-skipping linear layers in BoE's backward (see logits_from_embeds)
        self._linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        self._llada = llada_blocks(model)  # LLaDA's remote code calls attention inside its own blocks
        self._routes: bool | None = None  # probed at the first backward (see routes_attention)
        self._warned = False
        self._pos: tuple | None = None  # (the mask's identity, its position ids), see _positions

    # ------------------------------------------------------------------ attention routing
    @property
    def routes_attention(self) -> bool:
        """Whether BoE's backward runs through ActiveQueryAttention. The first call (the first
        backward; samplers that never backpropagate never make it) switches the model to
        ``tabes_aqa`` and keeps it only if a probe call reaches it."""
        if self._routes is None:
            self._routes = self._switch_to_registry()
        return self._routes

    def _switch_to_registry(self) -> bool:
        """Try the ``tabes_aqa`` implementation; keep it only if a probe call reaches it. LLaDA's
        layout gets it through its blocks instead (the attention method and a RoPE hook)."""
        if self._llada is not None:
            route_llada(self._llada)
            return self._probe()
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its refusal is reported once, by logits_from_embeds
        try:
            register_attention()
            previous = self.model.config._attn_implementation
            self.model.set_attn_implementation("tabes_aqa")
        except Exception:  # noqa: BLE001  (older transformers or a model that refuses custom attention)
            return False
        finally:
            transformers.logging.set_verbosity(verbosity)
        if not self._probe():
            self.model.set_attn_implementation(previous)
            return False
        return True

    def _probe(self) -> bool:
        """Whether a forward reaches the ``tabes_aqa`` attention."""
        calls: list[int] = []
        token = CALLED.set(calls)
        try:
            with torch.no_grad():
                ids = torch.full((1, 2), self.mask_id, dtype=torch.long, device=self.model.device)
                self._forward(self.embed(ids), None)
        finally:
            CALLED.reset(token)
        return bool(calls)

    # ------------------------------------------------------------------ protocol
    def embed(self, ids: Tensor) -> Tensor:
        """(B, L) long -> (B, L, D) input embeddings."""
        return self.model.get_input_embeddings()(ids)

    def token_embeddings(self) -> Tensor:
        """(V_in, D) input-embedding matrix."""
        return self.model.get_input_embeddings().weight

    def _forward(self, embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        B, L, _ = embeds.shape
        mask = attention_mask
        if self.bidirectional:
            keep = torch.ones(B, L, dtype=torch.bool, device=embeds.device) if attention_mask is None else attention_mask.bool()
            mask = torch.zeros(B, 1, L, L, dtype=embeds.dtype, device=embeds.device).masked_fill(~keep[:, None, None, :], float("-inf"))
        extra = {}
        if attention_mask is not None and self._takes_positions:
            # left padding: positions count from each row's first real token, so a row decodes
            # the same alone and in a padded batch
            extra["position_ids"] = self._positions(attention_mask)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask, **extra).logits  # (B, L, V)
        return shift_logits(logits) if self.logit_shift else logits  # Dream: position i's prediction sits at i - 1

    def _positions(self, attention_mask: Tensor) -> Tensor:
        """:func:`padded_positions` of ``attention_mask``, kept while the same unchanged mask comes
        back (the loop passes one mask, step after step). The kept entry holds the mask itself, so
        its memory cannot be reused by another tensor while the entry matches by address; an
        in-place change bumps its version."""
        key = (attention_mask.data_ptr(), attention_mask.shape, attention_mask.stride(), attention_mask._version, attention_mask.dtype)
        if self._pos is None or self._pos[0] != key:
            self._pos = (key, attention_mask, padded_positions(attention_mask))
        return self._pos[2]

    def logits_from_embeds(
        self, embeds: Tensor, *, attention_mask: Tensor | None = None, active: Tensor | None = None, grad_rows: Tensor | None = None
    ) -> Tensor:
        """(B, L, D) -> (B, L, V); with ``active``, the backward runs through ActiveQueryAttention.

        With ``active`` under autograd the backward is input-gradient-only: every plain
        ``torch.nn.Linear`` skips the rows whose upstream gradient is zero (``skip_rows``), and
        ``grad_rows`` (B, L) bool, the rows of ``embeds`` whose gradient the caller reads, makes
        the other rows constants and reaches the first attention layer (its backward then needs
        only those rows of q, k and v). Parameters get no gradient.
        """
        if active is None:
            return self._forward(embeds, attention_mask)
        if grad_rows is not None and torch.is_grad_enabled():
            if grad_rows.shape != embeds.shape[:2] or grad_rows.dtype != torch.bool:
                raise ValueError(
                    f"grad_rows must be a (B, L) = {tuple(embeds.shape[:2])} bool tensor, got {tuple(grad_rows.shape)} {grad_rows.dtype}"
                )
            embeds = torch.where(grad_rows[..., None], embeds, embeds.detach())
        skipping = row_skipping(self._linears) if self.skip_rows and torch.is_grad_enabled() else contextlib.nullcontext()
        if not self.routes_attention:
            if not self._warned:
                log.warning("%s does not route attention through the registry: BoE uses a dense backward", type(self.model).__name__)
                self._warned = True
            with skipping:
                return self._forward(embeds, attention_mask)
        token = ACTIVE.set((active, self.aqa_mode, grad_rows, []))
        try:
            with skipping:
                return self._forward(embeds, attention_mask)
        finally:
            ACTIVE.reset(token)

    # ------------------------------------------------------------------ KV cache (tabes.cache)
    def _check_cache(self) -> None:
        if self.logit_shift:
            raise ValueError("the KV cache does not support Dream-style shifted logits yet; use cache='none'")
        cfg = self.model.config
        types = getattr(cfg, "layer_types", None)  # transformers 5 lists each layer's attention
        local = any(t != "full_attention" for t in types) if types else getattr(cfg, "global_attn_every_n_layers", 1) > 1
        if local or (getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None)):
            raise ValueError(
                f"{type(self.model).__name__} has sliding-window attention layers; the KV cache supports global attention only"
            )
        if not self._takes_positions and self._llada is None:
            raise ValueError(f"{type(self.model).__name__}.forward takes no position_ids, which the KV cache needs; use cache='none'")
        if not self.routes_attention:
            raise ValueError(
                f"{type(self.model).__name__} does not route attention through transformers' AttentionInterface "
                "(e.g. BERT and ModernBERT before transformers 5), which the KV cache needs; use cache='none'"
            )

    def fill_cache(self, embeds: Tensor, *, context: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, LayerKV]:
        """The refresh forward: (B, L, D), (L,) bool context -> ((B, L, V) logits, the context's keys and values)."""
        self._check_cache()
        ctx = context.to(embeds.device).nonzero().squeeze(-1)
        call = CacheCall(context=ctx)
        token = KV.set(call)
        try:
            with torch.no_grad():
                logits = self._forward(embeds, attention_mask)
        finally:
            KV.reset(token)
        return logits, LayerKV(ctx, call.keys, call.values)

    def logits_with_cache(
        self, embeds: Tensor, *, positions: Tensor, kv: LayerKV, attention_mask: Tensor | None = None, active: Tensor | None = None
    ) -> Tensor:
        """A step through the cache: (B, Lq, D) embeddings at ``positions`` (Lq,) -> (B, Lq, V).
        ``attention_mask``: (B, L) of the whole sequence; ``active``: (B, Lq) AQA rows."""
        self._check_cache()
        B, Lq, _ = embeds.shape
        keys = torch.cat([kv.positions.to(embeds.device), positions.to(embeds.device)])
        order = None if bool((keys[1:] > keys[:-1]).all()) else keys.argsort()  # dual: the block sits between context keys
        split = None
        if order is not None and active is None:
            ctx, first = kv.positions.to(embeds.device), positions[0].to(embeds.device)
            a = int((ctx < first).sum())
            if bool((keys[order] == torch.cat([ctx[:a], positions.to(embeds.device), ctx[a:]])).all()):
                split, order, keys = a, None, keys[order]  # one run of positions: place the block's keys, no gather
        key_bias = None
        if attention_mask is not None and self._llada is None:  # LLaDA's own attention ignores padding, so does its cache
            key_bias = torch.zeros(B, 1, 1, keys.numel(), dtype=torch.float32, device=embeds.device)
            key_bias = key_bias.masked_fill(~attention_mask.bool()[:, None, None, keys], float("-inf"))
        extra = {}
        if self._llada is None:  # LLaDA: the RoPE hook places the queries
            extra["position_ids"] = positions.expand(B, Lq) if attention_mask is None else padded_positions(attention_mask)[:, positions]
        # the model's own mask is replaced by key_bias in the attention; pass one of the right size
        mask = torch.zeros(B, 1, Lq, Lq, dtype=embeds.dtype, device=embeds.device) if self.bidirectional else None
        call = CacheCall(kv=kv, key_bias=key_bias, order=order, split=split, active=active, positions=positions, mode=self.aqa_mode)
        token = KV.set(call)
        try:
            return self.model(inputs_embeds=embeds, attention_mask=mask, **extra).logits
        finally:
            KV.reset(token)

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the checkpoint's position embeddings were configured for (None if unknown)."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) ids -> (B, L, V) logits."""
        return self.logits_from_embeds(self.embed(ids), attention_mask=attention_mask)


def load_hf(
    path: str | Path,
    *,
    kind: str = "auto",
    trust_remote_code: bool = False,
    mask_id: int | None = None,
    device: str = "cpu",
    aqa_mode: str = "kv",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> HFDenoiser:
    """Load a local transformers checkpoint folder as a :class:`HFDenoiser` (never downloads).

    ``kind="auto"`` picks ``llada`` or ``dream`` from the config's model type or
    architectures, else ``masked-lm``. Remote code runs only with ``trust_remote_code=True``.
    Weights load from safetensors; pickle ``.bin`` weights (which can run code when loaded)
    only with ``allow_pickle=True``. ``dtype`` (e.g. ``torch.bfloat16``) is the weights'
    dtype; None keeps float32.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        import transformers
    except ImportError:
        raise ValueError("loading a transformers checkpoint needs the hf extra: pip install 'tabes[hf]'") from None
    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    names = " ".join([str(raw.get("model_type", "")), *map(str, raw.get("architectures") or [])]).lower()
    if kind == "auto" and not is_diffusion_gemma(raw):
        kind = "llada" if "llada" in names else "dream" if "dream" in names else "masked-lm"
    if "auto_map" in raw and not trust_remote_code:
        raise ValueError(f"{path} needs its own model code (auto_map in config.json); pass trust_remote_code=True to run it")
    common = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    weights = dict(common, use_safetensors=None if allow_pickle else True)
    if dtype is not None:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        weights["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype  # "dtype" replaced "torch_dtype" in 4.56
    if not allow_pickle and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise ValueError(f"{path} has only pickle weights (*.bin), which can run code; pass allow_pickle=True (--allow-pickle) if trusted")
    tokenizer = None
    if any((path / name).is_file() for name in TOKENIZER_FILES):  # transformers 5 makes an empty tokenizer from no files
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
        except Exception:  # noqa: BLE001  (a checkpoint with unreadable tokenizer files still decodes ids)
            tokenizer = None
    if is_diffusion_gemma(raw) or kind == "diffusion-gemma":
        if not is_diffusion_gemma(raw) or kind not in ("auto", "diffusion-gemma"):
            raise ValueError(f"{path}: kind {kind!r} does not fit this checkpoint ({raw.get('model_type')})")
        if mask_id is not None:
            raise ValueError(f"{path}: a DiffusionGemma checkpoint has no mask token (uniform noise); do not pass mask_id={mask_id}")
        return load_diffusion_gemma(path, tokenizer=tokenizer, device=device, dtype=dtype, aqa_mode=aqa_mode)
    auto = masked_lm.model_class()
    if kind in ("llada", "dream") and "auto_map" not in raw and masked_lm.is_masked_lm(raw.get("model_type")):
        # an encoder, not a decoder turned bidirectional
        raise ValueError(
            f"{path}: kind {kind!r} does not fit this checkpoint ({raw.get('model_type')}): it is a masked LM; use kind 'masked-lm'"
        )
    if kind != "masked-lm":  # LLaDA and Dream: a decoder's layout, attending both ways
        auto = transformers.AutoModel if "auto_map" in raw else transformers.AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, **weights)
    except (ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: kind {kind!r} does not fit this checkpoint ({raw.get('model_type')}): {first}") from None
    model = model.to(device)
    if mask_id is None:
        mask_id = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
        mask_id = mask_id if mask_id is not None else raw.get("mask_token_id")
        if mask_id is None and kind == "llada":
            mask_id = default_mask_id(path, raw.get("model_type"), model.get_input_embeddings().weight.shape[0])
    if mask_id is None:
        if tokenizer is None:
            raise ValueError(f"{path}: no tokenizer files in the folder, so no mask token id; save the tokenizer there")
        raise ValueError(f"{path}: no mask token id in the tokenizer or config; pass mask_id=...")
    try:
        return HFDenoiser(
            model,
            mask_id=int(mask_id),
            tokenizer=tokenizer,
            logit_shift=LOGIT_SHIFT if kind == "dream" else 0,
            bidirectional=kind in ("llada", "dream") and "auto_map" not in raw,
            aqa_mode=aqa_mode,
        )
    except ValueError as err:
        if "outside" in str(err):  # a mask id the caller gave: their value, their message
            raise
        raise ValueError(f"{path}: kind {kind!r} does not fit this checkpoint ({raw.get('model_type')}): {err}") from None
