from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tabes.cli import main
from tests.conftest import PUZZLES


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
    assert [r["puzzle"] for r in recs] == PUZZLES and [r["line"] for r in recs] == [2, 3]
    keys = {"line", "puzzle", "output", "status", "valid", "correct", "forwards", "backwards", "seconds", "path", "nodes", "backtracks"}
    assert set(recs[0]) == keys
    assert recs[0]["status"] in ("solved", "invalid", "wrong") and recs[0]["status"] == "solved" if recs[0]["correct"] else True
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


def test_solve_trace_png(model_dir, tmp_path):
    png = tmp_path / "trace.png"
    main(["solve", PUZZLES[0], "--model", model_dir, "--trace-png", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_sampler_lists_split_into_specs():
    from tabes.cli.common import split_specs as _split_specs

    assert _split_specs("boe:rho=0.25,r=4,margin,lookahead:k=4") == ["boe:rho=0.25,r=4", "margin", "lookahead:k=4"]
    assert _split_specs("bon:n=4,base=boe:point=mask,confidence") == ["bon:n=4,base=boe:point=mask", "confidence"]


# --------------------------------------------------------------------------- outputs are safe


def _csv(tmp_path, n=4, extra=""):
    f = tmp_path / "in.csv"
    f.write_text("puzzle,source\n" + "".join(f"{PUZZLES[i % 2]},s{i}\n" for i in range(n)) + extra)
    return f


@pytest.mark.parametrize("case", ["directory", "missing folder", "no permission"])
def test_bad_out_fails_before_any_decoding(case, model_dir, tmp_path, monkeypatch, capsys):
    import os

    from tabes.tasks import sudoku

    def boom(*a, **k):
        raise AssertionError("decoded before checking --out")

    monkeypatch.setattr(sudoku, "decode_puzzles", boom)
    out = {"directory": tmp_path, "missing folder": tmp_path / "nope" / "out.jsonl", "no permission": tmp_path / "out.jsonl"}[case]
    if case == "no permission":
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(tmp_path) else real(p, mode, **k))
    code = main(["solve", "--file", str(_csv(tmp_path)), "--out", str(out), "--model", model_dir, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--out" in err, err
    assert {"directory": "is a directory", "missing folder": "does not exist", "no permission": "no permission"}[case] in err


def test_bad_trace_png_fails_before_decoding(model_dir, tmp_path, capsys):
    assert main(["solve", PUZZLES[0], "--model", model_dir, "--trace-png", str(tmp_path / "no" / "t.png")]) == 2
    assert "--trace-png" in capsys.readouterr().err


def test_existing_out_needs_resume_or_overwrite(model_dir, tmp_path, capsys):
    f, out = _csv(tmp_path, 2), tmp_path / "out.jsonl"
    args = ["solve", "--file", str(f), "--out", str(out), "--model", model_dir, "--sampler", "confidence", "--no-progress"]
    assert main(args) == 0
    first = out.read_text()
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert out.read_text() == first  # nothing lost

    def outputs():
        return [(r["line"], r["output"]) for r in map(json.loads, out.read_text().splitlines())]

    before = outputs()
    assert main([*args, "--overwrite"]) == 0 and outputs() == before and len(before) == 2


def test_killed_run_keeps_finished_batches_and_resume_completes_it(model_dir, tmp_path):
    """A run killed with SIGKILL mid-way keeps every finished batch; --resume decodes only the
    rest; in the end every puzzle line is there exactly once."""
    import os
    import signal
    import time

    n = 40
    f, out = _csv(tmp_path, n), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "tabes.cli", "solve", "--file", str(f), "--out", str(out), "--model", model_dir]
    cmd += ["--sampler", "confidence", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out.is_file() and out.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no records within 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = [json.loads(x) for x in out.read_text().splitlines() if x.endswith("}")]
    assert 3 <= len(kept) < n
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["line"] for r in recs) == list(range(2, n + 2))
    assert f"from {out}" in proc.stdout and f"/{n} (" in proc.stdout


def test_resume_of_a_complete_file_decodes_nothing(model_dir, tmp_path, monkeypatch, capsys):
    from tabes.tasks import sudoku

    f, out = _csv(tmp_path, 3), tmp_path / "out.jsonl"
    args = ["solve", "--file", str(f), "--out", str(out), "--model", model_dir, "--sampler", "confidence", "--no-progress"]
    assert main(args) == 0
    before = out.read_text()
    monkeypatch.setattr(sudoku, "decode_puzzles", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert main([*args, "--resume"]) == 0
    assert out.read_text() == before and "/3 (" in capsys.readouterr().out


# --------------------------------------------------------------------------- clear errors

NO_SOLUTION = "12345678" + "0" * 8 + "9" + "0" * 64  # row 1 needs a 9 in box 3, which already has one
TWO_SOLUTIONS = "0" * 79 + "12"


def test_puzzle_without_solution_exits_1(model_dir, capsys):
    assert main(["solve", NO_SOLUTION, "--model", model_dir]) == 1
    err = capsys.readouterr().err
    assert "has no solution" in err and "Traceback" not in err


def test_puzzle_with_several_solutions_exits_1(model_dir, capsys):
    assert main(["solve", TWO_SOLUTIONS, "--model", model_dir, "--sampler", "confidence"]) == 1
    assert "has 2+ solutions" in capsys.readouterr().err


def test_file_records_carry_a_status(model_dir, tmp_path):
    f = tmp_path / "in.csv"
    f.write_text(f"puzzle\n{NO_SOLUTION}\n{TWO_SOLUTIONS}\n{PUZZLES[0]}\n")
    out = tmp_path / "out.jsonl"
    assert main(["solve", "--file", str(f), "--out", str(out), "--model", model_dir, "--sampler", "confidence", "--no-progress"]) == 0
    status = [json.loads(x)["status"] for x in out.read_text().splitlines()]
    assert status[:2] == ["no_solution", "multiple_solutions"] and status[2] in ("solved", "invalid")


def test_bad_solution_names_the_column(tmp_path, capsys):
    f = tmp_path / "in.csv"
    f.write_text(f"puzzle,solution\n{PUZZLES[0]},{'1' * 81}\n")
    assert main(["solve", "--file", str(f)]) == 2
    err = capsys.readouterr().err
    assert "column 'solution'" in err and "line 2" in err and str(f) in err


def test_non_utf8_file_names_the_file(tmp_path, capsys):
    f = tmp_path / "latin.csv"
    f.write_bytes(b"puzzle,source\n" + PUZZLES[0].encode() + b",caf\xe9\n")
    assert main(["solve", "--file", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(f) in err and "UTF-8" in err and len(err.splitlines()) == 1


def test_skip_bad_rows_decodes_the_rest(model_dir, tmp_path, capsys):
    f = _csv(tmp_path, 2, extra="123,bad\n" + "55" + "0" * 79 + ",clash\n")
    out = tmp_path / "out.jsonl"
    args = ["solve", "--file", str(f), "--out", str(out), "--model", model_dir, "--sampler", "confidence", "--no-progress"]
    assert main(args) == 2  # without the flag a bad row stops the run
    assert main([*args, "--skip-bad-rows", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 bad row(s)" in err and "lines 4, 5" in err
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [2, 3]


def test_trace_png_title_says_the_outcome():
    from tabes.cli.solve import _status_line

    assert _status_line(True, set(), "unique").startswith("solved")
    assert _status_line(False, {1, 2}, "unique") == "invalid: 2 clashing cells"
    assert "2+ solutions" in _status_line(True, set(), "multiple solutions")


# from the public forum-hardest list (dev.csv's forum_hardest_1106 band); the shipped model decodes it wrong
FORUM = "000000058006000700840070003000001000009020100000609000500080002007000800230000040"
FORUM_SOLUTION = "973216458156348729842975613624851397389724165715639284561483972497562831238197546"


def test_default_solve_searches_when_the_decode_is_invalid(capsys):
    assert main(["solve", FORUM, "--json", "--search", "none"]) == 1
    decoded = json.loads(capsys.readouterr().out)
    assert (decoded["status"], decoded["path"], decoded["nodes"]) == ("invalid", "decode", 0)
    assert main(["solve", FORUM, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert (rec["status"], rec["path"], rec["output"]) == ("solved", "search", FORUM_SOLUTION)
    assert rec["nodes"] >= 1 and rec["backtracks"] >= 1
    assert rec["forwards"] == decoded["forwards"]  # the default rule (mrv) runs no forward of its own
    assert main(["solve", FORUM, "--json", "--search", "dfs:rule=confidence"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["output"] == FORUM_SOLUTION and rec["forwards"] > decoded["forwards"]  # the model guided the search


def test_an_untrained_model_still_solves_every_puzzle(model_dir, tmp_path, capsys):
    f = tmp_path / "in.csv"
    f.write_text("puzzle,solution\n" + "\n".join(f"{p}," for p in (*PUZZLES, FORUM)) + "\n")
    out_file = tmp_path / "out.jsonl"
    assert main(["solve", "--file", str(f), "--out", str(out_file), "--model", model_dir, "--no-progress"]) == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["solved"] * (len(PUZZLES) + 1)
    assert all(r["path"] in ("decode", "search") for r in rows) and any(r["path"] == "search" for r in rows)


def test_search_must_be_a_dfs_spec(capsys):
    assert main(["solve", FORUM, "--search", "confidence"]) == 2
    assert "--search must be a dfs spec" in capsys.readouterr().err
