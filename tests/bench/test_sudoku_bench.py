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
    recs = run_sudoku_bench(
        puzzle_file, ["confidence", "threshold:threshold=0.5"], [20, 81], out, model=tiny_sudoku_model, progress=False, by_source=True
    )
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
        "remasked",
        "steered_frac",
        "wall_s",
        "file_sha256",
        "grouping",
        "limit",
    }
    assert all(set(r) == keys for r in recs)
    assert all(r["remasked"] == 0 and r["steered_frac"] is None for r in recs)  # neither remasks nor steers
    assert {r["source"] for r in recs} == {"a", "b"} and {r["n"] for r in recs} == {1, 2}
    assert (out / "report.md").read_text().startswith("# Sudoku benchmark")
    assert (out / "pareto.png").stat().st_size > 1000
    # a killed run: one finished line dropped, a partial line left behind
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:17])
    again = run_sudoku_bench(
        puzzle_file, ["confidence", "threshold:threshold=0.5"], [20, 81], out, model=tiny_sudoku_model, progress=False, by_source=True
    )
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


def test_pooled_table_sums_the_bands():
    from tabes.bench.sudoku import pooled_table

    rec = dict(sampler="confidence", options={}, steps=81, forwards=10.0, backwards=0.0)
    recs = [
        {**rec, "source": "a", "n": 10, "solved": 5, "fwd_equiv": 10.0, "wall_s": 2.0},
        {**rec, "source": "b", "n": 30, "solved": 3, "fwd_equiv": 20.0, "wall_s": 6.0},
    ]
    (row,) = pooled_table(recs).splitlines()[2:]
    lo, hi = wilson(8, 40)
    assert row == f"| confidence | 81 | 8/40 | 20.0% | {100 * lo:.1f}-{100 * hi:.1f} | 17.5 | 0.200 | - | - |"  # older records: no counts
    recs = [{**recs[0], "remasked": 1.0, "steered_frac": 0.5}, {**recs[1], "remasked": 3.0, "steered_frac": 0.1}]
    assert pooled_table(recs).splitlines()[2].endswith("| 2.50 | 20.0% |")  # weighted by puzzles


def test_frontier_and_match_cost_tables():
    from tabes.bench.sudoku import frontier_table, match_cost_table

    def rec(sampler, options, steps, source, solved, wall, fe):
        return dict(sampler=sampler, options=options, steps=steps, source=source, n=10, solved=solved, wall_s=wall, fwd_equiv=fe)

    recs = [
        rec("confidence", {}, 27, "a", 3, 1.0, 27),  # cheaper than any BoE point: not compared
        rec("confidence", {}, 81, "a", 5, 3.0, 57),
        rec("boe", {}, 27, "a", 6, 2.0, 100),
        rec("lookahead", {"k": 8}, 81, "a", 7, 10.0, 320),
        rec("confidence", {}, 81, "b", 5, 3.0, 57),
        rec("boe", {}, 27, "b", 4, 2.0, 100),
    ]
    lines = frontier_table(recs).splitlines()
    # confidence@81 costs more wall-clock than boe@27 but fewer fwd-equivalents: compared on the first axis only
    assert lines[2] == "| a | below lookahead:k=8@81 (70% vs 60%) | below lookahead:k=8@81 (70% vs 60%) |"
    assert lines[3].startswith("| b | below confidence@81 (50% vs 40%) |")
    tie = [rec("confidence", {}, 81, "c", 5, 3.0, 157), rec("boe", {}, 27, "c", 5, 2.0, 100), rec("margin", {}, 81, "c", 4, 3.0, 157)]
    assert frontier_table(tie).splitlines()[2] == "| c | at or above all 2 (strictly above 1) | at or above all 2 (strictly above 1) |"
    table = match_cost_table(recs)
    assert "| confidence@27 | 30.0% | 0.100 | boe@27 | 0.200 | 2.00 |" in table
    assert "| confidence@81 | 50.0% | 0.300 | boe@27 | 0.200 | 0.67 |" in table
    assert "| lookahead:k=8@81 | 70.0% | 1.000 | none | - | - |" in table


