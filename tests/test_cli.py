from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tabes.cli import main
from tests.conftest import PUZZLES


@pytest.fixture()
def model_dir(tmp_path, tiny_sudoku_model):
    tiny_sudoku_model.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def test_solve_one_prints_board(model_dir, capsys):
    code = main(["solve", PUZZLES[0], "--model", model_dir, "--sampler", "confidence"])
    out = capsys.readouterr().out
    assert code in (0, 1)  # 1 when the (random) model's grid is not valid
    lines = out.splitlines()
    assert len(lines[0].split()) == 11 and "------+-------+------" in lines[3]
    assert "valid:" in out and "consistent with the givens: yes" in out


def test_solve_json(model_dir, capsys):
    main(["solve", PUZZLES[1].replace("0", "."), "--model", model_dir, "--json", "--sampler", "confidence"])
    rec = json.loads(capsys.readouterr().out)
    assert rec["puzzle"] == PUZZLES[1].replace("0", ".") and len(rec["output"]) == 81
    assert rec["forwards"] >= 1 and rec["backwards"] == 0


def test_solve_file(model_dir, tmp_path, capsys):
    f = tmp_path / "in.csv"
    f.write_text(
        "puzzle,solution\n"
        + PUZZLES[0]
        + ",534678912672195348198342567859761423426853791713924856961537284287419635345286179\n"
        + PUZZLES[1]
        + ",\n"
    )
    out_file = tmp_path / "out.jsonl"
    assert main(["solve", "--file", str(f), "--out", str(out_file), "--model", model_dir, "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("solved ") and "/2 (" in last
    recs = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [r["puzzle"] for r in recs] == PUZZLES
    assert set(recs[0]) == {"puzzle", "output", "valid", "correct", "forwards", "backwards", "seconds"}
    assert "correct" not in recs[1]
    assert main(["solve", "--file", str(f), "--limit", "1", "--model", model_dir, "--no-progress"]) == 0
    assert "/1 (" in capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "123"], "81 cells"),
        (["solve", "x" * 81], "bad character"),
        (["solve", "55" + "0" * 79], "row 1"),
        (["solve", PUZZLES[0], "--sampler", "nope"], "unknown sampler 'nope'"),
        (["solve", PUZZLES[0], "--sampler", "threshold:threshold=2"], "threshold must be in"),
        (["solve", "--file", "/nonexistent/in.csv"], "puzzle file not found"),
        (["solve", PUZZLES[0], "--model", "/nonexistent/model"], "model not found"),
        (["solve"], "give either a PUZZLE or --file"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("steps", ["0", "-3", "abc"])
def test_bad_steps_exit_2(steps):
    proc = subprocess.run([sys.executable, "-m", "tabes.cli", "solve", PUZZLES[0], "--steps", steps], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--steps" in proc.stderr


def test_samplers_lists_every_sampler(capsys):
    from tabes.samplers import available

    main(["samplers"])
    out = capsys.readouterr().out
    for name in available():
        assert name in out
    assert "threshold=0.9" in out


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
        "--eval-every",
        "100",
        "--no-progress",
    ]
    assert main(args) == 0
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert state["step"] == 3 and state["warm_from"] == 0
    assert main(args) == 2  # the folder now holds a model: refuse to overwrite it
    assert "already holds a model" in capsys.readouterr().err


def test_solve_trace_png(model_dir, tmp_path):
    png = tmp_path / "trace.png"
    main(["solve", PUZZLES[0], "--model", model_dir, "--trace-png", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_sampler_lists_split_into_specs():
    from tabes.cli import _split_specs

    assert _split_specs("boe:rho=0.25,r=4,margin,lookahead:k=4") == ["boe:rho=0.25,r=4", "margin", "lookahead:k=4"]
    assert _split_specs("bon:n=4,base=boe:point=mask,confidence") == ["bon:n=4,base=boe:point=mask", "confidence"]
