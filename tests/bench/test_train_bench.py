from __future__ import annotations

import json

import pytest
import torch

from tabes.bench.train import SETTINGS, run_train_bench
from tabes.cli import main


def test_rows_have_the_documented_keys_and_identical_starts(capsys):
    assert main(["bench", "train", "--steps", "8", "--batch-size", "4", "--settings", "baseline,bf16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in rows] == ["baseline", "bf16"]
    for r in rows:
        assert {"setting", "samples_per_s", "loss_first", "loss_last", "cpu", "why"} <= set(r) and r["samples_per_s"] > 0
        assert r["cpu"].startswith(torch.backends.cpu.get_cpu_capability())
    # the same initialisation and the same batches: the first losses agree up to bf16 rounding
    assert rows[0]["loss_first"] == pytest.approx(rows[1]["loss_first"], abs=0.02)


def test_settings_are_validated_and_default_is_the_trainer_default():
    from tabes.train import TrainConfig

    assert (SETTINGS["default"].precision, SETTINGS["default"].compile) == (TrainConfig.precision, TrainConfig.compile) == ("auto", None)
    assert SETTINGS["baseline"].kernel == "sdpa" and SETTINGS["baseline"].precision == "fp32" and not SETTINGS["baseline"].compile
    with pytest.raises(ValueError, match="unknown training setting"):
        run_train_bench(["fast"], steps=10)


def test_default_row_resolves_to_this_machines_choice(capsys):
    from tabes.hardware import choose_compile, choose_precision

    assert main(["bench", "train", "--steps", "7", "--batch-size", "4", "--settings", "default", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    precision, _ = choose_precision("cpu")
    assert (row["precision"], row["compile"]) == (precision, choose_compile("cpu", precision)[0])
    assert "auto" in row["why"]


def test_default_settings_skip_bf16_without_native_bf16(monkeypatch):
    import tabes.bench.train as bench
    from tabes.hardware import CpuInfo

    monkeypatch.setattr(bench, "cpu_info", lambda: CpuInfo("AVX2", ()))
    assert bench.default_settings() == ["baseline", "default"]
    monkeypatch.setattr(bench, "cpu_info", lambda: CpuInfo("AVX512", ("avx512_bf16",)))
    assert bench.default_settings() == ["baseline", "bf16", "default"]
