"""The explorer: backend maths on the analytic toy world, and the JSON HTTP API."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from product_helpers import png_bytes, toy_backend

from glance.cli.main import build_parser
from glance.explain.toy import render
from glance.serve import UploadError, is_loopback


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _post(url: str, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


# ---------------------------------------------------------------- backend
def test_intervention_propagates_to_descendants_only() -> None:
    b = toy_backend()
    r = b.counterfactual("0", {"size": 2.0})
    # toy SCM: brightness = 0.8 * size + noise; concept_0 independent
    d_size = 2.0 - r["factual"]["size"]
    assert r["nodes"]["size"] == pytest.approx(2.0)
    assert r["changed"]["brightness"] == pytest.approx(0.8 * d_size, rel=1e-4)
    assert "concept_0" not in r["changed"]
    assert r["nodes"]["concept_0"] == pytest.approx(r["factual"]["concept_0"])
    assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_counterfactual_image_is_the_generator_on_the_new_concepts() -> None:
    b = toy_backend()
    r = b.counterfactual("3", {"size": -1.5, "concept_0": 1.0})
    z = torch.tensor([[r["nodes"][n] for n in ("size", "brightness", "concept_0")]])
    expected = (render(z)[0, 0].numpy() * 255 + 0.5).astype(np.uint8)
    got = _decode(r["image"])
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_size_decides_the_toy_classifier() -> None:
    b = toy_backend()
    big = b.counterfactual("0", {"size": 2.5})
    small = b.counterfactual("0", {"size": -2.5})
    assert big["prediction"] == 1 and small["prediction"] == 0
    assert big["probabilities"][1] > 0.9 > small["probabilities"][1]


def test_no_intervention_gives_the_reconstruction() -> None:
    r = toy_backend().counterfactual("1", {})
    assert r["changed"] == {}
    assert r["probabilities"] == pytest.approx(r["factual_probabilities"])


@pytest.mark.parametrize(
    ("interventions", "match"),
    [
        ({"nope": 1.0}, "unknown node 'nope'"),
        ({"size": "big"}, "must be a number"),
        ({"size": 1e9}, "within"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_interventions_are_named(interventions, match) -> None:
    with pytest.raises(UploadError, match=match):
        toy_backend().counterfactual("0", interventions)


def test_uploads_of_another_size_are_fitted_to_the_model() -> None:
    """A user's photo is rarely the model's size: centre-cropped to its aspect ratio, resized,
    and the size it came in is reported."""
    from PIL import Image

    b = toy_backend(max_upload_bytes=200_000)
    # 48x32: a bright square in the middle third, dark bands left and right (cropped away).
    arr = np.zeros((32, 48), dtype=np.uint8)
    arr[:, 8:40] = 60
    arr[8:24, 16:32] = 250
    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(buf, format="PNG")
    image_id = b.add_upload(buf.getvalue())
    info = b.upload_info(image_id)
    assert info == {"image_id": image_id, "size": [16, 16], "resized_from": [48, 32]}
    img = b._image(image_id)
    assert tuple(img.shape) == tuple(b.image_shape)
    px = img.mean(0).numpy() * 255
    # the centre is the bright square, the corners the grey of the crop (no dark band left)
    assert px[6:10, 6:10].mean() > 200
    assert 40 < px[0, 0] < 90 and 40 < px[-1, -1] < 90
    # a counterfactual runs on it like on any picker image
    assert b.counterfactual(image_id, {"size": 1.0})["nodes"]["size"] == pytest.approx(1.0)


def test_a_jpeg_with_an_exif_orientation_is_turned_upright() -> None:
    """A phone stores a portrait photo's pixels sideways with an EXIF orientation tag; the
    classifier must see it the way its owner does."""
    from PIL import Image

    # Stored pixels: 24 wide x 16 high, bright on the left third. Orientation 6 means "rotate
    # 90° clockwise to view": upright, it is 16 wide x 24 high, bright on the top third.
    stored = np.full((16, 24), 30, dtype=np.uint8)
    stored[:, :8] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif)
    b = toy_backend(max_upload_bytes=200_000)
    image_id = b.add_upload(buf.getvalue())
    assert b.upload_info(image_id)["resized_from"] == [16, 24]  # the upright size
    px = b._image(image_id).mean(0).numpy() * 255  # 16x16: the centre 16x16 of the upright
    # The upright picture's bright band is its top 8 of 24 rows; the centre crop keeps rows
    # 4..19, so the top 4 rows of the fitted image are bright and the rest dark.
    assert px[:3].mean() > 180 and px[6:].mean() < 80


def test_unknown_image_id() -> None:
    with pytest.raises(UploadError, match="unknown image_id '99'") as info:
        toy_backend(n_images=4).counterfactual("99", {})
    assert info.value.status == 404


def test_uploads_are_validated() -> None:
    b = toy_backend(max_upload_bytes=2000)
    image_id = b.add_upload(png_bytes(16, 16, 0))
    assert image_id.startswith("upload-")
    assert b.counterfactual(image_id, {"size": 1.0})["nodes"]["size"] == pytest.approx(1.0)
    assert b.upload_info(image_id)["resized_from"] is None
    with pytest.raises(UploadError, match="not a PNG or JPEG") as e:
        b.add_upload(b"GIF89a" + b"\0" * 50)
    assert e.value.status == 415
    with pytest.raises(UploadError, match="too large") as e:
        b.add_upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 3000)
    assert e.value.status == 413
    with pytest.raises(UploadError, match="not a readable image") as e:
        b.add_upload(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert e.value.status == 415


# ---------------------------------------------------------------- HTTP API
def test_api_info_images_and_page(toy_server: str) -> None:
    status, body, ctype = _get(toy_server + "/api/info")
    info = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert [n["name"] for n in info["nodes"]] == ["size", "brightness", "concept_0"]
    assert info["classes"] == ["0", "1"] and info["image_shape"] == [1, 16, 16]
    assert "<svg" in info["graph_svg"]
    status, body, _ = _get(toy_server + "/api/images")
    assert status == 200 and len(json.loads(body)["images"]) == 12
    status, body, ctype = _get(toy_server + "/api/images/0.png")
    assert status == 200 and ctype == "image/png" and body.startswith(b"\x89PNG")
    status, body, ctype = _get(toy_server + "/")
    assert status == 200 and b"glance explorer" in body and ctype.startswith("text/html")
    for asset in ("/static/app.js", "/static/app.css"):
        assert _get(toy_server + asset)[0] == 200


def test_api_counterfactual(toy_server: str) -> None:
    status, r = _post(
        toy_server + "/api/counterfactual", {"image_id": "0", "interventions": {"size": 2.0}}
    )
    assert status == 200
    assert r["image_id"] == "0" and r["prediction"] == 1
    assert set(r["nodes"]) == {"size", "brightness", "concept_0"}
    assert _decode(r["image"]).shape == (16, 16)


def test_api_upload_then_counterfactual(toy_server: str) -> None:
    b64 = base64.b64encode(png_bytes(16, 16, 5)).decode()
    status, r = _post(toy_server + "/api/upload", {"image": "data:image/png;base64," + b64})
    assert status == 200 and r["image_id"].startswith("upload-")
    status, r2 = _post(
        toy_server + "/api/counterfactual",
        {"image_id": r["image_id"], "interventions": {"size": -1}},
    )
    assert status == 200 and r2["nodes"]["size"] == pytest.approx(-1.0)
    status, r3 = _post(toy_server + "/api/counterfactual", {"image": b64, "interventions": {}})
    assert status == 200 and r3["image_id"] == r["image_id"]
    assert r["resized_from"] is None and r["size"] == [16, 16]


def test_api_upload_of_another_size_says_it_was_resized(toy_server: str) -> None:
    b64 = base64.b64encode(png_bytes(28, 20, 1)).decode()
    status, r = _post(toy_server + "/api/upload", {"image": b64})
    assert status == 200 and r["resized_from"] == [20, 28] and r["size"] == [16, 16]
    with urllib.request.urlopen(f"{toy_server}/api/images/{r['image_id']}.png") as resp:
        assert Image.open(io.BytesIO(resp.read())).size == (16, 16)


@pytest.mark.parametrize(
    ("path", "body", "raw", "status", "match"),
    [
        (
            "/api/upload",
            {"image": base64.b64encode(b"hello, not an image").decode()},
            None,
            415,
            "not a PNG or JPEG",
        ),
        ("/api/upload", {"image": "%%%not base64"}, None, 415, "not valid base64"),
        ("/api/upload", None, b"x" * 40_000, 413, "too large"),
        ("/api/upload", None, b"{not json", 400, "not valid JSON"),
        ("/api/upload", {}, None, 400, "'image'"),
        ("/api/counterfactual", {"interventions": {}}, None, 400, "image_id"),
        (
            "/api/counterfactual",
            {"image_id": "0", "interventions": {"x": 1}},
            None,
            400,
            "unknown node 'x'",
        ),
        ("/api/counterfactual", {"image_id": "77"}, None, 404, "unknown image_id"),
        ("/api/nothing", {}, None, 404, "no such endpoint"),
    ],
)
def test_api_rejects_bad_requests_with_json(toy_server, path, body, raw, status, match) -> None:
    got, r = _post(toy_server + path, body, raw)
    assert got == status
    assert match in r["error"] and r["status"] == status


def test_api_unknown_get(toy_server: str) -> None:
    status, body, ctype = _get(toy_server + "/etc/passwd")
    assert status == 404 and ctype == "application/json"
    assert "no such endpoint" in json.loads(body)["error"]


def test_serve_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["serve", "somerun"])
    assert args.host == "127.0.0.1" and is_loopback(args.host)
    assert is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_serve_refuses_tampered_run(fixture_run, capsys) -> None:
    from glance.cli.main import main

    (fixture_run / "config.yaml").write_text("preset: tampered\n")
    rc = main(["serve", str(fixture_run), "--port", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and "config.yaml" in err and "sha256 mismatch" in err


def test_discrete_nodes_are_offered_and_set_level_by_level() -> None:
    import dataclasses

    from glance.explain.toy import make_twin, render, sample_concepts
    from glance.serve import ExplorerBackend

    twin = dataclasses.replace(make_twin(), node_levels=(np.array([-1.0, 1.0]), None, None))
    b = ExplorerBackend(twin, render(sample_concepts(4, random_state=0)), [0, 1, 0, 1])
    size, bright, _ = b.info()["nodes"]
    assert size["levels"] == [-1.0, 1.0] and bright["levels"] is None
    r = b.counterfactual("0", {"size": 0.3})  # between the levels: the nearest one is set
    assert r["nodes"]["size"] == pytest.approx(1.0)


def test_nodes_say_how_much_of_an_asked_change_the_twin_draws() -> None:
    import dataclasses

    from glance.explain.toy import make_twin, render, sample_concepts
    from glance.serve import ExplorerBackend

    images = render(sample_concepts(4, random_state=0))
    plain = ExplorerBackend(make_twin(), images, [0, 1, 0, 1])
    assert all(n["drawn"] is None and not n["partly_drawn"] for n in plain.info()["nodes"])
    twin = dataclasses.replace(make_twin(), node_drawn=np.array([0.5, 0.95, np.nan]))
    size, bright, free = ExplorerBackend(twin, images, [0, 1, 0, 1]).info()["nodes"]
    assert size["drawn"] == pytest.approx(0.5) and size["partly_drawn"]
    assert bright["drawn"] == pytest.approx(0.95) and not bright["partly_drawn"]
    assert free["drawn"] is None and not free["partly_drawn"]
    json.dumps(size)  # served as strict JSON
