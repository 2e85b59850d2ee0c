"""The text task of the trainer, on a tiny ModernBERT (needs transformers: the hf extra)."""

from __future__ import annotations

import json
import re

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


def test_chain_tokens_are_results_and_first_operands(tokenizer):
    p = wp.problems(1, seed=5)[0]
    answer = " " + p.answer
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    results, chain = td.chain_tokens(answer, enc["offset_mapping"])
    word = lambda js: "".join(tokenizer.decode([enc["input_ids"][j]]) for j in js)  # noqa: E731
    equations = re.findall(r"(\d+) [+-] \d+ = (\d+)", p.answer)
    assert word(chain) == "".join(x + z for x, z in equations) + str(p.result)
    assert [word([j]) for j in results] == [z[0] for _, z in equations] + [str(p.result)[0]]
    assert all(len(tokenizer.decode([enc["input_ids"][j]]).strip()) == 1 for j in chain)


def test_result_samples_hide_the_chain_from_one_result_on(tokenizer):
    inputs, targets, masked, t, attention = td.TextBatches(tokenizer, seed=3, result_frac=1.0)(np.random.default_rng(1), 32)
    L = inputs.shape[1]
    plain = td.TextBatches(tokenizer, seed=3)(np.random.default_rng(1), 32)[2]
    assert not torch.equal(masked, plain)
    cuts, hidden_numbers = set(), 0
    for b, p in enumerate(wp.TrainStream(3).take(32)):
        prompt = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        enc = tokenizer(" " + p.answer, add_special_tokens=False, return_offsets_mapping=True)
        start = L - int(attention[b].sum()) + len(prompt)
        results, chain = td.chain_tokens(" " + p.answer, enc["offset_mapping"])
        assert not masked[b, :start].any()  # the question is never scored
        first = L - int(attention[b].sum())
        question = inputs[b, first:start]
        hidden = question == tokenizer.mask_token_id
        assert all(tokenizer.decode([i]).strip().isdigit() for i in targets[b, first:start][hidden].tolist())  # only its digits
        hidden_numbers += int(hidden.any())
        # some result is hidden with every copy of it after it (the cut); the earliest such one
        cut = next(r for r in results if all(masked[b, start + j] for j in chain if j >= r))
        cuts.add(results.index(cut))
        before = [j for j in range(cut) if masked[b, start + j]]
        assert len(before) <= max(2, 0.5 * cut)  # before the cut, few tokens are masked
        assert float(t[b]) == pytest.approx(float(masked[b].sum()) / (L - start))
    assert len(cuts) > 2  # the cut falls on different results
    assert 0 < hidden_numbers < 32  # some samples hide question numbers, not all
    with pytest.raises(ValueError, match="result_frac"):
        td.TextBatches(tokenizer, seed=3, result_frac=1.5)


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
