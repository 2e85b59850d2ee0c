from __future__ import annotations

import json

import pytest

from tabes.cli import main


def test_train_init_from_a_model_folder(tmp_path, model_dir, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "sudoku",
        "--out",
        str(out),
        "--init-from",
        model_dir,
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--pool-size",
        "10",
        "--workers",
        "1",
        "--no-compile",
        "--eval-every",
        "100",
        "--no-progress",
    ]
    assert main(args) == 0
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert state["step"] == 3 and state["warm_from"] == 0
    assert main(args) == 2  # the folder now holds a model: refuse to overwrite it
    assert "already holds a model" in capsys.readouterr().err


def test_train_records_the_data_options(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "sudoku", "--out", str(out), "--max-steps", "2", "--batch-size", "8", "--pool-size", "10", "--workers", "1"]
    base += ["--no-compile", "--eval-every", "100", "--eval-puzzles", "2", "--no-progress", "--model-opt", "d_model=16"]
    base += ["--model-opt", "n_layers=1", "--model-opt", "n_heads=2"]
    assert main([*base, "--closure-frac", "0.3", "--hard-min-blanks", "30"]) == 0
    cfg = json.loads((out / "train_state.json").read_text())["config"]
    assert cfg["closure_frac"] == 0.3 and cfg["hard_min_blanks"] == 30
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main([*base, "--closure-frac", "1.5"])
    assert exc.value.code == 2 and "--closure-frac: must be in [0, 1], got 1.5" in capsys.readouterr().err
