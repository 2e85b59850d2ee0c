"""lm-evaluation-harness end to end on a tiny local checkpoint and a tiny local task (no downloads)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

try:  # the harness and its datasets stack (the eval extra); under transformers 4.x today's datasets cannot import
    import lm_eval
    from lm_eval.tasks import TaskManager
except ImportError as err:
    pytest.skip(f"needs lm-eval importable (the eval extra): {err}", allow_module_level=True)

import tabes  # noqa: E402
import tabes.integrations.lm_eval  # noqa: E402,F401  (registers the "tabes" model type)
from tabes.tasks.text import generate_text  # noqa: E402
from tests.models.test_hf import _bert_with_tokenizer  # noqa: E402

PROMPTS = ["the cat sat", "a dog ran", "the mat", "a cat sat on the", "dog", "the dog sat on a mat"]
TASK = "tabes_tiny"
MODEL_ARGS = "pretrained={path},sampler=boe:r=2;rho=1.0,steps=4,gen_length=4,block_length=2"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny BERT checkpoint, and a task whose even documents' targets are the model's own greedy completions."""
    root = tmp_path_factory.mktemp("lm_eval")
    _bert_with_tokenizer(root / "bert")
    model = tabes.load(root / "bert")
    sampler = tabes.get_sampler("boe:r=2,rho=1.0")
    own = [generate_text(model, [p], gen_length=4, steps=4, block_length=2, sampler=sampler).texts[0] for p in PROMPTS]
    docs = [{"prompt": p, "target": own[i] if i % 2 == 0 else "zzz"} for i, p in enumerate(PROMPTS)]
    (root / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "tasks").mkdir()
    (root / "tasks" / f"{TASK}.yaml").write_text(
        f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "data.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["[SEP]"]
  max_gen_toks: 4
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
    )
    return root, own


def test_simple_evaluate_scores_the_models_own_completions(setup):
    root, own = setup
    out = lm_eval.simple_evaluate(
        model="tabes",
        model_args=MODEL_ARGS.format(path=root / "bert"),
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(root / "tasks")),
        log_samples=True,
        batch_size=4,
    )
    assert out["results"][TASK]["exact_match,none"] == pytest.approx(0.5)  # the even half matches exactly
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    assert [s["resps"][0][0] for s in samples] == own  # batched in the harness == one by one here


def test_cli_wrapper_runs_the_harness(setup, tmp_path):
    from tabes.cli import main

    root, _ = setup
    args = ["--model", "tabes", "--model_args", MODEL_ARGS.format(path=root / "bert"), "--tasks", TASK]
    args += ["--include_path", str(root / "tasks"), "--output_path", str(tmp_path / "res")]
    assert main(["lm-eval", *args]) == 0
    (result,) = list((tmp_path / "res").rglob("results_*.json"))
    assert json.loads(result.read_text())["results"][TASK]["exact_match,none"] == pytest.approx(0.5)


def test_loglikelihood_names_the_limitation(setup):
    root, _ = setup
    lm = tabes.integrations.lm_eval.TabesLM(pretrained=str(root / "bert"))
    with pytest.raises(NotImplementedError, match="no exact token likelihood"):
        lm.loglikelihood([])
    with pytest.raises(ValueError, match="unknown tabes model_args"):
        tabes.integrations.lm_eval.TabesLM(pretrained=str(root / "bert"), stesp=3)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        tabes.integrations.lm_eval.TabesLM(pretrained=str(root / "bert"), steps=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_equals_single_process(setup, tmp_path):
    root, own = setup
    base = [sys.executable, "-m", "tabes.cli", "lm-eval", "--model", "tabes", "--model_args", MODEL_ARGS.format(path=root / "bert")]
    base += ["--tasks", TASK, "--include_path", str(root / "tasks"), "--log_samples"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([*base, "--output_path", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [*base, "--output_path", str(tmp_path / "two")],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]

    def read(d):
        (res,) = list((tmp_path / d).rglob("results_*.json"))
        (smp,) = list((tmp_path / d).rglob(f"samples_{TASK}_*.jsonl"))
        rows = sorted((json.loads(x) for x in smp.read_text().splitlines()), key=lambda s: s["doc_id"])
        return json.loads(res.read_text())["results"][TASK]["exact_match,none"], [(s["doc_id"], s["resps"]) for s in rows]

    one, two = read("one"), read("two")
    assert two == one
    assert [r[0][0] for _, r in one[1]] == own and len(one[1]) == len(PROMPTS)


def test_device_argument(caplog):
    import torch

    from tabes.integrations.lm_eval import _device

    assert _device("cpu") == "cpu"
    assert _device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with caplog.at_level("WARNING"):
            assert _device("cuda") == "cpu"  # the harness's CLI default in some 0.4.x versions
        assert "CUDA is not available" in caplog.text


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    """An untrained ModernBERT with the word-problem tokenizer, in the layout ``tabes train text`` writes."""
    from tabes.tasks import text_demo as td

    path = tmp_path_factory.mktemp("text") / "model"
    tok = td.build_tokenizer(seed=0, n_texts=300, vocab_size=300)
    td.save(td.new_model(tok, dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)), tok, path)
    return path


def _samples(folder, task):
    (smp,) = list(folder.rglob(f"samples_{task}_*.jsonl"))
    return sorted((json.loads(x) for x in smp.read_text().splitlines()), key=lambda s: s["doc_id"])


def test_shipped_task_is_found_without_include_path(tiny_text_model, tmp_path):
    """`tabes lm-eval` finds tabes_text_demo on its own, reads the shipped test split offline, and
    reads another file of the same format through --metadata data_file."""
    from tabes.cli import main
    from tabes.tasks import word_problems as wp

    model_args = f"pretrained={tiny_text_model},steps=8,gen_length=8"
    args = ["--model", "tabes", "--model_args", model_args, "--tasks", "tabes_text_demo", "--log_samples"]
    assert main(["lm-eval", *args, "--limit", "3", "--output_path", str(tmp_path / "a")]) == 0
    rows = _samples(tmp_path / "a", "tabes_text_demo")
    assert [r["doc"]["question"] for r in rows] == [p.question for p in wp.split("test")[:3]]
    assert all(r["target"] == p.answer for r, p in zip(rows, wp.split("test")[:3]))
    fresh = wp.problems(2, seed=123457)
    wp.write_jsonl(tmp_path / "fresh.jsonl", fresh)
    meta = json.dumps({"data_file": str(tmp_path / "fresh.jsonl")})
    assert main(["lm-eval", *args, "--metadata", meta, "--output_path", str(tmp_path / "b")]) == 0
    assert [r["doc"]["question"] for r in _samples(tmp_path / "b", "tabes_text_demo")] == [p.question for p in fresh]
