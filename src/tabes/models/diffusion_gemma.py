"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) behind the Denoiser protocol.

DiffusionGemma is block diffusion with **uniform noise**, not a mask: a causal *encoder* holds
the prompt and every finished canvas in a KV cache, and a bidirectional *decoder* refines a
canvas of ``canvas_length`` tokens that starts as random tokens, reading that cache. Two ways
to decode it:

- **native** (:meth:`DiffusionGemmaDenoiser.native_generate`, the sampler spec ``native``): the
  checkpoint's own rule, as ``model.generate()`` runs it with its generation config. Per canvas:
  a random canvas; per step, the decoder (with the previous step's logits as self-conditioning)
  gives logits, scaled by a linear temperature schedule; a token is sampled at every position,
  the positions whose entropies fit the entropy bound (the ``eb`` rule) keep their sample and
  all the others get fresh random tokens; the canvas's answer is the argmax of the last step,
  and a row stops denoising once that argmax is stable and its mean entropy is low. Every
  random draw comes from the caller's ``torch.Generator`` in the order ``generate`` draws from
  the global one, so ``generator=torch.Generator().manual_seed(s)`` gives the tokens of
  ``torch.manual_seed(s); model.generate(...)``.
- **any tabes sampler**, through the masked-diffusion loop: the adapter shows a mask id one past
  the vocabulary (``mask_id = V``; its logit column is never a choice). Before a forward, every
  masked position holds a *noise token*: a uniform draw from a generator seeded by the row's
  content and ``noise_seed``, so one step's calls (a forward, BoE's surrogate and backward) see
  the same noise, a commit gives the row fresh noise (the renoising), and a row's noise does
  not depend on the other rows. "Commit" means the token stays fixed in the canvas; "remask"
  means it becomes noise again. The sequence's last positions are whole canvases: the current
  canvas is the first one with a masked position in any row; everything before it goes
  through the encoder (cached while it does not change), the canvas through the decoder. Only
  that canvas gets logits (other positions read a uniform row), so decode with
  ``block_length = canvas_length`` (:func:`tabes.tasks.text.generate_text` does). The loop
  carries each row's logits over the canvas from one step to its next (``conditioned``), and
  the decoder reads them as its self-conditioning input, as the native rule does; a canvas's
  first step has none.

Positions are counted as ``model.generate()`` counts them: from the first column of the
(left-padded) batch, so a padded row's tokens depend on its padding, as they do there.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tabes.models.attention import ACTIVE, register_attention
from tabes.ops.aqa import AQA_MODES

# the decoder's input embeddings of the current call, put in place of embed_tokens' output
_CANVAS: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar("tabes_dg_canvas", default=None)


@dataclass
class NativeSettings:
    """The native rule's settings: the generation config's values, then the caller's overrides.

    ``t_min``/``t_max`` None: no temperature schedule; ``stopping`` False: every canvas takes
    all ``max_denoising_steps``; ``eos_id``/``pad_id``: a row that produces EOS ends with that
    canvas, and what follows its EOS becomes ``pad_id`` (each only when set)."""

    max_denoising_steps: int
    entropy_bound: float
    t_min: float | None
    t_max: float | None
    stability_threshold: int
    confidence_threshold: float
    stopping: bool
    eos_id: list[int] | None
    pad_id: int | None


@dataclass
class NativeOutput:
    """sequences (B, P + n x canvas_length): prompt and canvases; forwards (B,) decoder passes
    that counted for each row; steps (B,) denoising steps each row took, over all canvases."""

    sequences: Tensor
    forwards: Tensor
    steps: Tensor


def is_diffusion_gemma(config: dict) -> bool:
    """True for a ``config.json`` (as a dict) of a DiffusionGemma checkpoint."""
    names = " ".join([str(config.get("model_type", "")), *map(str, config.get("architectures") or [])]).lower()
    return "diffusion_gemma" in names or "diffusiongemma" in names


