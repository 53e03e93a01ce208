"""The report opened in a real headless Chromium: visible sections, pictures, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from glance.report import write_report

pytestmark = pytest.mark.browser


def test_report_renders_offline_in_chromium(fixture_run: Path, tmp_path: Path, browser) -> None:
    out = write_report(fixture_run, tmp_path / "report.html")
    page = browser.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_load_state("load")

    headings = page.locator("h2").all_inner_texts()
    for name in [
        "Faithfulness",
        "Causal graph",
        "Global importance",
        "Local explanations",
        "Interactions",
        "Surrogate pictures",
        "Config and versions",
    ]:
        assert name in headings
    for sid in ["faithfulness", "causal-graph", "local-explanations"]:
        assert page.locator(f"#{sid}").is_visible()

    rows = page.locator("table.metrics tbody tr")
    assert rows.count() >= 10
    fid = page.locator('tr[data-metric="fidelity"] td.value')
    assert fid.inner_text() == "0.981"
    # coloured against the threshold: green background for a pass, red for a fail
    assert fid.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(26, 150, 65)"
    sampled = page.locator('tr[data-metric="sampled_fidelity"] td.value')
    assert sampled.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(192, 40, 45)"

    imgs = page.locator("img")
    assert imgs.count() == 12
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
    assert all(w and w > 0 for w in widths), widths
    # the readable picture and its sentence by default; the full graph (7 nodes) one click away
    assert page.locator("figure.graph-readable svg.graph").is_visible()
    assert 0 < page.locator("figure.graph-readable svg.graph g.node").count() <= 7
    assert page.locator("#graph-story").is_visible()
    full = page.locator("#full-graph svg.graph")
    assert not full.is_visible() and full.locator("g.node").count() == 7
    page.locator("#full-graph summary").click()
    assert full.is_visible()
    assert page.locator("article.explanation").count() == 3
    assert page.locator("#interactions svg rect.cell").count() > 0

    assert errors == []
    outside = [u for u in requests if not (u.startswith("data:") or u == out.as_uri())]
    assert outside == []
    page.close()


def test_low_fidelity_banner_is_visible(tmp_path: Path, browser) -> None:
    from product_helpers import make_fixture_run

    run = make_fixture_run(tmp_path / "run", fidelity=0.8)
    out = write_report(run)
    page = browser.new_page()
    page.goto(out.as_uri())
    banner = page.locator("#low-fidelity")
    assert banner.is_visible()
    assert "LOW FIDELITY" in banner.inner_text()
    assert "80.0%" in banner.inner_text()
    page.close()
