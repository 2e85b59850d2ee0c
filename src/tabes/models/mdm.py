"""Our own masked diffusion model: a small bidirectional pre-norm transformer.

One file in the spirit of nanoGPT's ``model.py``. Two layouts:

- ``layout="sequence"``: learned absolute positions, for generic token sequences.
- ``layout="sudoku"``: an n x n grid (n = 9 by default). Each cell gets row, column and box
  embeddings, and every attention head adds a learned bias per *relation* between query and
  key cell (same row / same column / same box, as 3 bits, 8 values). The relation bias lets a
  head attend to a cell's 20 peers from the first step of training; with plain learned
  positions the same model learns next to nothing on Sudoku in the same budget.

The model meets :class:`tabes.protocol.Denoiser`: ``embed`` returns token embeddings only and
positions are added in ``logits_from_embeds``, so BoE can feed soft token embeddings. When an
``active`` query mask is passed, attention runs through ActiveQueryAttention
(:mod:`tabes.ops.aqa`): same forward, sparse backward.

References: Vaswani et al. 2017; nanoGPT (Karpathy); MDLM (Sahoo et al. 2024); relation-aware
attention (Shaw et al. 2018); recurrent relational networks for Sudoku (Palm et al. 2018).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tabes.cache import LayerKV
from tabes.ops.aqa import AQA_MODES, active_index, attention, attention_to_keys, gather_cols, gather_rows
from tabes.ops.rows import linear_rows, mlp_rows

MODEL_TYPE = "tabes-mdm"


@dataclass
class MDMConfig:
    """Hyper-parameters of :class:`MDM`. Defaults: a 9x9 Sudoku model (the shipped one's
    ``config.json`` sets its own depth and heads; :func:`read_config` reads it)."""

    vocab_size: int = 10  # V, mask token included
    mask_id: int = 9  # id of the mask token
    seq_len: int = 81  # L, maximum sequence length
    d_model: int = 128  # D, residual width
    n_layers: int = 8  # transformer blocks
    n_heads: int = 4  # attention heads; head size D / n_heads
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * D
    layout: str = "sudoku"  # "sudoku" (row/col/box + relation bias) or "sequence" (learned positions)
    grid: int = 9  # side of the grid for layout="sudoku"; boxes are sqrt(grid) wide
    aqa_mode: str = "kv"  # ActiveQueryAttention backward when an active mask is given (see tabes.ops.aqa)
    skip_rows: bool = True  # exact mode: also skip the backward of rows whose gradient is zero or unread

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id must be in [0, {self.vocab_size}), got {self.mask_id}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.layout not in ("sudoku", "sequence"):
            raise ValueError(f"layout must be 'sudoku' or 'sequence', got {self.layout!r}")
        if self.layout == "sudoku":
            box = math.isqrt(self.grid)
            if box * box != self.grid or self.seq_len != self.grid * self.grid:
                raise ValueError(f"layout='sudoku' needs a square grid and seq_len = grid**2, got grid={self.grid}, seq_len={self.seq_len}")
        if self.aqa_mode not in AQA_MODES:
            raise ValueError(f"aqa_mode must be one of {AQA_MODES}, got {self.aqa_mode!r}")


def sudoku_relations(grid: int = 9) -> Tensor:
    """(L, L) long relation code between cells: bit 0 same row, bit 1 same column, bit 2 same box."""
    box = math.isqrt(grid)
    idx = torch.arange(grid * grid)
    r, c = idx // grid, idx % grid
    b = (r // box) * box + c // box
    same = lambda a: (a[:, None] == a[None, :]).long()  # noqa: E731
    return same(r) | (same(c) << 1) | (same(b) << 2)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Written once. ``input_grad_only`` switches the three linear pieces (q/k/v, output
    projection, MLP) and the norms to their input-gradient-only, row-skipping forms
    (:mod:`tabes.ops.rows`: same values, a backward that skips rows whose gradient is zero
    or unread, parameters as constants); the ``kv`` path of :meth:`MDM._active_rows_logits`
    calls :meth:`qkv_proj` and :meth:`after_attention` on the active rows only.
    """

    def __init__(self, cfg: MDMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, cfg.mlp_ratio * d)
        self.out = nn.Linear(cfg.mlp_ratio * d, d)

    def qkv_proj(self, x: Tensor, input_grad_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, D) residual stream -> q, k, v, each (B, L, D)."""
        if input_grad_only:
            return linear_rows(_layer_norm(self.ln1, x), self.qkv.weight, self.qkv.bias, blocks=3).chunk(3, dim=-1)
        return self.qkv(self.ln1(x)).chunk(3, dim=-1)

    def after_attention(self, x: Tensor, y: Tensor, input_grad_only: bool = False) -> Tensor:
        """Residual stream (B, L, D) and attention output (B, L, D) -> the block's output (B, L, D)."""
        if input_grad_only:
            x = x + linear_rows(y, self.proj.weight, self.proj.bias)
            return x + mlp_rows(_layer_norm(self.ln2, x), self.fc.weight, self.fc.bias, self.out.weight, self.out.bias)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))

    def forward(
        self,
        x: Tensor,
        bias: Tensor | None,
        active: Tensor | None,
        aqa_mode: str,
        grad_rows: Tensor | None = None,
        input_grad_only: bool = False,
        context: tuple[Tensor, Tensor] | None = None,
        keep: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """(B, L, D) -> (B, L, D). ``active``/``aqa_mode``/``grad_rows``: see :func:`tabes.ops.aqa.attention`;
        ``input_grad_only``: the exact sparse adjoint with row-skipping linears (needs ``active``).

        KV cache (:mod:`tabes.cache`): ``keep`` collects this layer's (k, v), each (B, H, L, Dh);
        ``context`` = cached (k, v), each (B, H, Lc, Dh), puts those keys before the rows' own
        (``bias`` then covers (L, Lc + L) and ``active`` uses the cache's definition)."""
        B, L, D = x.shape
        heads = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in self.qkv_proj(x, input_grad_only))
        q, k, v = heads  # (B, H, L, Dh) each
        if keep is not None:
            keep.append((k.detach(), v.detach()))
        if context is not None:
            k, v = torch.cat([context[0], k], dim=2), torch.cat([context[1], v], dim=2)
            y = attention_to_keys(q, k, v, bias=bias, active=active, mode=aqa_mode)  # (B, H, L, Dh)
        else:
            y = attention(q, k, v, bias=bias, active=active, mode=aqa_mode, grad_rows=grad_rows)  # (B, H, L, Dh)
        return self.after_attention(x, y.transpose(1, 2).reshape(B, L, D), input_grad_only)