class DiffusionGemmaDenoiser:
    """A ``DiffusionGemmaForBlockDiffusion`` as a :class:`tabes.protocol.Denoiser` (see the module docstring).

    Attributes:
        vocab_size: V + 1 (the model's V tokens and the virtual mask).
        mask_id: V, a mask the model never sees (masked positions hold noise tokens).
        canvas_length: C, the decoder's block.
        noise_seed: seeds the noise tokens of masked positions (with each row's content).
    """

    def __init__(self, model, *, tokenizer=None, noise_seed: int = 0, aqa_mode: str = "kv") -> None:
        if aqa_mode not in AQA_MODES:
            raise ValueError(f"aqa_mode must be one of {AQA_MODES}, got {aqa_mode!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.noise_seed = int(noise_seed)
        text = model.config.get_text_config()
        self.V = int(text.vocab_size)
        self.vocab_size = self.V + 1
        self.mask_id = self.V
        self.canvas_length = int(model.config.canvas_length)
        self._decoder = model.model.decoder
        self._encoder = model.model.encoder
        self._decoder.embed_tokens.register_forward_hook(_canvas_hook)
        self.routes_attention = True  # BoE's backward runs through ActiveQueryAttention in the decoder (``_aqa``)
        self.aqa_mode = aqa_mode
        self.conditioned = True  # the loop hands each row's previous logits back (self-conditioning)
        self.prompt_special_tokens = True  # prompts as its tokenizer makes them (Gemma's BOS), as generate() takes them
        self._ids: Tensor | None = None  # the ids of the last embed() call: where the masks are
        self._prefix: tuple[Tensor, Tensor, object] | None = None  # (embeds, mask, encoder cache) of the last prefix

    # -- the Denoiser protocol ------------------------------------------------------------

    def _scale(self) -> Tensor:
        return self._decoder.embed_tokens.embed_scale.to(self._decoder.embed_tokens.weight.dtype)

    def token_embeddings(self) -> Tensor:
        """(V + 1, D): the scaled embedding matrix and a zero row for the virtual mask."""
        W = self._decoder.embed_tokens.weight
        return torch.cat([W * self._scale(), W.new_zeros(1, W.shape[1])])

    def noised(self, ids: Tensor) -> Tensor:
        """(B, L) ids with each masked position replaced by its noise token (see the module docstring)."""
        masked = ids == self.mask_id
        if not bool(masked.any()):
            return ids
        out = ids.clone()
        for b in masked.any(-1).nonzero().flatten().tolist():
            digest = hashlib.blake2b(ids[b].cpu().numpy().tobytes(), digest_size=8, key=str(self.noise_seed).encode()).digest()
            g = torch.Generator(device=ids.device).manual_seed(int.from_bytes(digest, "little") >> 1)
            noise = torch.randint(0, self.V, (ids.shape[1],), generator=g, device=ids.device)
            out[b] = torch.where(masked[b], noise, ids[b])
        return out

    def embed(self, ids: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, D) embeddings, noise tokens at the masked positions."""
        self._ids = ids
        return F.embedding(self.noised(ids), self._decoder.embed_tokens.weight) * self._scale()

    def _canvas(self, ids: Tensor) -> int:
        """Start of the current canvas: canvases tile the sequence's end; the first with a mask."""
        L, C = ids.shape[1], self.canvas_length
        cols = (ids == self.mask_id).any(0).nonzero()
        first = int(cols[0]) if len(cols) else L - C
        start = L - C * math.ceil((L - first) / C)
        if start <= 0:
            raise ValueError(
                f"the canvas starting at {start} leaves no prompt: DiffusionGemma needs at least one prompt token before its canvases"
            )
        return start

    def _encode(self, embeds: Tensor, mask: Tensor):
        """The encoder's KV cache of ``embeds`` (B, S, D), reused while the prefix is unchanged."""
        from transformers import DynamicCache

        if self._prefix is not None:
            e, m, cache = self._prefix
            if e.shape == embeds.shape and torch.equal(e, embeds) and torch.equal(m, mask):
                return cache
        B, S, _ = embeds.shape
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        pos = torch.arange(S, dtype=torch.int32, device=embeds.device)[None]
        masks = self._encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=embeds[..., :0], attention_mask=mask, cache=cache, position_ids=pos
        )
        with torch.no_grad():
            cache = self._encoder(inputs_embeds=embeds, attention_mask=masks, cache=cache, position_ids=pos).cache
        self._prefix = (embeds.clone(), mask.clone(), cache)
        return cache

    def logits_from_embeds(
        self,
        embeds: Tensor,
        *,
        attention_mask: Tensor | None = None,
        active: Tensor | None = None,
        grad_rows: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """(B, L, D) embeddings of the ids of the last :meth:`embed` call -> (B, L, V + 1) logits.

        Only the current canvas's rows are the decoder's; the others are zeros (uniform), and
        the mask column is zero (decoding excludes it). The prefix's embeddings go through the
        encoder without gradient: no path leads from them to the canvas's entropy that BoE
        differentiates except through the decoder's cache reads, which it treats as constants.
        ``active`` (B, L) under autograd: the decoder's backward runs through ActiveQueryAttention
        with the canvas's rows of it (the cache's keys are constants, the canvas's own keys come
        last, as :func:`tabes.ops.aqa.attention_to_keys` wants); ``grad_rows`` is not used.

        ``condition``: (B, C, V + 1) the rows' logits over this canvas from their previous step
        (the loop keeps them, see ``conditioned``), fed to the decoder's self-conditioning as a
        constant; None (a canvas's first step) gives the zero signal. A condition of another
        shape (a block that is not the canvas) is not used."""
        ids = self._ids
        if ids is None or ids.shape != embeds.shape[:2]:
            raise ValueError("DiffusionGemmaDenoiser.logits_from_embeds needs the ids of these embeddings: call embed(ids) first")
        B, L, _ = embeds.shape
        C, s = self.canvas_length, self._canvas(ids)
        am = torch.ones(B, L, dtype=torch.bool, device=embeds.device) if attention_mask is None else attention_mask.bool()
        cache = self._encode(embeds[:, :s].detach(), am[:, :s])
        sc = None
        if condition is not None and condition.shape[:2] == (B, C):
            sc = condition[..., : self.V].detach().to(self._decoder.embed_tokens.weight.dtype)
        token = _CANVAS.set(embeds[:, s : s + C])
        aqa = self._aqa(active[:, s : s + C]) if active is not None and torch.is_grad_enabled() else contextlib.nullcontext()
        try:
            with aqa:
                hidden = self.model.model(
                    decoder_input_ids=torch.zeros(B, C, dtype=torch.long, device=embeds.device),
                    self_conditioning_logits=sc,
                    decoder_attention_mask=torch.cat([am[:, :s], am.new_ones(B, C)], 1),
                    cache=cache,
                    decoder_position_ids=torch.arange(s, s + C, dtype=torch.int32, device=embeds.device)[None],
                ).last_hidden_state  # (B, C, D)
        finally:
            _CANVAS.reset(token)
        # the model's head and soft cap, at float32 or wider (its forward casts to float32; a
        # float64 model keeps float64 here, for gradient checks)
        out = self.model.lm_head(hidden)
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        cap = self.model.final_logit_softcapping
        out = torch.tanh(out / cap) * cap if cap else out  # (B, C, V)
        full = out.new_zeros(B, L, self.vocab_size)
        full[:, s : s + C, : self.V] = out
        return full

    @contextlib.contextmanager
    def _aqa(self, active: Tensor):
        """For one decoder call: its attention layers call ``tabes_aqa`` with the canvas's active
        rows ``active`` (B, C); the encoder (which shares their config) is not called meanwhile,
        and the implementation is restored after, so the native rule keeps the model's own."""
        cfg = self._decoder.layers[0].self_attn.config
        register_attention()
        previous, cfg._attn_implementation = cfg._attn_implementation, "tabes_aqa"
        token = ACTIVE.set((active, self.aqa_mode, None, []))
        try:
            yield
        finally:
            ACTIVE.reset(token)
            cfg._attn_implementation = previous

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) ids -> (B, L, V + 1) logits."""
        return self.logits_from_embeds(self.embed(ids), attention_mask=attention_mask)

    @property
    def max_positions(self) -> int | None:
        n = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return int(n) if n else None

    @property
    def completion_eos(self) -> list[int]:
        """The ids that end a completion's text: the generation config's EOS, as ``model.generate()``
        stops there and pads what follows; none when it sets no EOS (it then does not stop)."""
        return self.native_settings().eos_id or []

    # -- the native rule ------------------------------------------------------------------

    def native_settings(self, **overrides) -> NativeSettings:
        """The generation config's settings (where it has none, the defaults its class gives
        ``generate()``), then ``overrides`` (keys of :class:`NativeSettings`; None values are ignored)."""
        gc = self.model.generation_config
        defaults = getattr(type(gc), "_get_default_generation_params", dict)()  # generate()'s own, not a copy

        def get(name: str):
            value = getattr(gc, name, None)
            return defaults.get(name) if value is None else value

        sampler = get("sampler_config")
        if sampler is None or get("max_denoising_steps") is None:
            raise ValueError(f"{type(gc).__name__} gives no sampler_config or max_denoising_steps, and this transformers no defaults")
        eos = getattr(gc, "eos_token_id", None)
        values = dict(
            max_denoising_steps=get("max_denoising_steps"),
            entropy_bound=sampler.entropy_bound,
            t_min=get("t_min"),
            t_max=get("t_max"),
            stability_threshold=get("stability_threshold"),
            confidence_threshold=get("confidence_threshold"),
            stopping=True,
            eos_id=None if eos is None else [eos] if isinstance(eos, int) else list(eos),
            pad_id=getattr(gc, "pad_token_id", None),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return NativeSettings(**values)

    @torch.no_grad()
    def native_generate(
        self,
        ids: Tensor,
        *,
        new_tokens: int,
        generator: torch.Generator,
        attention_mask: Tensor | None = None,
        settings: NativeSettings | None = None,
    ) -> NativeOutput:
        """Decode ``ids`` (B, P) prompts (left-padded, ``attention_mask`` (B, P) False at padding)
        into ``ceil(new_tokens / C)`` canvases with the native rule (module docstring)."""
        cfg = settings or self.native_settings()
        m, dec, enc = self.model, self._decoder, self._encoder
        B, P = ids.shape
        C, V, dev = self.canvas_length, self.V, ids.device
        N = cfg.max_denoising_steps
        from transformers import DynamicCache

        cache = DynamicCache(config=m.config.get_text_config(decoder=True))
        am = torch.ones(B, P, dtype=torch.bool, device=dev) if attention_mask is None else attention_mask.bool()
        dec_am = F.pad(am, (0, C), value=True)
        enc_pos = torch.arange(0, P, dtype=torch.int32, device=dev)[None]
        dec_pos = torch.arange(P, P + C, dtype=torch.int32, device=dev)[None]
        eos = None if cfg.eos_id is None else torch.tensor(cfg.eos_id, device=dev)
        seq, ended = ids.clone(), torch.zeros(B, dtype=torch.bool, device=dev)
        forwards = torch.zeros(B, dtype=torch.long, device=dev)
        steps = torch.zeros(B, dtype=torch.long, device=dev)
        for k in range(math.ceil(new_tokens / C)):
            # the new tokens (the prompt, then the last canvas) into the encoder's cache
            fresh = (seq if k == 0 else seq[:, -C:]).contiguous()
            masks = enc.create_masks_for_generate(
                config=m.config,
                inputs_embeds=torch.empty(B, fresh.shape[1], 0, dtype=m.dtype, device=dev),
                attention_mask=am,
                cache=cache,
                position_ids=enc_pos,
            )
            cache = enc(input_ids=fresh, attention_mask=masks, cache=cache, position_ids=enc_pos).cache
            canvas = torch.randint(0, V, (B, C), generator=generator, device=dev)
            dmask = dec.create_diffusion_decoder_attention_mask(
                config=m.config, inputs_embeds=canvas[..., None], cache=cache, decoder_attention_mask=dec_am
            )
            answer, sc, done, history = canvas, None, torch.zeros(B, dtype=torch.bool, device=dev), None
            for t in range(N, 0, -1):  # steps remaining, N..1
                live = ~(done | ended)
                forwards += live
                steps += ~done
                logits = m(
                    decoder_input_ids=canvas,
                    self_conditioning_logits=sc,
                    decoder_attention_mask=dmask,
                    cache=cache,
                    decoder_position_ids=dec_pos,
                ).logits
                if cfg.t_min is not None and cfg.t_max is not None:  # linear temperature, t_max at the first step
                    logits = logits / (cfg.t_min + (cfg.t_max - cfg.t_min) * (torch.tensor(t, dtype=torch.int32, device=dev) / N))
                probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
                sample = torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, C)
                argmax = logits.argmax(-1)
                # EB: the lowest-entropy positions whose entropy sum, less its largest term, is within the bound
                ent = torch.distributions.Categorical(logits=logits, validate_args=False).entropy()  # (B, C)
                ent_sorted, order = torch.sort(ent, dim=-1)
                fits = torch.cumsum(ent_sorted, -1) - ent_sorted <= cfg.entropy_bound
                keep = torch.zeros_like(fits).scatter(-1, order, fits)
                noise = torch.randint(0, V, (B, C), generator=generator, device=dev)
                nxt = torch.where(keep, sample, noise)
                if cfg.stopping:  # stable argmax and a confident canvas end a row's denoising
                    if done.any():
                        argmax = torch.where(done[:, None], answer, argmax)
                        nxt = torch.where(done[:, None], canvas, nxt)
                        logits = torch.where(done[:, None, None], sc, logits)
                    S = cfg.stability_threshold
                    if S == 0:
                        stable = torch.ones(B, dtype=torch.bool, device=dev)
                    else:
                        history = torch.full((S, B, C), -1, dtype=argmax.dtype, device=dev) if history is None else history
                        stable = (history == argmax[None]).all(-1).all(0)
                        history = torch.roll(history, -1, 0)
                        history[-1] = argmax
                    # the step's entropies again: a row already done keeps its state whatever this says
                    confident = ent.mean(-1) < cfg.confidence_threshold
                    done |= stable & confident
                sc = logits.to(dec.embed_tokens.weight.dtype)  # self-conditioning for the next step
                canvas, answer = nxt, argmax
                if bool(done.all()):
                    break
            seq = torch.cat([seq, answer], -1)
            # a row ends at the length limit or with an EOS in this canvas; pad what follows
            now = torch.full((B,), seq.shape[1] >= P + new_tokens, device=dev)
            if eos is not None:
                now |= torch.isin(seq[:, -C:], eos).any(-1)
            before, ended = ended, ended | now
            if cfg.pad_id is not None and bool(ended.any()):
                seq[before, -C:] = cfg.pad_id
                if eos is not None and bool(now.any()):
                    tail = seq[:, -C:]
                    is_eos = torch.isin(tail, eos)
                    count = is_eos.cumsum(-1)
                    tail[(count > 0) & ~((count == 1) & is_eos)] = cfg.pad_id
            if bool(ended.all()):
                break
            am, dec_am = F.pad(am, (0, C), value=True), F.pad(dec_am, (0, C), value=True)
            enc_pos, dec_pos = dec_pos, dec_pos + C
        return NativeOutput(seq, forwards, steps)


def _canvas_hook(module, args, output):
    canvas = _CANVAS.get()
    return output if canvas is None else canvas


def _model_class():
    """transformers' ``DiffusionGemmaForBlockDiffusion``, or None where this transformers lacks it."""
    try:
        from transformers import DiffusionGemmaForBlockDiffusion
    except ImportError:
        return None
    return DiffusionGemmaForBlockDiffusion


def load_diffusion_gemma(
    path, *, tokenizer=None, device="cpu", dtype: torch.dtype | None = None, noise_seed: int = 0, aqa_mode: str = "kv"
) -> DiffusionGemmaDenoiser:
    """Load a DiffusionGemma checkpoint folder (safetensors, never downloads) as a :class:`DiffusionGemmaDenoiser`.

    Raises a one-line ``ValueError`` under a transformers without the model."""
    cls = _model_class()
    if cls is None:
        import transformers

        raise ValueError(
            f"{path} is a DiffusionGemma checkpoint, which needs a transformers that ships DiffusionGemmaForBlockDiffusion "
            f"(5.x with diffusion_gemma); this one is {transformers.__version__}"
        )
    kw = dict(local_files_only=True, use_safetensors=True)
    if dtype is not None:
        kw["dtype"] = dtype
    model = cls.from_pretrained(path, **kw).to(device)
    return DiffusionGemmaDenoiser(model, tokenizer=tokenizer, noise_seed=noise_seed, aqa_mode=aqa_mode)
