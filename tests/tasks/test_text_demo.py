"""The text task of the trainer, on a tiny ModernBERT (needs transformers: the hf extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="needs the hf extra: pip install -e '.[hf]'")

import tabes  # noqa: E402
from tabes.tasks import text_demo as td  # noqa: E402
from tabes.tasks import word_problems as wp  # noqa: E402
from tabes.train import TrainConfig, train  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer():
    return td.build_tokenizer(seed=0, n_texts=500, vocab_size=300)


def test_tokenizer_round_trips_and_splits_digits(tokenizer):
    for p in wp.problems(20, seed=4):
        text = p.prompt + " " + p.answer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        for tok in tokenizer.convert_ids_to_tokens(ids):
            digits = sum(ch.isdigit() for ch in tok)
            assert digits <= 1 and (digits == 0 or len(tok.lstrip("Ġ")) == 1), tok
    assert {tokenizer.pad_token, tokenizer.mask_token, tokenizer.eos_token} == set(td.SPECIAL.values())


def test_batches_follow_the_decoding_layout(tokenizer):
    """Left padding hidden by the mask, the prompt visible, masks only in the generation region,
    which holds the answer and then end-of-text tokens."""
    batches = td.TextBatches(tokenizer, seed=3)
    inputs, targets, masked, t, attention = batches(np.random.default_rng(0), 16)
    B, L = inputs.shape
    assert targets.shape == masked.shape == attention.shape == (B, L) and t.shape == (B,)
    assert (inputs[masked] == tokenizer.mask_token_id).all() and torch.equal(inputs[~masked], targets[~masked])
    assert masked.any(1).all() and not (masked & ~attention).any()
    again = td.TextBatches(tokenizer, seed=3)
    for b, p in enumerate(again.stream.take(16)):
        prompt = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + p.answer, add_special_tokens=False)["input_ids"]
        row = targets[b][attention[b]].tolist()
        assert attention[b].tolist() == sorted(attention[b].tolist())  # padding on the left only
        assert row[: len(prompt)] == prompt and row[len(prompt) : len(prompt) + len(answer)] == answer
        tail = row[len(prompt) + len(answer) :]
        assert tail and set(tail) == {tokenizer.eos_token_id} and len(row) - len(prompt) <= td.GEN_MAX
        start = L - (len(row) - len(prompt))  # first generation position
        assert not masked[b, :start].any()


def test_text_training_runs_resumes_and_loads(tmp_path):
    base = dict(
        out=str(tmp_path), task="text", minutes=2, batch_size=8, eval_every=4, eval_puzzles=2, log_every=2, compile=False, model=TINY
    )
    state = train(TrainConfig(max_steps=4, **base), progress=False)
    assert state["step"] == 4 and "eval_exact" in state
    state = train(TrainConfig(max_steps=6, **base), resume=True, progress=False)
    assert state["step"] == 6
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6] and any("eval_exact" in r for r in log)
    model = tabes.load(tmp_path)
    assert model.tokenizer is not None and model.mask_id == model.tokenizer.mask_token_id
    res = tabes.generate_text(model, [wp.split("test")[0].prompt], gen_length=8, steps=8)
    assert len(res.texts) == 1 and res.output.sequences.shape[1] >= 8
    with pytest.raises(ValueError, match="unknown model options"):
        train(TrainConfig(max_steps=1, **{**base, "out": str(tmp_path / "bad"), "model": {"hidden_sise": 8}}), progress=False)


def test_shipped_text_demo_loads_and_answers_in_format():
    """The shipped checkpoint: a transformers folder of at most 15 MB, found by name, whose greedy
    confidence completions of the first 40 test problems nearly all end in a `#### N` line with
    well-formed equations. (Its exact-match rate is measured in docs/text.md, not asserted here.)"""
    path = tabes.default_model_path("text-demo")
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    assert 0 < size <= 15e6
    model = tabes.load("text-demo")
    items = wp.split("test")[:40]
    res = tabes.generate_text(model, [p.prompt for p in items], gen_length=64, steps=64, sampler="confidence")
    kinds = [wp.diagnose(t, p)["kind"] for t, p in zip(res.texts, items)]
    assert kinds.count("no_answer") <= 2, res.texts
    first_operands = [t.split(" + ")[0].split(" - ")[0].strip() for t in res.texts]
    copied = sum(f == p.answer.split(" ")[0] for f, p in zip(first_operands, items))
    assert copied >= 36, (copied, res.texts[:5])  # the first equation starts from the question's count