def _layer_norm(ln: nn.LayerNorm, x: Tensor) -> Tensor:
    """``ln(x)`` with its affine parameters as constants."""
    return F.layer_norm(x, ln.normalized_shape, ln.weight.detach(), ln.bias.detach(), ln.eps)


class MDM(nn.Module):
    """Bidirectional transformer denoiser; see the module docstring."""

    def __init__(self, cfg: MDMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vocab_size = cfg.vocab_size
        self.mask_id = cfg.mask_id
        d = cfg.d_model
        self.tok = nn.Embedding(cfg.vocab_size, d)
        if cfg.layout == "sudoku":
            self.row = nn.Embedding(cfg.grid, d)
            self.col = nn.Embedding(cfg.grid, d)
            self.box = nn.Embedding(cfg.grid, d)
            self.rel_bias = nn.Parameter(torch.zeros(cfg.n_layers, cfg.n_heads, 8))
            self.register_buffer("relations", sudoku_relations(cfg.grid), persistent=False)
        else:
            self.pos = nn.Embedding(cfg.seq_len, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size)
        self.apply(self._init)
        for blk in self.blocks:  # GPT-2 style scaled init of residual projections
            for lin in (blk.proj, blk.out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ------------------------------------------------------------------ protocol
    def embed(self, ids: Tensor) -> Tensor:
        """(B, L) long -> (B, L, D) token embeddings."""
        if ids.dtype != torch.long:
            raise TypeError(f"ids must be torch.long, got {ids.dtype}")
        return self.tok(ids)

    def token_embeddings(self) -> Tensor:
        """(V, D) input-embedding matrix."""
        return self.tok.weight

    def logits_from_embeds(
        self, embeds: Tensor, *, attention_mask: Tensor | None = None, active: Tensor | None = None, grad_rows: Tensor | None = None
    ) -> Tensor:
        """(B, L, D) embeddings -> (B, L, V) logits; see :class:`tabes.protocol.Denoiser`.

        With ``active`` in the ``exact`` mode the backward computes gradients with respect to
        ``embeds`` only (parameters are constants) and skips the rows whose gradient is zero.
        ``grad_rows`` (B, L) bool: the rows of ``embeds`` whose gradient the caller reads; the
        others are treated as constants (zero gradient), which the first block exploits.
        """
        B, L, _ = embeds.shape
        cfg = self.config
        if cfg.seq_len < L or (cfg.layout == "sudoku" and cfg.seq_len != L):
            raise ValueError(f"sequence length {L} does not fit this model (seq_len={cfg.seq_len}, layout={cfg.layout})")
        if grad_rows is not None and (grad_rows.shape != (B, L) or grad_rows.dtype != torch.bool):
            raise ValueError(f"grad_rows must be a (B, L) = {(B, L)} bool tensor, got {tuple(grad_rows.shape)} {grad_rows.dtype}")
        # the exact sparse adjoint: input gradients only (parameters are constants), rows skipped
        input_grad_only = active is not None and cfg.aqa_mode != "reference" and cfg.skip_rows and torch.is_grad_enabled()
        cells = torch.arange(L, device=embeds.device)
        position = self._position(cells)
        if grad_rows is not None and torch.is_grad_enabled():
            embeds = torch.where(grad_rows[..., None], embeds, embeds.detach())
        x = embeds + (position.detach() if input_grad_only else position)  # (B, L, D)
        biases = self._biases(cells, cells, attention_mask, x.dtype, input_grad_only)
        if active is not None and cfg.aqa_mode == "kv" and torch.is_grad_enabled() and 2 * int(active.sum(-1).max()) <= L:
            return self._active_rows_logits(x, biases, active)
        return self._dense_logits(x, biases, active, cfg.aqa_mode, grad_rows, input_grad_only)

    def _dense_logits(
        self,
        x: Tensor,
        biases: list[Tensor | None],
        active: Tensor | None,
        mode: str,
        grad_rows: Tensor | None = None,
        input_grad_only: bool = False,
    ) -> Tensor:
        """All rows through every block; (B, L, D) -> (B, L, V). Only the first block sees ``grad_rows``."""
        for blk, bias in zip(self.blocks, biases):
            x = blk(x, bias, active, mode, grad_rows, input_grad_only)
            grad_rows = None
        if input_grad_only:
            return linear_rows(_layer_norm(self.ln_f, x), self.head.weight, self.head.bias)
        return self.head(self.ln_f(x))

    def _active_rows_logits(self, x: Tensor, biases: list[Tensor | None], active: Tensor) -> Tensor:
        """The ``kv`` approximation with a backward on the active rows only.

        Inactive rows are constants: one no-grad pass computes every row's hidden states, then
        the active rows go through the same blocks with gradient (:meth:`Block.forward` with
        ``context``), attending to the inactive rows' keys and values from the no-grad pass
        and to their own. Forward values equal the dense forward; the gradient equals that of
        ``aqa_mode="kv"`` attention for every active row, and the backward (and the extra
        forward) cost O(|A|) rows instead of O(L) in every layer.
        Shapes: x (B, L, D), active (B, L) bool -> (B, L, V) logits.
        """
        B, L, D = x.shape
        H = self.config.n_heads
        idx, valid = active_index(active)  # (B, A)
        A = idx.shape[1]
        rows = idx.clamp_max(L - 1)
        hidden = []
        with torch.no_grad():
            h = x.detach()
            for blk, bias in zip(self.blocks, biases):
                hidden.append(h)
                h = blk(h, bias, None, "exact")
            full = self.head(self.ln_f(h))  # (B, L, V)
        # keys of the no-grad pass at the active positions are replaced by the rows' own keys
        # (appended after the context); padded slots of the own keys are masked
        ctx_mask = torch.zeros(B, 1, 1, L, dtype=x.dtype, device=x.device).masked_fill(active[:, None, None, :], float("-inf"))
        own_mask = torch.zeros(B, 1, 1, A, dtype=x.dtype, device=x.device).masked_fill(~valid[:, None, None, :], float("-inf"))
        xa = x.gather(1, rows[..., None].expand(B, A, D))  # (B, A, D), carries the gradient
        for blk, bias, h in zip(self.blocks, biases, hidden):
            with torch.no_grad():
                k, v = (t.view(B, L, H, D // H).transpose(1, 2) for t in blk.qkv_proj(h)[1:])  # (B, H, L, Dh)
            if bias is None:
                pair = torch.cat([ctx_mask.expand(B, 1, A, L), own_mask.expand(B, 1, A, A)], dim=-1)
            else:
                b = gather_rows(bias, rows).expand(-1, -1, -1, L)  # (B, H', A, L)
                own = gather_cols(b, rows)  # (B, H', A, A)
                pair = torch.cat([b + ctx_mask, own + own_mask], dim=-1)  # (B, H', A, L + A)
            xa = blk(xa, pair, None, "exact", context=(k, v))
        logits_a = self.head(self.ln_f(xa))  # (B, A, V)
        put = idx.masked_fill(~valid, L)  # padded slots go to a dummy row L, dropped below
        padded = torch.cat([full, full.new_zeros(B, 1, full.shape[-1])], dim=1)
        return padded.scatter(1, put[..., None].expand(B, A, full.shape[-1]), logits_a)[:, :L]

    def _position(self, cells: Tensor) -> Tensor:
        """(n,) long positions -> (n, D) position embeddings (Sudoku: row + column + box)."""
        cfg = self.config
        if cfg.layout == "sudoku":
            r, c = cells // cfg.grid, cells % cfg.grid
            box = math.isqrt(cfg.grid)
            return self.row(r) + self.col(c) + self.box((r // box) * box + c // box)
        return self.pos(cells)

    def _biases(
        self, q_cells: Tensor, k_cells: Tensor, attention_mask: Tensor | None, dtype: torch.dtype, constant: bool = False
    ) -> list[Tensor | None]:
        """Per layer, the additive attention bias between query positions (Lq,) and key
        positions (Lk,): relation bias (Sudoku) plus -inf at padding keys of ``attention_mask``
        (B, L) -> each (1 or B, H or 1, Lq, Lk), or None."""
        cfg = self.config
        key_bias = None
        if attention_mask is not None:
            keep = attention_mask.bool()[:, k_cells]  # (B, Lk)
            key_bias = torch.zeros(keep.shape[0], 1, 1, keep.shape[1], dtype=dtype, device=keep.device)
            key_bias = key_bias.masked_fill(~keep[:, None, None, :], float("-inf"))
        biases = []
        for i in range(cfg.n_layers):
            bias = None
            if cfg.layout == "sudoku":
                rel = self.rel_bias[i].detach() if constant else self.rel_bias[i]
                bias = rel[:, self.relations[q_cells][:, k_cells]][None].to(dtype)  # (1, H, Lq, Lk)
            if key_bias is not None:
                bias = key_bias if bias is None else bias + key_bias
            biases.append(bias)
        return biases

    # ------------------------------------------------------------------ KV cache (tabes.cache)
    @torch.no_grad()
    def fill_cache(self, embeds: Tensor, *, context: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, LayerKV]:
        """The refresh forward of a block: (B, L, D) embeddings, (L,) bool context positions ->
        ((B, L, V) logits, the context's keys and values in every layer)."""
        B, L, _ = embeds.shape
        cells = torch.arange(L, device=embeds.device)
        x = embeds + self._position(cells)
        keep: list[tuple[Tensor, Tensor]] = []
        for blk, bias in zip(self.blocks, self._biases(cells, cells, attention_mask, x.dtype)):
            x = blk(x, bias, None, "exact", keep=keep)
        ctx = context.to(embeds.device).nonzero().squeeze(-1)
        kv = LayerKV(ctx, [k[:, :, ctx] for k, _ in keep], [v[:, :, ctx] for _, v in keep])
        return self.head(self.ln_f(x)), kv

    def logits_with_cache(
        self, embeds: Tensor, *, positions: Tensor, kv: LayerKV, attention_mask: Tensor | None = None, active: Tensor | None = None
    ) -> Tensor:
        """A step through the cache: (B, Lq, D) embeddings at ``positions`` (Lq,) long, attending
        to ``kv`` and to each other -> (B, Lq, V) logits. ``attention_mask``: (B, L) of the whole
        sequence; ``active``: (B, Lq) bool AQA rows, under the model's ``aqa_mode``."""
        x = embeds + self._position(positions)
        keys = torch.cat([kv.positions.to(positions.device), positions])  # the key axis: context, then queries
        for i, (blk, bias) in enumerate(zip(self.blocks, self._biases(positions, keys, attention_mask, x.dtype))):
            x = blk(x, bias, active, self.config.aqa_mode, context=(kv.keys[i], kv.values[i]))
        return self.head(self.ln_f(x))

    def logits(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) ids -> (B, L, V) logits."""
        return self.logits_from_embeds(self.embed(ids), attention_mask=attention_mask)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.logits(ids, attention_mask=attention_mask)

    # ------------------------------------------------------------------ persistence
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into the folder ``path``."""
        from safetensors.torch import save_file

        from tabes.files import atomic_path, atomic_write_text

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(path / "model.safetensors") as tmp:  # a kill never leaves half a checkpoint
            save_file(state, str(tmp))
        atomic_write_text(path / "config.json", json.dumps({"model_type": MODEL_TYPE, **asdict(self.config)}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> MDM:
        """Load a folder written by :meth:`save_pretrained` (safetensors, never pickle)."""
        from safetensors.torch import load_file

        cfg = read_config(path)
        weights = Path(path) / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"model file not found: {weights}")
        model = cls(cfg)
        model.load_state_dict(load_file(str(weights), device=str(map_location)))
        return model.eval()


def read_config(path: str | Path) -> MDMConfig:
    """The :class:`MDMConfig` of a model folder's ``config.json`` (no weights read)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"model file not found: {cfg_file}")
    raw = json.loads(cfg_file.read_text())
    if raw.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{cfg_file}: model_type is {raw.get('model_type')!r}, expected {MODEL_TYPE!r}")
    known = {f.name for f in fields(MDMConfig)}
    return MDMConfig(**{k: v for k, v in raw.items() if k in known})


def grow_depth(model: MDM, n_layers: int) -> MDM:
    """A deeper copy of ``model`` that computes exactly the same function.

    New blocks are spread evenly between the old ones (8 -> 12 puts one after every second
    block). Each new block is a fresh random block whose two residual projections (attention
    output ``proj`` and MLP ``out``) are zero, so it adds nothing until training moves them;
    its relation bias starts at zero. The old blocks keep their weights and their order.
    (Identity block expansion, as in LLaMA Pro, Wu et al. 2024.)
    """
    old = model.config.n_layers
    if n_layers <= old:
        raise ValueError(f"n_layers must exceed the model's {old} blocks, got {n_layers}")
    cfg = MDMConfig(**{**asdict(model.config), "n_layers": n_layers})
    n_new = n_layers - old
    follows = [max(0, (k + 1) * old // n_new - 1) for k in range(n_new)]  # the old block each new one follows
    slots = [i + sum(f < i for f in follows) for i in range(old)]  # where each old block goes
    grown = MDM(cfg).to(next(model.parameters()).device)
    with torch.no_grad():
        for k, v in model.state_dict().items():  # embeddings, final norm, head
            if not k.startswith("blocks.") and k != "rel_bias":
                grown.state_dict()[k].copy_(v)
        for i, slot in enumerate(slots):
            grown.blocks[slot].load_state_dict(model.blocks[i].state_dict())
        if cfg.layout == "sudoku":
            grown.rel_bias.zero_()
            grown.rel_bias[slots] = model.rel_bias
        for j, blk in enumerate(grown.blocks):
            if j not in slots:
                for lin in (blk.proj, blk.out):
                    lin.weight.zero_()
                    lin.bias.zero_()
    return grown.train(model.training)
