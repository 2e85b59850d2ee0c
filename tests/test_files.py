from __future__ import annotations

import pytest

from tabes.files import atomic_path, atomic_write_text, check_output_dir, check_output_file


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    f = tmp_path / "report.md"
    atomic_write_text(f, "good")
    with pytest.raises(RuntimeError), atomic_path(f) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-way")
    assert f.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png"  # writers that infer the format from the suffix still work
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_output_checks(tmp_path, monkeypatch):
    assert check_output_file(tmp_path / "a.jsonl") == tmp_path / "a.jsonl"
    with pytest.raises(ValueError, match="is a directory"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(ValueError, match="does not exist"):
        check_output_file(tmp_path / "no" / "a.jsonl", "--out")
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(ValueError, match="parent folder"):
        check_output_dir(tmp_path / "no" / "run")
    assert check_output_dir(tmp_path / "run").is_dir()
    import os

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ValueError, match="no permission"):
        check_output_file(tmp_path / "b.jsonl", "--out")


def test_output_dir_made_by_another_process_meanwhile_is_fine(tmp_path, monkeypatch):
    """Several ranks check the same --out at once: a folder that another rank creates between
    this rank's look and its mkdir is not an error."""
    from pathlib import Path

    target = tmp_path / "run"
    target.mkdir()  # the other rank won the race ...
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == target else real_exists(self))  # ... after our look
    assert check_output_dir(target).is_dir()
