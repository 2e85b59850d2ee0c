"""``tabes bench train``: training throughput of the shipped Sudoku architecture, per setting.

Every setting trains its own copy of the shipped architecture (the shipped model's
``config.json``) from the same random initialisation, on the *same* batches,
for ``steps`` steps. The settings are interleaved step by step in one process, so a noisy
machine slows them alike. Settings:

- ``baseline``: the trainer before this benchmark existed: float32, eager, PyTorch's
  ``scaled_dot_product_attention`` for the dense attention, the unfused AdamW;
- ``bf16-sdpa``: bfloat16 autocast (float32 master weights), eager, PyTorch's attention;
- ``bf16``: the same with the explicit attention of :func:`tabes.ops.aqa.dense_attention`;
- ``fp32``: float32, eager, explicit attention;
- ``fp32-compile``: float32, ``torch.compile``, explicit attention;
- ``default``: what ``tabes train`` uses on this machine: :class:`tabes.train.TrainConfig`'s
  defaults, with precision and compilation decided by :func:`tabes.train.resolve_speed`.

Every setting but ``baseline`` uses the fused AdamW. Every row carries ``cpu``, the CPU
capability (``torch.backends.cpu.get_cpu_capability()`` and whether it has native bf16), and
``why``, the reason for the default's choice. The default setting list leaves out the bf16
settings on a CPU without native bf16, where one bf16 step can take minutes.

A step is the whole optimisation step as the trainer runs it (batch sampling and masking,
forward, loss, backward, clipping, AdamW). ``samples_per_s`` uses the median step time after
``warmup`` steps (compilation happens in the first step); ``loss_first`` and ``loss_last`` are
the mean losses of the first and last ``window`` steps; ``losses`` holds the whole curve.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from tabes.hardware import cpu_info
from tabes.loading import default_model_path
from tabes.models.mdm import MDM, read_config
from tabes.ops.aqa import kernels
from tabes.tasks import sudoku
from tabes.train import TrainConfig, TrainStep, hard_flags, make_batch, make_optimizer, resolve_speed, sample_indices


@dataclass(frozen=True)
class Setting:
    """One training configuration of the benchmark (``precision="auto"``, ``compile=None``: decided
    by the machine, as ``tabes train`` decides them)."""

    name: str
    precision: str
    compile: bool | None
    kernel: str = "explicit"
    fused_adam: bool = True


SETTINGS = {
    s.name: s
    for s in (
        Setting("baseline", "fp32", False, "sdpa", fused_adam=False),
        Setting("bf16-sdpa", "bf16", False, "sdpa"),
        Setting("bf16", "bf16", False),
        Setting("fp32", "fp32", False),
        Setting("fp32-compile", "fp32", True),
        Setting("default", TrainConfig.precision, TrainConfig.compile),
    )
}


def default_settings() -> list[str]:
    """``baseline`` and ``default``, plus ``bf16`` where the CPU has native bf16 (or may have it)."""
    return ["baseline", "default"] if cpu_info().bf16_native is False else ["baseline", "bf16", "default"]


def run_train_bench(
    settings: list[str],
    *,
    steps: int = 60,
    batch_size: int = 128,
    pool: int | None = None,
    warmup: int = 5,
    window: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Train one model per setting side by side; one result row per setting (see the module docstring)."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(SETTINGS)}")
    if steps <= warmup:
        raise ValueError(f"steps ({steps}) must exceed the {warmup} warm-up steps")
    window = min(window, steps)
    pool = pool or min(2000, max(64, steps * batch_size // 4))  # generated puzzles the batches draw from
    puzzles, solutions = sudoku.generate_pool(pool, seed=seed, workers=1)
    hard = hard_flags(puzzles, solutions, TrainConfig.hard_min_blanks)
    arch = read_config(default_model_path("sudoku"))  # the shipped architecture
    runs = []
    for name in settings:
        s = SETTINGS[name]
        precision, compile, why = resolve_speed(s.precision, s.compile)
        s = replace(s, precision=precision, compile=compile)
        torch.manual_seed(seed)
        model = MDM(arch).train()
        step = TrainStep(model, make_optimizer(model, 1e-3, 0.01, fused=s.fused_adam), precision=precision, compile=compile)
        runs.append((s, step, [], [], why))
    rng = np.random.default_rng(seed)
    bar = None
    if progress:
        from tabes.progress import progress_bar

        bar = progress_bar(steps, "bench train", "step")
    for _i in range(steps):
        idx = sample_indices(hard, batch_size, TrainConfig.hard_frac, rng)
        batch_rng_state = rng.bit_generator.state
        for s, step, times, losses, _ in runs:
            rng.bit_generator.state = batch_rng_state  # the same masks for every setting
            t0 = time.perf_counter()
            with kernels(dense=s.kernel):
                losses.append(step(*make_batch(puzzles[idx], solutions[idx], TrainConfig.p_full_grid, rng, TrainConfig.closure_frac)))
            times.append(time.perf_counter() - t0)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    rows = []
    cpu = cpu_info().describe()  # the benchmark trains on the CPU
    for s, _, times, losses, why in runs:
        per_step = statistics.median(times[warmup:])
        rows.append(
            {
                "setting": s.name,
                "precision": s.precision,
                "compile": s.compile,
                "attention": s.kernel,
                "fused_adam": s.fused_adam,
                "cpu": cpu,
                "why": why,
                "samples_per_s": round(batch_size / per_step, 1),
                "loss_first": round(float(np.mean(losses[:window])), 4),
                "loss_last": round(float(np.mean(losses[-window:])), 4),
                "steps": steps,
                "batch_size": batch_size,
                "threads": torch.get_num_threads(),
                "losses": [round(x, 4) for x in losses],
            }
        )
    base = next((r for r in rows if r["setting"] == "baseline"), None)
    for r in rows:
        r["speedup"] = round(r["samples_per_s"] / base["samples_per_s"], 2) if base else None
    return rows


def loss_curve_png(rows: list[dict], path: str, smooth: int = 20) -> None:
    """Running-mean loss per step for every setting, one line each."""
    from tabes.bench.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        x = np.asarray(r["losses"])
        k = min(smooth, len(x))
        y = np.convolve(x, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k, len(x) + 1), y, label=f"{r['setting']} ({r['samples_per_s']:.0f} samples/s)")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (running mean of {smooth})")
    ax.set_title(f"Shipped Sudoku architecture, batch {rows[0]['batch_size']}, same batches per setting")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(plt, fig, path)
