"""Regenerate docs/img/report.png: a headless-Chromium screenshot of a run's report.

    .venv/bin/python tests/product/screenshot_report.py RUN [docs/img/report.png]

RUN should be a real run (e.g. ``demo-run/run`` from ``make demo``); the report is rendered from
its artefacts first. Not a test (no ``test_`` prefix); it needs Debian's chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from product_helpers import CHROMIUM, CHROMIUM_ARGS


def screenshot(run: Path, out: Path, width: int = 1280, height: int = 1500) -> Path:
    from playwright.sync_api import sync_playwright

    from glance.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        html = write_report(run, Path(tmp) / "report.html")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(html.as_uri())
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    return out


if __name__ == "__main__":
    run = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/img/report.png")
    print(screenshot(run, out))
