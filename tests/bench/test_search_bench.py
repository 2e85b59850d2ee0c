from __future__ import annotations

import json

from tabes.cli import main
from tests.conftest import PUZZLES

SOLUTION0 = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_search_bench_rows_and_report(model_dir, tmp_path, capsys):
    f = tmp_path / "in.csv"
    f.write_text(f"puzzle,solution,source\n{PUZZLES[0]},{SOLUTION0},easy:a\n{PUZZLES[1]},,hard:b\n")
    out = tmp_path / "out"
    args = ["bench", "search", "--file", str(f), "--out", str(out), "--model", model_dir, "--rules", "mrv", "--off-limit", "1"]
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    pooled = {(r["part"], r["rule"], r["propagate"]): r for r in rows if r["source"] == "all"}
    solve = next(r for (part, _, _), r in pooled.items() if part == "solve")
    assert solve["solved"] == solve["n"] == 2 and solve["gave_up"] == 0  # an untrained model, and yet every puzzle
    assert {r["source"] for r in rows} == {"easy", "hard", "all"}  # bands, not detailed sources
    for r in rows:
        assert r["cpu"] and r["threads"] >= 1 and r["nodes_p95"] >= r["nodes_median"]
        if r["part"] == "rule" and r["rule"] == "mrv":
            assert r["forwards_median"] == 0
    assert "x the decode's wall-clock" in (out / "report.md").read_text()
