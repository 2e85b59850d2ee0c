"""One live ``tabes serve --model text-demo`` for the module tests of this folder."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")

import tabes  # noqa: E402
from tabes.serve.process import LiveServer  # noqa: E402

GEN = 24  # default tokens per completion, as many steps: small enough for a fast suite


@pytest.fixture(scope="session")
def server():
    srv = LiveServer("--model", "text-demo", "--steps", str(GEN), "--gen-length", str(GEN), "--batch-window-ms", "50")
    yield srv
    code = srv.stop()
    log = srv.log()
    assert code == 0, log
    assert "Traceback" not in log, log  # no request, good or bad, leaves a traceback


@pytest.fixture(scope="session")
def text_demo():
    return tabes.load("text-demo")
