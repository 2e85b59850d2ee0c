"""The live page at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright): the
canvas fills, every token is coloured by the step that committed it, and BoE draws a TIS strip per step."""

from __future__ import annotations

import os
import shutil
import urllib.parse

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM or not shutil.which("playwright"):
    if os.environ.get("CI"):  # CI installs both (.ci/run): there this check must run
        raise RuntimeError("the page test needs chromium (apt-get install chromium) and playwright (the dev extra)")
    pytest.skip("needs chromium (apt-get install chromium) and playwright (the dev extra)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402


def open_page(url: str, shot: str | None = None) -> dict:
    """Load ``url`` in headless Chromium, wait for the decode to finish; what the page shows."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 600})
            page.goto(url)
            page.wait_for_selector("body[data-done='1']", timeout=60_000)
            if shot:
                page.screenshot(path=shot, full_page=True)
            return {
                "cells": page.locator(".tok").count(),
                "done": page.locator(".tok.done").count(),
                "steps": page.eval_on_selector_all(".tok.done", "els => els.map(e => +e.dataset.step)"),
                "colours": page.eval_on_selector_all(".tok.done", "els => els.map(e => e.style.background)"),
                "strips": page.locator(".strip").count(),
                "status": page.inner_text("#status"),
                "answer": page.inner_text("#answer"),
                "samplers": page.eval_on_selector_all("#sampler option", "els => els.map(e => e.value)"),
            }
        finally:
            browser.close()


def test_page_shows_the_denoising_live(server, text_demo, tmp_path):
    from tabes.tasks.text import generate_text

    prompt = "Question: Mia has 12 shells. She finds 9 more. How many shells does Mia have now?\nAnswer:"
    shot = str(tmp_path / "page.png")
    seen = open_page(
        server.url + "/?" + urllib.parse.urlencode({"autorun": 1, "sampler": "boe", "steps": 8, "tokens": 16, "prompt": prompt}), shot
    )
    assert seen["cells"] == seen["done"] == 16  # every position filled
    assert sorted(set(seen["steps"])) == list(range(8))  # coloured by the step that committed it
    assert len(set(seen["colours"])) == 8
    assert seen["strips"] >= 4  # a TIS strip for every step BoE scored candidates
    assert seen["status"].startswith("done: 8 steps")
    assert seen["answer"] == generate_text(text_demo, [prompt], gen_length=16, steps=8, sampler="boe").texts[0]
    assert "confidence" in seen["samplers"] and "boe" in seen["samplers"]
    with open(shot, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
