from __future__ import annotations

import json

import pytest

from tabes.bench.train import SETTINGS, run_train_bench
from tabes.cli import main


def test_rows_have_the_documented_keys_and_identical_starts(capsys):
    assert main(["bench", "train", "--steps", "8", "--batch-size", "4", "--settings", "baseline,bf16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in rows] == ["baseline", "bf16"]
    for r in rows:
        assert {"setting", "samples_per_s", "loss_first", "loss_last"} <= set(r) and r["samples_per_s"] > 0
    # the same initialisation and the same batches: the first losses agree up to bf16 rounding
    assert rows[0]["loss_first"] == pytest.approx(rows[1]["loss_first"], abs=0.02)


def test_settings_are_validated_and_default_is_the_trainer_default():
    from tabes.train import TrainConfig

    assert (SETTINGS["default"].precision, SETTINGS["default"].compile) == (TrainConfig.precision, TrainConfig.compile)
    assert SETTINGS["baseline"].kernel == "sdpa" and SETTINGS["baseline"].precision == "fp32" and not SETTINGS["baseline"].compile
    with pytest.raises(ValueError, match="unknown training setting"):
        run_train_bench(["fast"], steps=10)
