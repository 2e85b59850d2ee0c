"""Hardware-aware defaults: bf16 and torch.compile only where this machine runs them faster."""

from __future__ import annotations

import pytest
import torch

import tabes.hardware as hw
from tabes.hardware import CpuInfo


def _decide(monkeypatch, info: CpuInfo, speedup: float) -> tuple[str, str]:
    monkeypatch.setattr(hw, "cpu_info", lambda: info)
    monkeypatch.setattr(hw, "bf16_speedup", lambda: speedup)
    return hw._choose_precision.__wrapped__("cpu")


def test_precision_follows_the_flags_and_the_measurement(monkeypatch):
    # no native bf16: float32 without measuring (a measurement would cost seconds on AVX2)
    monkeypatch.setattr(hw, "cpu_info", lambda: CpuInfo("AVX2", ()))
    monkeypatch.setattr(hw, "bf16_speedup", lambda: pytest.fail("measured although the flags tell"))
    precision, why = hw._choose_precision.__wrapped__("cpu")
    assert precision == "fp32" and "AVX2" in why and "no native bf16" in why
    # native bf16 that measures fast: bf16; native but slow, or unknown flags and slow: float32
    assert _decide(monkeypatch, CpuInfo("AVX512", ("avx512_bf16",)), 3.0)[0] == "bf16"
    assert _decide(monkeypatch, CpuInfo("AVX512", ("amx_bf16",)), 1.1)[0] == "fp32"
    assert _decide(monkeypatch, CpuInfo("DEFAULT", None), 0.2)[0] == "fp32"
    assert _decide(monkeypatch, CpuInfo("DEFAULT", None), 2.0)[0] == "bf16"


def test_compile_only_where_it_paid():
    assert hw._choose_compile.__wrapped__("cpu", "fp32")[0] is False
    assert hw._choose_compile.__wrapped__("cpu", "bf16")[0] is True
    assert hw._choose_compile.__wrapped__("cuda", "bf16")[0] is True


def test_this_machine_never_gets_emulated_bf16():
    info = hw.cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    precision, why = hw.choose_precision("cpu")
    if info.bf16_native is False:
        assert precision == "fp32"
    assert why and hw.choose_precision("cpu") == (precision, why)  # cached: the same answer


def test_explicit_settings_win_and_auto_is_explained():
    from tabes.train import resolve_speed

    assert resolve_speed("bf16", True)[:2] == ("bf16", True)
    assert resolve_speed("fp32", False)[:2] == ("fp32", False)
    precision, compile, why = resolve_speed("auto", None)
    assert (precision, compile) == (hw.choose_precision()[0], hw.choose_compile("cpu", precision)[0])
    assert "auto" in why and hw.cpu_info().capability in why
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_speed("fp8", None)


def test_bf16_warning_is_one_line_once(monkeypatch, capsys):
    monkeypatch.setattr(hw, "cpu_info", lambda: CpuInfo("AVX2", ()))
    hw._bf16_warned.cache_clear()
    assert hw.warn_slow_bf16("bfloat16") and hw.warn_slow_bf16(torch.bfloat16)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "float32" in err and "AVX2" in err
    assert not hw.warn_slow_bf16("float32") and not hw.warn_slow_bf16("bfloat16", "cuda")
    hw._bf16_warned.cache_clear()


def test_train_help_says_what_this_machine_chose(capsys):
    from tabes.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    precision, _ = hw.choose_precision("cpu")
    assert f"(here: {precision}," in out and "@PRECISION@" not in out and "@COMPILE@" not in out
