"""What this machine does fast: bf16 and ``torch.compile`` chosen by the hardware, not by habit.

On a CPU, bfloat16 is fast only with native instructions (AVX512-BF16 or AMX on x86, the BF16
extension on Arm). Without them PyTorch emulates it: on an AVX2-only CPU a bfloat16 matmul ran
about 440x slower than float32, and on an AVX512 CPU without BF16 about 5x slower (measured,
``docs/training.md``). So a default of "bf16 autocast" is right on one machine and ruinous on
the next. This module decides once per process:

- :func:`cpu_info`: ``torch.backends.cpu.get_cpu_capability()`` and the bf16 flags the kernel
  reports (``/proc/cpuinfo``; unknown elsewhere);
- :func:`bf16_speedup`: a short measured check (a float32 and a bfloat16 matmul under autocast,
  median of a few repeats, about 0.1 s), used where the flags cannot tell;
- :func:`choose_precision` and :func:`choose_compile`: the defaults of the trainer, each with a
  one-line reason for the log;
- :func:`warn_slow_bf16`: one line on stderr when a user asks for bf16 weights on a CPU without
  native bf16.

Every answer is cached for the process (``functools.cache``).
"""

from __future__ import annotations

import functools
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# bf16 autocast must beat float32 by this much on the measured matmul to be chosen: autocast also
# pays for casts and for float32 reductions, so a tie on a matmul is a loss on a training step
BF16_MIN_SPEEDUP = 1.5


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU offers.

    Attributes:
        capability: ``torch.backends.cpu.get_cpu_capability()``, e.g. ``"AVX2"``, ``"AVX512"``.
        bf16_flags: the native-bf16 instruction flags the OS reports (``avx512_bf16``,
            ``amx_bf16``, Arm ``bf16``), or None where the flags cannot be read.
    """

    capability: str
    bf16_flags: tuple[str, ...] | None

    @property
    def bf16_native(self) -> bool | None:
        """True/False where the flags tell, None where they cannot be read."""
        return None if self.bf16_flags is None else bool(self.bf16_flags)

    def describe(self) -> str:
        """One short label for tables and logs, e.g. ``"AVX512 (no native bf16)"``."""
        native = {True: "native bf16", False: "no native bf16", None: "bf16 support unknown"}[self.bf16_native]
        return f"{self.capability} ({native})"


def _cpu_flags() -> set[str] | None:
    """The CPU flags of ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm), or None."""
    path = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not path.is_file():
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


@functools.cache
def cpu_info() -> CpuInfo:
    """The CPU's vector capability and native-bf16 flags (cached for the process)."""
    flags = _cpu_flags()
    bf16 = None if flags is None else tuple(sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"}))
    return CpuInfo(capability=torch.backends.cpu.get_cpu_capability(), bf16_flags=bf16)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, first-touch allocation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@functools.cache
def bf16_speedup(size: int = 256, repeats: int = 5) -> float:
    """Measured float32 time over bfloat16-autocast time of a (size x size) matmul on the CPU.

    Above 1 means bf16 is faster here. About 0.1 s on a machine with native bf16; on an
    AVX2-only machine the bf16 side is slow, so the matrix is kept small. Cached for the process.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)

    def fp32() -> None:
        for _ in range(4):
            a @ b

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in range(4):
                a @ b

    return _median_seconds(fp32, repeats) / _median_seconds(bf16, repeats)


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


@functools.cache
def _choose_precision(device_type: str) -> tuple[str, str]:
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16", "the GPU supports bfloat16"
        return "fp32", "the GPU has no bfloat16 support"
    if device_type != "cpu":
        return "fp32", f"no bf16 check for device type {device_type!r}"
    info = cpu_info()
    if info.bf16_native is False:
        return "fp32", f"CPU {info.capability} has no native bf16 instructions, so bf16 is emulated and slow"
    speedup = bf16_speedup()
    src = "native bf16" if info.bf16_native else "bf16 flags unknown"
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"CPU {info.capability} ({src}): a bf16 matmul measured {speedup:.1f}x float32"
    return "fp32", f"CPU {info.capability} ({src}): a bf16 matmul measured only {speedup:.2f}x float32 (needs {BF16_MIN_SPEEDUP}x)"


def choose_precision(device: str | torch.device = "cpu") -> tuple[str, str]:
    """The training precision for ``device``: ``("bf16" | "fp32", reason)``.

    CUDA: bf16 where the GPU supports it. CPU: float32 when the flags say there is no native
    bf16; otherwise bf16 autocast only when :func:`bf16_speedup` measures at least
    ``BF16_MIN_SPEEDUP``. Cached per device type.
    """
    return _choose_precision(_device_type(device))


@functools.cache
def _choose_compile(device_type: str, precision: str) -> tuple[bool, str]:
    if device_type == "cuda":
        return True, "torch.compile fuses the step's element-wise work on the GPU"
    if device_type != "cpu":
        return False, f"no torch.compile check for device type {device_type!r}"
    info = cpu_info()
    if precision == "bf16":
        return True, f"CPU {info.capability} with bf16 autocast: torch.compile measured 1.24x eager bf16 (docs/training.md)"
    return False, f"CPU {info.capability} in float32: torch.compile measured 0.80x eager float32 (docs/training.md)"


def choose_compile(device: str | torch.device = "cpu", precision: str = "fp32") -> tuple[bool, str]:
    """Whether to ``torch.compile`` the training step: ``(bool, reason)``.

    Compilation costs tens of seconds up front and pays per step only where the measured
    training benchmark (``tabes bench train``, ``docs/training.md``) showed it: on CUDA, and on
    a CPU training in bf16 (1.24x). In float32 on a CPU the compiled step was slower (0.80x),
    so it stays off.
    """
    return _choose_compile(_device_type(device), precision)


@functools.cache
def _bf16_warned(device_type: str) -> bool:
    info = cpu_info()
    print(
        f"tabes: warning: bfloat16 on this CPU ({info.describe()}) runs emulated and can be 5-400x slower than float32; "
        "use --dtype float32 (the default) on this machine",
        file=sys.stderr,
    )
    return True


def warn_slow_bf16(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> bool:
    """Print one line (once per process) when ``dtype`` is bfloat16 on a CPU without native bf16.

    Returns True when the warning applies (printed now or earlier).
    """
    if dtype not in ("bfloat16", torch.bfloat16) or _device_type(device) != "cpu":
        return False
    if cpu_info().bf16_native is not False and bf16_speedup() >= 1.0:
        return False
    return _bf16_warned("cpu")