def test_timing_pass_writes_side_by_side_times_and_the_report_uses_them(tmp_path, puzzle_file, tiny_sudoku_model):
    out = tmp_path / "run"
    run_sudoku_bench(puzzle_file, ["confidence", "boe"], [10], out, model=tiny_sudoku_model, progress=False)
    recs = run_sudoku_bench(puzzle_file, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, timing=1, timing_repeats=2)
    times = json.loads((out / "timing.json").read_text())
    assert sorted(t["sampler"] for t in times) == ["boe", "confidence"]  # every configuration in the file
    assert all(t["puzzles"] == 2 and t["repeats"] == 2 and t["s_per_puzzle"] > 0 for t in times)
    assert min(t["ratio_to_fastest"] for t in times) == 1.0
    by_name = {t["sampler"]: t["s_per_puzzle"] for t in times}
    for r in recs:
        assert r["wall_s"] == pytest.approx(by_name[r["sampler"]] * r["n"], abs=1e-3) and "cell_wall_s" in r
    assert "side-by-side timing pass" in (out / "report.md").read_text()
    # the file of record keeps the cells' own times
    assert all("cell_wall_s" not in r for r in read_results(out / "results.jsonl"))


def test_records_from_before_an_option_existed_get_its_default(tmp_path, puzzle_file, tiny_sudoku_model):
    out = tmp_path / "run"
    recs = run_sudoku_bench(puzzle_file, ["boe"], [10], out, model=tiny_sudoku_model, progress=False)
    old = []
    for r in recs:  # as written before BoE had a "point" option
        opts = dict(r["options"])
        del opts["point"]
        old.append(json.dumps({**r, "options": opts, "wall_s": 12345.0}))  # a marker: a recomputed cell would not keep it
    (out / "results.jsonl").write_text("\n".join(old) + "\n")
    again = run_sudoku_bench(puzzle_file, ["boe"], [10], out, model=tiny_sudoku_model, progress=False)
    assert len(again) == len(recs) and all(r["wall_s"] == 12345.0 and r["options"]["point"] == "soft" for r in again)


def test_a_folder_of_another_puzzle_set_is_refused(tmp_path, puzzle_file, tiny_sudoku_model):
    out = tmp_path / "run"
    run_sudoku_bench(puzzle_file, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, by_source=True)
    other = tmp_path / "other.csv"
    other.write_text("puzzle,source\n" + PUZZLES[1] + ",c:w\n")
    with pytest.raises(ValueError, match="another puzzle set.*--force-new"):
        run_sudoku_bench(other, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, by_source=True)
    with pytest.raises(ValueError, match="grouping by-source"):  # same file, other grouping
        run_sudoku_bench(puzzle_file, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, by_source=False)
    with pytest.raises(ValueError, match="first 1"):  # same file, a subset of it
        run_sudoku_bench(puzzle_file, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, by_source=True, limit=1)
    recs = run_sudoku_bench(other, ["confidence"], [10], out, model=tiny_sudoku_model, progress=False, by_source=True, force_new=True)
    assert [(r["source"], r["n"]) for r in recs] == [("c", 1)]  # the old cells are gone, not pooled
    assert "| c | 1 |" in (out / "report.md").read_text()


def test_the_cli_exits_2_for_a_folder_of_another_file(tmp_path, puzzle_file, model_dir, capsys):
    from tabes.cli import main

    out = tmp_path / "run"
    args = ["bench", "sudoku", "--samplers", "confidence", "--steps", "10", "--out", str(out), "--model", model_dir, "--no-progress"]
    assert main([*args, "--file", str(puzzle_file)]) == 0
    other = tmp_path / "other.csv"
    other.write_text("puzzle\n" + PUZZLES[1] + "\n")
    assert main([*args, "--file", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another puzzle set" in err and len(err.splitlines()) == 1


def test_pooling_never_counts_a_puzzle_twice():
    from tabes.bench.sudoku import pooled_table

    rec = dict(sampler="confidence", options={}, steps=81, forwards=10.0, backwards=0.0, fwd_equiv=10.0, wall_s=1.0)
    bands = [{**rec, "source": "a", "n": 10, "solved": 5}, {**rec, "source": "b", "n": 10, "solved": 5}]
    with pytest.raises(ValueError, match="count once"):
        pooled_table([*bands, {**rec, "source": "all", "n": 20, "solved": 10}])  # an 'all' cell beside its bands
    with pytest.raises(ValueError, match="count once"):
        pooled_table([*bands, bands[0]])  # the same band twice
    assert "10/20" in pooled_table(bands)


def test_bench_records_steered_steps_and_remasked_cells(tmp_path, puzzle_file, tiny_sudoku_model):
    recs = run_sudoku_bench(
        puzzle_file, ["boe", "boe:ambiguity=0", "boe:repair=0.9"], [20], tmp_path, model=tiny_sudoku_model, progress=False, by_source=False
    )
    by = {r["options"]["ambiguity"] if r["options"]["repair"] == 0 else "repair": r for r in recs}
    assert 0.5 < by[1.0]["steered_frac"] <= 1 and by[0]["steered_frac"] == 0 and by[1.0]["remasked"] == 0
    assert by["repair"]["remasked"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "re-masked/puzzle | steered steps" in report and "| 0.0% |" in report
