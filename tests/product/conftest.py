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


@pytest.fixture
def toy_server():
    """The explorer on the toy world, served on a free loopback port; yields its base URL."""
    import threading

    from product_helpers import toy_backend

    from glance.serve import make_server

    server = make_server(toy_backend(max_upload_bytes=20_000), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
