from __future__ import annotations

import json

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
