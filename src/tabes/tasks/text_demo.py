"""The text task of the trainer: a ModernBERT masked LM trained as an MDM on word problems.

Everything here is what ``tabes train text`` needs beyond the shared trainer
(:mod:`tabes.train`): the tokenizer, the model, the training batches and the evaluation. The
result is a plain transformers folder (``config.json``, ``model.safetensors``, tokenizer
files) that :func:`tabes.load` and ``AutoModelForMaskedLM`` load natively.

- **Tokenizer**: byte-level BPE with every digit its own token (numbers are read digit by
  digit), trained on generated training problems; special tokens ``<pad>``, ``<mask>``,
  ``</s>`` (end of text).
- **Sequences** are what :func:`tabes.generate_text` builds at decoding time: left padding
  (hidden by the attention mask, positions counted from the first real token), the prompt
  ``Question: ...\\nAnswer:``, then a generation region of ``G`` tokens: the answer, then
  ``</s>`` up to the end. ``G`` is drawn per sample between the answer's length + 1 and
  :data:`GEN_MAX`, so the model fills any ``gen_length`` in that range.
- **Objective**: the trainer's masked cross-entropy; the prompt stays visible. A sample masks
  each generation position with probability ``t ~ U(0, 1)``. A ``result_frac`` share of the
  samples instead picks one result (of an equation, or the final answer) and hides the chain
  from it on: every digit of that result and of the results and first operands after it, and
  each other token after it with probability ``U(0, 1)``; before it each token is masked with
  probability ``U(0, 0.2)``. Those samples also hide each number of the question with a
  probability ``U(0, 1)`` drawn per sample (in the input only; the question is never scored).
  They ask for a result while its equation's operands are visible, no copy of it is, and the
  question's numbers may not be there: the step a decoder takes when it fills the answer in
  order, by the only route that works for every equation. With uniform masking alone a result
  is masked with its operands nearly always, the question is always whole, and the model learns
  to compute from the question, which only reaches the first equation or two.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tabes.tasks import word_problems as wp

GEN_MAX = 64  # longest generation region trained on (the lm-eval model's default gen_length)
MAX_POSITIONS = 160
SPECIAL = {"pad_token": "<pad>", "mask_token": "<mask>", "eos_token": "</s>"}
MODEL_DEFAULTS = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=MAX_POSITIONS,
    global_attn_every_n_layers=1,  # every layer attends globally (sequences are short)
    local_attention=MAX_POSITIONS,
    reference_compile=False,
    embedding_dropout=0.0,
    attention_dropout=0.0,
    mlp_dropout=0.0,
)


def build_tokenizer(seed: int = 0, n_texts: int = 20000, vocab_size: int = 400):
    """A byte-level BPE tokenizer (digits split one per token) trained on generated problems."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    stream = wp.TrainStream(seed + 1_000_003)
    texts = [p.prompt + " " + p.answer for p in stream.take(n_texts)]
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def new_model(tokenizer, overrides: dict | None = None) -> nn.Module:
    """A randomly initialised ModernBERT masked LM sized by :data:`MODEL_DEFAULTS` and ``overrides``."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    opts = {**MODEL_DEFAULTS, **(overrides or {})}
    cfg = ModernBertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        cls_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.eos_token_id,
        mask_token_id=tokenizer.mask_token_id,
        **opts,
    )
    return ModernBertForMaskedLM(cfg)


class MaskedLMLogits(nn.Module):
    """``(ids (B, L), attention_mask (B, L) bool) -> logits (B, L, V)`` with the adapter's position ids."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return self.model(input_ids=ids, attention_mask=attention_mask.long(), position_ids=positions).logits


class TextBatches:
    """Training batches of word problems, tokenized as :func:`tabes.generate_text` does."""

    def __init__(self, tokenizer, seed: int, result_frac: float = 0.0) -> None:
        if not 0 <= result_frac <= 1:
            raise ValueError(f"result_frac must be in [0, 1], got {result_frac}")
        self.tok, self.result_frac = tokenizer, result_frac
        self.stream = wp.TrainStream(seed)
        self.pad, self.mask, self.eos = tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.eos_token_id

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """inputs, targets, masked (B, L); t (B,); attention_mask (B, L) bool."""
        probs = self.stream.take(n)
        penc = self.tok([p.prompt for p in probs], add_special_tokens=False, return_offsets_mapping=True)
        prompts = penc["input_ids"]
        enc = self.tok([" " + p.answer for p in probs], add_special_tokens=False, return_offsets_mapping=True)
        answers = enc["input_ids"]
        rows, gens = [], []
        for pr, an in zip(prompts, answers):
            if len(an) >= GEN_MAX:
                raise ValueError(f"an answer of {len(an)} tokens does not fit the generation region of {GEN_MAX}")
            g = int(rng.integers(len(an) + 1, GEN_MAX + 1))
            rows.append(pr + an + [self.eos] * (g - len(an)))
            gens.append(g)
        L = max(map(len, rows))
        targets = torch.full((n, L), self.pad, dtype=torch.long)
        attention = torch.zeros(n, L, dtype=torch.bool)
        maskable = torch.zeros(n, L, dtype=torch.bool)
        for b, (row, g) in enumerate(zip(rows, gens)):
            targets[b, L - len(row) :] = torch.tensor(row)
            attention[b, L - len(row) :] = True
            maskable[b, L - g :] = True
        t = torch.from_numpy(rng.uniform(0.0, 1.0, size=n)).float()
        masked = maskable & torch.from_numpy(rng.random((n, L)) < t.numpy()[:, None])
        hidden = torch.zeros(n, L, dtype=torch.bool)  # question numbers hidden from the input (not scored)
        for b in np.nonzero(rng.random(n) < self.result_frac)[0].tolist():  # hide the chain from one result on
            start = L - gens[b]
            share, first = float(rng.uniform(0.0, 1.0)), L - len(rows[b])
            for m in re.finditer(r"\d+", probs[b].prompt):
                if rng.random() < share:
                    hidden[b, [first + j for j in tokens_within(penc["offset_mapping"][b], *m.span())]] = True
            results, chain = chain_tokens(" " + probs[b].answer, enc["offset_mapping"][b])
            cut = results[int(rng.integers(len(results)))]
            before, after = float(rng.uniform(0.0, 0.2)), float(rng.uniform(0.0, 1.0))
            draw = torch.from_numpy(rng.random(L))
            masked[b] = False
            masked[b, start : start + cut] = draw[start : start + cut] < before
            masked[b, start + cut :] = draw[start + cut :] < after
            masked[b, [start + j for j in chain if j >= cut]] = True
            t[b] = masked[b].sum() / gens[b]
        none = ~masked.any(1)
        for b in torch.nonzero(none).flatten().tolist():  # at least one masked position per sample
            masked[b, L - gens[b] + int(rng.integers(gens[b]))] = True
        inputs = targets.masked_fill(masked | hidden, self.mask)
        return inputs, targets, masked, t, attention


