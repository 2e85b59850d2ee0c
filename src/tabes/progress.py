"""Progress reporting that suits both a terminal and a log file.

On a terminal, :func:`progress_bar` is a tqdm bar. When stderr is not a terminal (a log file,
CI, ``nohup``) it prints plain lines instead: at most one every ``every_s`` seconds plus the
final one, with no carriage returns or cursor escape codes. Both count fractional updates
(a batch advancing step by step) and show whole numbers.
"""

from __future__ import annotations

import sys
import time


class _LineProgress:
    """A tqdm-like counter that prints plain progress lines to stderr."""

    def __init__(self, total: float, desc: str, unit: str, every_s: float) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0.0
        self._start = self._last = time.perf_counter()
        self._closed = False

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n:.0f}/{self.total:.0f} {self.unit}{pct}, {elapsed:.0f} s"

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            print(self._line(), file=sys.stderr, flush=True)

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **kwargs) -> None:  # tqdm compatibility; shown at the next line
        self.desc = self.desc.split(" [")[0] + " [" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + "]"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line(), file=sys.stderr, flush=True)

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: float, desc: str, unit: str = "it", *, disable: bool = False, initial: float = 0, every_s: float = 30.0):
    """A progress counter with ``update(n)``, ``set_description``, ``set_postfix`` and ``close``
    (also a context manager): tqdm on a terminal, plain lines otherwise (see the module docstring)."""
    if disable:
        from tqdm import tqdm

        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        from tqdm import tqdm

        fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]"
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, bar_format=fmt, dynamic_ncols=True)
    bar = _LineProgress(total, desc, unit, every_s)
    bar.n = float(initial)
    return bar
