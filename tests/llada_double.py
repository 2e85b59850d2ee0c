"""A small stand-in with the module layout of LLaDA's remote code (``modeling_llada.py``).

Written here from the public file's facts, not copied: the same module and method names
(``model.transformer.blocks[i]`` with ``attn_norm``, ``q_proj``/``k_proj``/``v_proj``,
``attention(q, k, v, attention_bias, layer_past, use_cache)``, ``rotary_emb(q, k)`` with
``get_rotary_embedding``/``apply_rotary_pos_emb``, ``_scaled_dot_product_attention(q, k, v,
attn_mask, dropout_p, is_causal)``, ``attn_out``, SwiGLU ``ff_proj``/``up_proj``/``ff_out``),
the same call order, and the same behaviour that matters to tabes: attention is bidirectional
and ignores padding (it is called with ``attn_mask=None``), RoPE positions count from 0 over
the keys, and the model's ``forward`` takes ``inputs_embeds`` but no ``position_ids``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def llada_config(**kw) -> SimpleNamespace:
    cfg = dict(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=40, rope_theta=10000.0)
    cfg.update(kw)
    cfg["max_sequence_length"] = cfg.get("max_sequence_length", 128)
    cfg["rope_full_precision"] = True
    return SimpleNamespace(**cfg)


class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class RotaryEmbedding(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def get_rotary_embedding(self, seq_len: int, device):
        dim = self.config.d_model // self.config.n_heads
        inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float) / dim))
        angles = torch.arange(seq_len, device=device, dtype=torch.float)[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.sin()[None, None], angles.cos()[None, None]  # (1, 1, seq_len, dim) each

    def rotate_half(self, x):
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def apply_rotary_pos_emb(self, pos_sin, pos_cos, t):
        return (t * pos_cos + self.rotate_half(t) * pos_sin).to(t.dtype)

    def forward(self, q, k):
        q_, k_ = q.float(), k.float()
        n_q, n_k = q_.shape[-2], k_.shape[-2]
        sin, cos = self.get_rotary_embedding(n_k, q_.device)
        sin, cos = sin.type_as(q_), cos.type_as(q_)
        q_ = self.apply_rotary_pos_emb(sin[:, :, n_k - n_q : n_k], cos[:, :, n_k - n_q : n_k], q_)
        k_ = self.apply_rotary_pos_emb(sin, cos, k_)
        return q_.type_as(q), k_.type_as(k)


class LLaDALlamaBlock(nn.Module):
    def __init__(self, layer_id: int, config) -> None:
        super().__init__()
        self.layer_id, self.config = layer_id, config
        d, m = config.d_model, config.mlp_hidden_size
        kv = d // config.n_heads * config.n_kv_heads
        self.attn_norm, self.ff_norm = RMSNorm(d), RMSNorm(d)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d, bias=False), nn.Linear(d, kv, bias=False), nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj, self.up_proj, self.ff_out = nn.Linear(d, m, bias=False), nn.Linear(d, m, bias=False), nn.Linear(m, d, bias=False)
        self.rotary_emb = RotaryEmbedding(config)

    def _scaled_dot_product_attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=dropout_p, is_causal=False)

    def attention(self, q, k, v, attention_bias=None, layer_past=None, use_cache=False):
        B, T, C = q.shape
        hs = C // self.config.n_heads
        q = q.view(B, T, self.config.n_heads, hs).transpose(1, 2)
        k = k.view(B, T, self.config.n_kv_heads, hs).transpose(1, 2)
        v = v.view(B, T, self.config.n_kv_heads, hs).transpose(1, 2)
        if layer_past is not None:
            k, v = torch.cat([layer_past[0], k], dim=-2), torch.cat([layer_past[1], v], dim=-2)
        present = (k, v) if use_cache else None
        q, k = self.rotary_emb(q, k)
        att = self._scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
        return self.attn_out(att.transpose(1, 2).contiguous().view(B, T, C)), present

    def forward(self, x, attention_bias=None, layer_past=None, use_cache=False):
        h = self.attn_norm(x)
        att, cache = self.attention(self.q_proj(h), self.k_proj(h), self.v_proj(h), attention_bias, layer_past, use_cache)
        x = x + att
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h)), cache


class LLaDAModel(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                blocks=nn.ModuleList(LLaDALlamaBlock(i, config) for i in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model),
                ff_out=nn.Linear(config.d_model, config.vocab_size, bias=False),
            )
        )

    def forward(
        self, input_ids=None, input_embeddings=None, attention_mask=None, attention_bias=None, past_key_values=None, use_cache=False
    ):
        x = self.transformer.wte(input_ids) if input_embeddings is None else input_embeddings
        for block in self.transformer.blocks:
            x, _ = block(x, attention_bias=attention_bias)
        return SimpleNamespace(logits=self.transformer.ff_out(self.transformer.ln_f(x)))


class LLaDAModelLM(nn.Module):
    """``LLaDAModelLM``: ``forward(input_ids, inputs_embeds, attention_mask, ...)`` -> ``.logits``."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.model = LLaDAModel(config)
        for p in self.parameters():
            nn.init.normal_(p, std=1 / math.sqrt(config.d_model)) if p.dim() > 1 else None

    @property
    def device(self):
        return self.model.transformer.wte.weight.device

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def get_output_embeddings(self):
        return self.model.transformer.ff_out

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, attention_bias=None, past_key_values=None, use_cache=None):
        return self.model(input_ids=input_ids, input_embeddings=inputs_embeds, attention_mask=attention_mask, attention_bias=attention_bias)
