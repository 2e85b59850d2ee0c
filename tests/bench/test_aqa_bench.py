from __future__ import annotations

import json

import pytest

from tabes.cli import main


def test_bench_aqa_json_rows(capsys):
    assert (
        main(["bench", "aqa", "--lengths", "24,40", "--rhos", "0.5,1.0", "--d-model", "32", "--layers", "1,2", "--repeats", "1", "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    cells = [(24, 0.5), (24, 1.0), (40, 0.5), (40, 1.0)]
    assert [(r["layers"], r["L"], r["rho"]) for r in rows] == [(n, *c) for n in (1, 2) for c in cells]
    assert all(r["default_ratio"] == r["kv_ratio"] for r in rows)  # the models' default mode is kv
    for r in rows:
        assert {"L", "rho", "dense_ms", "aqa_ms", "ratio", "attn_share", "bound", "attn_only_ms", "kv_ms"} <= set(r)
        assert r["dense_ms"] > 0 and r["aqa_ms"] > 0 and 0 <= r["attn_share"] <= 1
        assert abs(r["bound"] - (1 - r["attn_share"])) < 1e-3
        assert abs(r["ratio"] - r["aqa_ms"] / r["dense_ms"]) <= 0.02 * r["ratio"] + 0.002


def test_bench_aqa_rejects_bad_rho(capsys):
    assert main(["bench", "aqa", "--lengths", "24", "--rhos", "1.5", "--d-model", "32", "--layers", "1", "--repeats", "1"]) == 2
    assert "rho must be in (0, 1]" in capsys.readouterr().err


def test_bench_step_json_rows(capsys):
    assert (
        main(["bench", "step", "--lengths", "81,32", "--samplers", "boe,boe:point=mask", "--repeats", "2", "--batch", "2", "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [(r["L"], r["sampler"]) for r in rows] == [(81, "boe"), (81, "boe:point=mask"), (32, "boe"), (32, "boe:point=mask")]
    for r in rows:
        assert r["batch"] == 2 and r["step_ratio"] == pytest.approx(r["boe_ms"] / r["confidence_ms"], rel=1e-2)
