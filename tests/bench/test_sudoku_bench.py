from __future__ import annotations

import json

import pytest

from tabes.bench.sudoku import read_results, run_sudoku_bench, wilson
from tests.conftest import PUZZLES


@pytest.fixture()
def puzzle_file(tmp_path):
    f = tmp_path / "p.csv"
    sol = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
    f.write_text(f"puzzle,solution,source\n{PUZZLES[0]},{sol},a:x\n{PUZZLES[1]},,b:y\n{PUZZLES[0]},{sol},b:z\n")
    return f


def test_wilson():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_bench_writes_cells_and_resumes(tmp_path, puzzle_file, tiny_sudoku_model):
    out = tmp_path / "run"
    recs = run_sudoku_bench(puzzle_file, ["confidence", "threshold:threshold=0.5"], [20, 81], out, model=tiny_sudoku_model, progress=False)
    assert len(recs) == 2 * 2 * 2  # sources x samplers x steps
    keys = {
        "sampler",
        "options",
        "steps",
        "source",
        "n",
        "solved",
        "accuracy",
        "ci_low",
        "ci_high",
        "forwards",
        "backwards",
        "fwd_equiv",
        "wall_s",
    }
    assert all(set(r) == keys for r in recs)
    assert {r["source"] for r in recs} == {"a", "b"} and {r["n"] for r in recs} == {1, 2}
    assert (out / "report.md").read_text().startswith("# Sudoku benchmark")
    assert (out / "pareto.png").stat().st_size > 1000
    # a killed run: one finished line dropped, a partial line left behind
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:17])
    again = run_sudoku_bench(puzzle_file, ["confidence", "threshold:threshold=0.5"], [20, 81], out, model=tiny_sudoku_model, progress=False)
    assert len(again) == 8
    assert [json.dumps(r, sort_keys=True) for r in again[:-1]] == [json.dumps(r, sort_keys=True) for r in recs[:-1]]  # not recomputed
    assert len(read_results(out / "results.jsonl")) == 8


def test_bench_rejects_bad_specs(tmp_path, puzzle_file, tiny_sudoku_model):
    with pytest.raises(ValueError, match="unknown sampler"):
        run_sudoku_bench(puzzle_file, ["nope"], [10], tmp_path, model=tiny_sudoku_model, progress=False)
    with pytest.raises(ValueError, match="steps must be positive"):
        run_sudoku_bench(puzzle_file, ["margin"], [0], tmp_path, model=tiny_sudoku_model, progress=False)


def test_bench_entropy_plot(tmp_path, puzzle_file, tiny_sudoku_model, capsys):
    from tabes.cli import main

    tiny_sudoku_model.save_pretrained(tmp_path / "m")
    png = tmp_path / "h.png"
    assert (
        main(
            [
                "bench",
                "entropy",
                "--file",
                str(puzzle_file),
                "--samplers",
                "confidence,margin",
                "--out",
                str(png),
                "--model",
                str(tmp_path / "m"),
                "--steps",
                "20",
            ]
        )
        == 0
    )
    assert png.stat().st_size > 5000
    out = capsys.readouterr().out
    assert out.startswith("confidence:") and "margin:" in out
