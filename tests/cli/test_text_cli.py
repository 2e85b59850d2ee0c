"""`tabes word-problems`, `tabes train text` and `tabes bench text` from the command line."""

from __future__ import annotations

import json

import pytest

from tabes.cli import main
from tabes.tasks import word_problems as wp


def test_word_problems_writes_the_seeded_stream(tmp_path, capsys):
    assert main(["word-problems", "--seed", "31", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["question"] for x in lines] == [p.question for p in wp.problems(3, 31)]
    out = tmp_path / "p.jsonl"
    assert main(["word-problems", "--seed", "2", "-n", "5", "--out", str(out)]) == 0
    assert wp.read_jsonl(out) == wp.split("test")[:5]
    assert main(["word-problems", "--seed", "2", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["word-problems", "--seed", "2", "-n", "1", "--out", str(out), "--overwrite"]) == 0
    assert len(wp.read_jsonl(out)) == 1


def test_train_text_then_bench_text(tmp_path, capsys):
    pytest.importorskip("transformers", reason="needs the hf extra")
    run = tmp_path / "run"
    opts = ["--model-opt", "hidden_size=32", "--model-opt", "num_hidden_layers=1", "--model-opt", "num_attention_heads=2"]
    opts += ["--model-opt", "intermediate_size=64"]
    args = ["train", "text", "--out", str(run), "--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--eval-puzzles", "1"]
    assert main([*args, "--no-compile", "--no-progress", *opts]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert (run / "tokenizer.json").is_file() and (run / "model.safetensors").is_file()
    bench = ["bench", "text", "--model", str(run), "--samplers", "confidence,random", "--steps", "8", "--blocks", "none,4"]
    assert main([*bench, "--gen-length", "8", "--limit", "3", "--batch-size", "2", "--json", "--out", str(tmp_path / "b")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sampler"], r["block"]) for r in rows] == [("confidence", None), ("random", None), ("confidence", 4), ("random", 4)]
    for r in rows:
        assert r["problems"] == 3 and 0 <= r["ci_low"] <= r["exact"] <= r["ci_high"] <= 1 and r["fwd_equiv"] > 0
        assert sum(r["errors"].values()) == round(3 * (1 - r["exact"]))
    assert (tmp_path / "b" / "report.md").read_text().count("| `") == 4
    assert main([*bench, "--gen-length", "8", "--blocks", "3"]) == 2
    assert "must divide gen_length" in capsys.readouterr().err


def test_train_text_init_from_shipped_copies_the_tokenizer(tmp_path, capsys):
    pytest.importorskip("transformers", reason="needs the hf extra")
    import tabes

    shipped = json.loads((tabes.default_model_path("text-demo") / "train_state.json").read_text())["step"]
    run = tmp_path / "more"
    args = ["train", "text", "--out", str(run), "--init-from", "shipped", "--max-steps", str(shipped + 1), "--batch-size", "2"]
    assert main([*args, "--eval-every", "100000", "--no-compile", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == shipped + 1
    # Saving may re-serialise tokenizer.json (the layout depends on the tokenizers version), so compare behaviour.
    copied, original = tabes.load(run).tokenizer, tabes.load("text-demo").tokenizer
    assert copied is not None
    assert copied.get_vocab() == original.get_vocab()
    sample = "Question: Mia has 47 apples. She gives away 12.\nAnswer: 47 - 12 = 35\n#### 35"
    assert copied(sample)["input_ids"] == original(sample)["input_ids"]
