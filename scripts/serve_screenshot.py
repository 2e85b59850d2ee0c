"""Draw docs/serve_page.png: the live page of ``tabes serve --model text-demo`` after a BoE decode.

    python scripts/serve_screenshot.py [--out docs/serve_page.png]

Needs the serve and dev extras and Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import urllib.parse

from playwright.sync_api import sync_playwright

from tabes.serve.process import LiveServer

PROMPT = "Question: Leo has 56 stickers. He loses 6. Sam gives Leo 4 more. How many stickers does Leo have now?\nAnswer:"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/serve_page.png")
    args = ap.parse_args()
    srv = LiveServer("--model", "text-demo")
    try:
        query = urllib.parse.urlencode({"autorun": 1, "sampler": "boe", "steps": 16, "tokens": 32, "prompt": PROMPT})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 600})
            page.goto(f"{srv.url}/?{query}")
            page.wait_for_selector("body[data-done='1']", timeout=120_000)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        srv.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
