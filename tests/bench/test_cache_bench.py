"""tabes bench cache: rows, keys and the CLI on a tiny configuration (the numbers are the bench's business)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from tabes.bench.cache import CacheBenchConfig  # noqa: E402
from tabes.cli import main  # noqa: E402


def test_bench_cache_json_rows(capsys):
    args = ["bench", "cache", "--prompt", "24", "--gen", "8", "--block", "4", "--width", "32", "--vocab", "64", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sampler"], r["cache"]) for r in rows] == [(s, c) for s in ("confidence", "boe") for c in ("none", "prefix", "dual")]
    for r in rows:
        assert {"sampler", "cache", "prompt", "gen", "block", "s_per_token", "speedup"} <= r.keys()
        assert (r["prompt"], r["gen"], r["block"]) == (24, 8, 4) and r["s_per_token"] > 0
        if r["cache"] == "none":
            assert r["speedup"] == 1.0 and r["agree_with_none"] == 1.0


def test_bench_cache_rejects_bad_settings(capsys):
    with pytest.raises(ValueError, match="width"):
        CacheBenchConfig(width=30, heads=4)
    assert main(["bench", "cache", "--caches", "none,full", "--json"]) == 2
    assert "cache must be one of" in capsys.readouterr().err