def tokens_within(offsets: list[tuple[int, int]], lo: int, hi: int) -> list[int]:
    """Indices of the tokens whose character span (from the tokenizer's ``offsets``) lies
    inside ``[lo, hi)`` of the text (empty spans, as of special tokens, never count)."""
    return [j for j, (a, b) in enumerate(offsets) if b > a and lo <= a and b <= hi]


_EQUATION_RE = re.compile(r"(\d+) [+-] \d+ = (\d+)|#### (\d+)")


def chain_tokens(answer: str, offsets: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token indices in ``answer`` of (the first digit of each result, every digit of the chain).

    A result is the number after an ``=`` or after ``####``; the chain is every result and every
    equation's first operand (each a copy of the result before it). ``offsets`` are the
    tokenizer's character spans of ``answer``'s tokens.
    """
    results, chain = [], []
    for m in _EQUATION_RE.finditer(answer):
        for g in (1, 2, 3):
            if m.group(g) is None:
                continue
            idx = tokens_within(offsets, *m.span(g))
            chain += idx
            if g != 1:
                results.append(idx[0])
    return results, chain


def evaluate(model: nn.Module, tokenizer, items: list[wp.Problem], *, gen_length: int = 64, batch_size: int = 64) -> float:
    """Exact-match rate of greedy ``confidence`` decoding, one token per step."""
    from tabes.models.hf import HFDenoiser
    from tabes.tasks.text import generate_text

    was_training = model.training
    den = HFDenoiser(model, mask_id=tokenizer.mask_token_id, tokenizer=tokenizer)
    right = 0
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        res = generate_text(den, [p.prompt for p in chunk], gen_length=gen_length, steps=gen_length, sampler="confidence")
        right += sum(wp.extract_answer(text) == str(p.result) for text, p in zip(res.texts, chunk))
    model.train(was_training)
    return right / max(len(items), 1)


def save(model: nn.Module, tokenizer, out: Path) -> None:
    """Write the transformers folder (weights as safetensors, config, tokenizer files)."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def load(out: Path):
    """(model, tokenizer) from a folder written by :func:`save`."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    return AutoModelForMaskedLM.from_pretrained(out, local_files_only=True), AutoTokenizer.from_pretrained(out, local_files_only=True)


class TextTraining:
    """The text task of the trainer (:func:`tabes.train.train` with ``task="text"``).

    A new run trains the tokenizer (seeded by the run's seed) and initialises the model;
    ``cfg.model`` overrides :data:`MODEL_DEFAULTS` (any ``ModernBertConfig`` field). The
    held-out evaluation decodes the first ``cfg.eval_puzzles`` dev problems.
    """

    def __init__(self, cfg, out: Path, progress: bool) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.tokenizer = None

    def new_model(self) -> nn.Module:
        from transformers import ModernBertConfig

        known = set(ModernBertConfig().to_dict())
        bad = set(self.cfg.model) - known
        if bad:
            raise ValueError(f"unknown model options {sorted(bad)}; see transformers.ModernBertConfig")
        self.tokenizer = build_tokenizer(self.cfg.seed)
        return new_model(self.tokenizer, self.cfg.model)

    def load_model(self, path: Path | None = None) -> nn.Module:
        model, self.tokenizer = load(path or self.out)
        return model

    def save_model(self, model: nn.Module, path: Path | None = None) -> None:
        save(model, self.tokenizer, path or self.out)

    def loss_module(self, model: nn.Module) -> nn.Module:
        return MaskedLMLogits(model)

    def prepare(self) -> None:
        self.batches = TextBatches(self.tokenizer, self.cfg.seed, self.cfg.result_frac)
        self.dev = wp.split("dev")[: self.cfg.eval_puzzles]

    def batch(self, rng: np.random.Generator) -> tuple[Tensor, ...]:
        return self.batches(rng, self.cfg.batch_size)

    def evaluate(self, model: nn.Module) -> dict:
        return {"eval_exact": evaluate(model, self.tokenizer, self.dev), "eval_problems": len(self.dev)}
