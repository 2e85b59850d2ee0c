from __future__ import annotations

import io
import sys

from tabes.progress import progress_bar


def test_plain_lines_without_escape_codes_when_not_a_terminal(monkeypatch):
    err = io.StringIO()  # not a tty
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress_bar(10, "solving", "puzzle", every_s=0.0)
    for _ in range(4):
        bar.update(2.5)  # fractional updates, e.g. a batch advancing step by step
    bar.close()
    text = err.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("solving: 10/10 puzzle (100%)") and lines[0].startswith("solving: 2/10 puzzle")


def test_line_progress_is_rate_limited(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar(100, "x", every_s=3600) as bar:
        for _ in range(100):
            bar.update(1)
    assert err.getvalue().count("\n") == 1  # only the final line


def test_decode_puzzles_reports_progress_across_batches(tiny_sudoku_model):
    from tabes.tasks import sudoku
    from tests.conftest import PUZZLES

    seen: list[float] = []
    sudoku.decode_puzzles(
        tiny_sudoku_model, [sudoku.parse_puzzle(p) for p in PUZZLES * 3], sampler="confidence", steps=9, batch_size=4, progress=seen.append
    )
    assert len(seen) > 2 * 9 - 2  # step by step, not once per batch
    assert abs(sum(seen) - 6) < 1e-9 and abs(sum(seen[: len(seen) // 2]) - 6) > 0.1
