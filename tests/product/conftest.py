"""Fixtures of the product tests (helpers in product_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from product_helpers import CHROMIUM, CHROMIUM_ARGS, chromium_available, make_fixture_run


@pytest.fixture
def fixture_run(tmp_path: Path) -> Path:
    """A complete fixture run directory."""
    return make_fixture_run(tmp_path / "run")


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by playwright; skips with the reason when missing."""
    if not chromium_available():
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the 'playwright' Python package (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
