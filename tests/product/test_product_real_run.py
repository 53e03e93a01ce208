"""Report, explorer and artefact checks on a real fitted run (every area's public API).

Marked ``slow``: building the run (data, classifier, tiny fit, graph, explanations, evaluation)
takes about 40 s of CPU. ``make test`` skips it; ``make test-all`` and
``pytest -m slow tests/product`` run it.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from pathlib import Path

import pytest
from real_run import make_real_run, metrics_of

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A fresh real run; GLANCE_TEST_REAL_RUN=DIR/run reuses one made by real_run.make_real_run
    (for iterating on these tests; the tests only read it, except copies they tamper with)."""
    reuse = os.environ.get("GLANCE_TEST_REAL_RUN")
    if reuse:
        return Path(reuse)
    return make_real_run(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def real_backend(real_run: Path):
    from glance.serve import ExplorerBackend

    return ExplorerBackend.from_run(real_run, n_images=16)


@pytest.fixture(scope="module")
def real_server(real_backend):
    from glance.serve import make_server

    server = make_server(real_backend, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_report_of_a_real_run_shows_its_measured_figures(real_run: Path) -> None:
    from test_product_report import SECTIONS, _parse

    from glance.report import render_report

    html = render_report(real_run)
    doc = _parse(html)
    assert set(SECTIONS) <= doc.ids
    metrics = metrics_of(real_run)
    for key in ("fidelity", "reconstruction_fidelity", "sampled_fidelity"):
        assert doc.rows[key]["value"] == f"{metrics[key]:.4g}"
    for ctx, value in metrics["alignment_r2"].items():
        shown = doc.rows[f"alignment_r2.{ctx}"]["value"]
        assert shown == ("not computed" if value is None else f"{value:.4g}")
    assert all(u.startswith("data:image/") for u in doc.urls)
    # graph picture + drawing, the explained digits' pictures, reconstructions and samples
    assert "graph/graph.png" in html and 'class="chart graph"' in html
    assert html.count('class="explanation"') == 2
    assert len(doc.imgs) >= 1 + 2 + 2


def test_glance_load_refuses_a_tampered_run(real_run: Path, tmp_path: Path) -> None:
    import shutil

    import glance
    from glance.exceptions import CheckpointCorruptError

    copy = tmp_path / "copy"
    shutil.copytree(real_run, copy)
    weights = copy / "model" / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="generator.safetensors: sha256 mismatch"):
        glance.load(copy)
    from glance.cli.main import main

    assert main(["serve", str(copy), "--port", "0"]) == 3
    assert main(["report", str(copy)]) == 3


def test_real_backend_propagates_through_the_scm(real_backend, real_run: Path) -> None:
    graph = json.loads((real_run / "graph" / "graph.json").read_text())
    info = real_backend.info()
    assert info["propagates"] is True
    assert info["n_images"] == 16 and info["image_shape"] == [1, 28, 28]
    children = {e["target"] for e in graph["edges"] if e["source"] == "area" and e["directed"]}
    # Interventions are clipped to the node's support, which the explorer gives as slider bounds.
    (area,) = [n for n in info["nodes"] if n["name"] == "area"]
    beyond = real_backend.counterfactual("0", {"area": area["max"] + 5.0})
    assert beyond["nodes"]["area"] == pytest.approx(area["max"], abs=1e-4)
    value = 0.5 * (area["min"] + area["max"]) + 0.4 * (area["max"] - area["min"])
    r = real_backend.counterfactual("0", {"area": value})
    assert r["nodes"]["area"] == pytest.approx(value, abs=1e-4)
    assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    concept_children = children & set(real_backend.nodes)
    if concept_children:  # descendants among the concept dims move with the intervention
        assert concept_children & set(r["changed"])
    # a node the intervention does not reach stays at its factual value
    non_desc = [n for n in real_backend.nodes if n not in r["changed"] and n != "area"]
    for n in non_desc:
        assert r["nodes"][n] == pytest.approx(r["factual"][n], abs=1e-5)


@pytest.mark.browser
def test_explorer_on_a_real_run_in_chromium(real_server: str, browser) -> None:
    from test_product_serve_browser import _move, _state, _wait

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(real_server + "/")
    page.wait_for_selector("body[data-ready='1']")
    _wait(page, "window.glanceExplorer.requests >= 1")
    before = _state(page, "area")
    _move(page, "area", 2.5)
    _wait(page, "window.glanceExplorer.requests >= 2")
    after = _state(page, "area")
    assert after["src"] != before["src"] and after["probs"] != before["probs"]
    t0 = time.perf_counter()
    for i in range(20):
        _move(page, "intensity", -2 + 0.2 * i)
        _wait(page, f"window.glanceExplorer.requests >= {3 + i}")
    wall = (time.perf_counter() - t0) / 20
    lat = page.evaluate("window.glanceExplorer.latencies")[2:]
    log.warning(
        "explorer slider round trip on a real tiny run (28x28 digits, %d moves): median %.1f ms, "
        "max %.1f ms (browser-measured); %.1f ms per move including the test's polling",
        len(lat),
        statistics.median(lat),
        max(lat),
        1e3 * wall,
    )
    assert errors == []
    page.close()


def test_glance_serve_command_serves_the_run(real_run: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "glance.cli.main", "serve", str(real_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()  # "glance explorer on http://127.0.0.1:PORT/ ..."
        assert line.startswith("glance explorer on http://127.0.0.1:"), line
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/info", timeout=60) as r:
            info = json.loads(r.read())
        assert info["propagates"] is True
        assert [n["name"] for n in info["nodes"]][:2] == ["area", "intensity"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.browser
def test_every_node_of_the_explanations_links_to_its_atlas_entry(
    real_run: Path, tmp_path: Path, browser
) -> None:
    from glance.report import write_report

    out = write_report(real_run, tmp_path / "report.html")
    page = browser.new_page()
    page.goto(out.as_uri())
    atlas = json.loads((real_run / "atlas" / "atlas.json").read_text())
    nodes = [e["node"] for e in atlas["nodes"]]
    for node in nodes:  # an entry with a strip and a description for every node
        entry = page.locator(f'#concept-atlas article.atlas-entry[data-node="{node}"]')
        assert entry.count() == 1
        assert entry.locator("p.description").inner_text().strip()
        assert entry.locator("img").evaluate("e => e.complete && e.naturalWidth") > 0
    explained = json.loads((real_run / "explanations" / "explanations.json").read_text())
    for i, _ in enumerate(explained["explanations"]):
        article = page.locator(f"article#image-{i}")
        for node in explained["nodes"]:  # every node name in the importance chart links
            link = article.locator(f'svg.bar-chart a.node-link:has(text:text-is("{node}"))')
            assert link.count() == 1, node
            href = link.get_attribute("href")
            assert page.locator(href).count() == 1 and href == f"#atlas-{node}"
    first = page.locator("article#image-0 svg.bar-chart a.node-link").first
    first.click()  # following it shows the entry
    target = first.get_attribute("href")
    page.wait_for_function("h => location.hash === h", arg=target)
    assert page.locator(target).is_visible()
    # the readable graph and its sentence by default, the full graph one click away
    assert page.locator("#graph-story").is_visible()
    assert page.locator("figure.graph-readable svg").is_visible()
    assert not page.locator("#full-graph svg.graph").is_visible()
    page.locator("#full-graph summary").click()
    assert page.locator("#full-graph svg.graph").is_visible()
    page.close()
