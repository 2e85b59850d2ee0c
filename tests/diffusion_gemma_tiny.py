"""A tiny random DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) and a folder
with a word-level tokenizer, built in the test: a few layers, a small vocabulary, few experts."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["<pad>", "<eos>", "<bos>"] + [f"w{i}" for i in range(3, 48)]
V = len(WORDS)  # 48
PAD, EOS, BOS = 0, 1, 2


def tiny_config(canvas: int = 8, layers: int = 2, sliding_window: int = 16):
    from transformers import DiffusionGemmaConfig

    text = dict(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, global_head_dim=8, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
        sliding_window=sliding_window, layer_types=(["sliding_attention", "full_attention"] * layers)[:layers],
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS, max_position_embeddings=512,
    )  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, **kw):
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config(**kw)).to(dtype).eval()
    if dtype == torch.float64:  # the grouped-GEMM experts take float32 and narrower only
        model.set_experts_implementation("eager")
    return model


def tokenizer(bos: bool = False):
    """The word-level tokenizer; with ``bos``, it puts ``<bos>`` before every text (as Gemma's does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


def sharpen(model, scale: float = 40.0, eos_every: int = 0):
    """Scale the output head's logits by ``scale`` (near-certain tokens, so the adaptive stop
    fires) and, with ``eos_every``, favour EOS at every ``eos_every``-th canvas position. A
    forward hook: the model's own ``generate`` runs it too."""

    def hook(module, args, out):
        out = out * scale
        if eos_every:
            out[..., EOS] += 30.0 * (torch.arange(out.shape[1], device=out.device) % eos_every == eos_every - 1)
        return out

    return model.lm_head.register_forward_hook(hook)


def save_folder(path: Path, seed: int = 0, eos: bool = True, bos: bool = False, **kw) -> Path:
    """A checkpoint folder: the tiny model (with EOS and pad in its generation config when ``eos``)
    and the word-level tokenizer (adding ``<bos>`` when ``bos``)."""
    model = tiny_model(seed, **kw)
    if eos:
        model.generation_config.eos_token_id = EOS
        model.generation_config.pad_token_id = PAD
    model.save_pretrained(path)
    tokenizer(bos).save_pretrained(path)
    return path
