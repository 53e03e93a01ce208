"""The explorer's HTTP server under hostile requests: every one gets a 4xx JSON error.

Requests are written byte by byte on a socket (urllib would refuse or repair most of them), to a
real server on a free loopback port. An answer must be ``{"error": ..., "status": ...}`` with a
4xx status, short, and free of tracebacks, Python exception class names and source paths.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from product_helpers import png_bytes, toy_backend

import glance
from glance.serve import ExplorerBackend, UploadError, make_server

_SOURCE_DIR = str(Path(glance.__file__).resolve().parent)
_EXCEPTION_NAME = re.compile(r"[A-Za-z]+(Error|Exception|Warning)\b")
_MAX_ERROR_BYTES = 1000


@contextlib.contextmanager
def _serving(backend: ExplorerBackend, timeout: float | None = None) -> Iterator[tuple]:
    server = make_server(backend, "127.0.0.1", 0)
    if timeout is not None:
        server.RequestHandlerClass.timeout = timeout
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def address() -> Iterator[tuple]:
    # The default upload limit, so that 100 kB hostile bodies reach the JSON parser.
    with _serving(toy_backend(n_images=4)) as addr:
        yield addr


def _exchange(address: tuple, request: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def _request(
    method: str = "POST",
    path: str = "/api/counterfactual",
    body: bytes | str | None = b"",
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """Raw HTTP/1.1 bytes; a Content-Length matching ``body`` unless ``headers`` set one."""
    body = body.encode() if isinstance(body, str) else body
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def _counterfactual(interventions: str, image_id: str = '"0"') -> bytes:
    """A counterfactual request whose JSON is written by hand (to hold huge or odd numbers)."""
    return _request(body=f'{{"image_id": {image_id}, "interventions": {interventions}}}')


def _assert_clean_4xx(status: int, body: bytes) -> dict:
    assert 400 <= status <= 499, (status, body[:300])
    assert len(body) <= _MAX_ERROR_BYTES, body[:300]
    text = body.decode("utf-8")
    answer = json.loads(text)
    assert isinstance(answer["error"], str) and answer["error"]
    assert answer["status"] == status
    assert "Traceback" not in text and _SOURCE_DIR not in text and ".py" not in text
    assert not _EXCEPTION_NAME.search(text), text
    return answer


def _png_header_only(width: int, height: int, mode: int = 0) -> bytes:
    """A PNG that declares ``width``×``height`` grey pixels but holds a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _b64_upload(data: bytes) -> bytes:
    import base64

    return _request(path="/api/upload", body=json.dumps({"image": base64.b64encode(data).decode()}))


_HOSTILE = {
    # Content-Length and body framing
    "negative content-length": _request(headers=[("Content-Length", "-5")]),
    "non-numeric content-length": _request(headers=[("Content-Length", "abc")]),
    "float content-length": _request(headers=[("Content-Length", "1e3")]),
    "empty content-length": _request(headers=[("Content-Length", "")]),
    "huge content-length": _request(headers=[("Content-Length", "9" * 5000)]),
    "conflicting content-lengths": _request(
        body=b"{}", headers=[("Content-Length", "2"), ("Content-Length", "3")]
    ),
    "no content-length": _request(body=None),
    "chunked body": _request(body=None, headers=[("Transfer-Encoding", "chunked")]),
    "empty body": _request(body=b""),
    # JSON that is not what the API takes
    "not json": _request(body=b"{nope"),
    "not utf-8": _request(body=b"\xff\xfe{}"),
    "json array": _request(body=b"[1, 2]"),
    "json null": _request(body=b"null"),
    "json string": _request(body=b'"image_id"'),
    "json number": _request(body=b"3"),
    "arrays nested 100k deep": _request(body=b"[" * 100_000),
    "objects nested 50k deep": _request(body=b'{"a":' * 50_000),
    "5000-digit number": _request(body=b'{"image_id": "0", "x": ' + b"9" * 5000 + b"}"),
    # image_id
    "integer image_id": _request(body=b'{"image_id": 0}'),
    "list image_id": _request(body=b'{"image_id": ["0"]}'),
    "object image_id": _request(body=b'{"image_id": {"id": "0"}}'),
    "boolean image_id": _request(body=b'{"image_id": true}'),
    "null image_id": _request(body=b'{"image_id": null}'),
    "unknown image_id": _request(body=b'{"image_id": "99"}'),
    "negative image_id": _request(body=b'{"image_id": "-1"}'),
    "underscored image_id": _request(body=b'{"image_id": "0_1"}'),
    "50 kB image_id": _request(body=json.dumps({"image_id": "x" * 50_000})),
    # interventions
    "intervention 10**400": _counterfactual('{"size": ' + str(10**400) + "}"),
    "intervention -10**400": _counterfactual('{"size": -' + str(10**400) + "}"),
    "intervention 1e400": _counterfactual('{"size": 1e400}'),
    "intervention NaN": _counterfactual('{"size": NaN}'),
    "intervention Infinity": _counterfactual('{"size": Infinity}'),
    "intervention -Infinity": _counterfactual('{"size": -Infinity}'),
    "intervention true": _counterfactual('{"size": true}'),
    "intervention string": _counterfactual('{"size": "1.0"}'),
    "intervention null": _counterfactual('{"size": null}'),
    "intervention list": _counterfactual('{"size": [1]}'),
    "intervention 31 std": _counterfactual('{"size": 31}'),
    "unknown node": _counterfactual('{"nope": 1}'),
    "50 kB node name": _counterfactual(json.dumps({"n" * 50_000: 1})),
    "interventions list": _counterfactual("[1, 2]"),
    "interventions string": _counterfactual('"size=1"'),
    "interventions number": _counterfactual("1"),
    # uploads
    "image not a string": _request(path="/api/upload", body=b'{"image": 123}'),
    "image not base64": _request(path="/api/upload", body=b'{"image": "%%%"}'),
    "image empty": _request(path="/api/upload", body=b'{"image": ""}'),
    "image not png": _b64_upload(b"GIF89a" + b"\0" * 50),
    "image garbage png": _b64_upload(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10),
    "png declaring 20000x20000": _b64_upload(_png_header_only(20_000, 20_000)),
    "png declaring 65535x65535 rgba": _b64_upload(_png_header_only(65_535, 65_535, mode=6)),
    # paths, methods, request lines, headers
    "unknown POST endpoint": _request(path="/api/nothing", body=b"{}"),
    "unknown GET endpoint": _request("GET", "/etc/passwd", body=None),
    "60 kB GET path": _request("GET", "/" + "a" * 60_000, body=None),
    "70 kB GET path": _request("GET", "/" + "a" * 70_000, body=None),
    "traversal in image id": _request("GET", "/api/images/..%2F..%2Fetc%2Fpasswd.png", body=None),
    "undecodable image id": _request("GET", "/api/images/%ff%fe.png", body=None),
    "unknown image png": _request("GET", "/api/images/99.png", body=None),
    "PUT": _request("PUT", "/api/info", body=b"{}"),
    "DELETE": _request("DELETE", "/api/images/0.png", body=None),
    "made-up method": _request("FROBNICATE", "/", body=None),
    "HTTP/2.0 request line": b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n",
    "bad version": b"GET / HTTX/1.1\r\nHost: localhost\r\n\r\n",
    "garbage request line": b"GARBAGE\r\n\r\n",
    "too many words": b"GET / / HTTP/1.1\r\n\r\n",
    "120 headers": _request(
        "GET", "/api/info", body=None, headers=[(f"X-{i}", "1") for i in range(120)]
    ),
    "70 kB header": _request("GET", "/api/info", body=None, headers=[("X-Big", "b" * 70_000)]),
}


@pytest.mark.parametrize("request_bytes", list(_HOSTILE.values()), ids=list(_HOSTILE))
def test_hostile_request_gets_a_clean_4xx_json_error(address, request_bytes) -> None:
    _assert_clean_4xx(*_exchange(address, request_bytes))


def test_server_still_answers_after_the_hostile_requests(address) -> None:
    status, body = _exchange(address, _counterfactual('{"size": 2.0}'))
    assert status == 200 and json.loads(body)["prediction"] == 1


# ------------------------------------------------------------- the reproduced problems
def test_negative_content_length_is_400(address) -> None:
    answer = _assert_clean_4xx(*_exchange(address, _HOSTILE["negative content-length"]))
    assert answer["status"] == 400 and "Content-Length" in answer["error"]


def test_huge_integer_intervention_names_the_node_and_the_range(address) -> None:
    answer = _assert_clean_4xx(*_exchange(address, _HOSTILE["intervention 10**400"]))
    assert answer["status"] == 400
    assert "'size'" in answer["error"] and "±30" in answer["error"]


def test_deeply_nested_json_is_400(address) -> None:
    answer = _assert_clean_4xx(*_exchange(address, _HOSTILE["arrays nested 100k deep"]))
    assert answer["status"] == 400 and "nested too deep" in answer["error"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 10000² warns
@pytest.mark.parametrize("side", [20_000, 10_000])
def test_decompression_bomb_is_refused_before_decoding(monkeypatch, side) -> None:
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("the pixels of a wrongly-sized upload were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    with pytest.raises(UploadError, match="this model takes 16×16") as info:
        toy_backend(n_images=1).add_upload(bomb)
    assert info.value.status == 422


def test_decompression_bomb_over_http(address) -> None:
    answer = _assert_clean_4xx(*_exchange(address, _HOSTILE["png declaring 20000x20000"]))
    assert answer["status"] == 422 and "16×16" in answer["error"]


def test_internal_error_is_a_fixed_message_and_logged(caplog) -> None:
    backend = toy_backend(n_images=1)

    def broken(*args, **kwargs):
        raise RuntimeError(f"secret detail from {_SOURCE_DIR}/serve/_backend.py")

    backend.counterfactual = broken
    with _serving(backend) as addr, caplog.at_level(logging.ERROR, "glance.serve"):
        status, body = _exchange(addr, _counterfactual("{}"))
    assert status == 500
    assert json.loads(body) == {"error": "internal error; see the server log", "status": 500}
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "secret detail" in logged


def test_unreadable_upload_message_is_fixed() -> None:
    with pytest.raises(UploadError) as info:
        toy_backend(n_images=1).add_upload(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert str(info.value) == "upload is not a readable image" and info.value.status == 415


# ------------------------------------------------------------- framing
def test_body_shorter_than_its_content_length_is_400(address) -> None:
    request = _request(body=b'{"image_id"', headers=[("Content-Length", "100")])
    answer = _assert_clean_4xx(*_exchange(address, request, half_close=True))
    assert answer["status"] == 400 and "Content-Length" in answer["error"]


def test_body_that_never_arrives_times_out_with_408() -> None:
    request = _request(body=b'{"image_id"', headers=[("Content-Length", "100")])
    with _serving(toy_backend(n_images=1), timeout=0.5) as addr:
        answer = _assert_clean_4xx(*_exchange(addr, request))
    assert answer["status"] == 408


def test_unread_body_does_not_become_the_next_request(address) -> None:
    """A body the server did not read must not be parsed as a second request on the connection."""
    smuggled = b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n"
    head = b"POST /api/nothing HTTP/1.1\r\nHost: localhost\r\n"
    request = head + f"Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        first = http.client.HTTPResponse(sock)
        first.begin()
        first.read()
        assert first.status == 404
        assert sock.recv(1 << 16) == b""  # closed: nothing answered the smuggled request


# ------------------------------------------------------------- uploads, fuzzed
def test_mangled_pngs_are_415_or_422_never_anything_else() -> None:
    backend = toy_backend(n_images=1)
    good = bytearray(png_bytes(16, 16, 3))
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = bytearray(good)
        for pos in rng.integers(8, len(data), size=rng.integers(1, 6)):
            data[pos] = int(rng.integers(0, 256))
        data = data[: rng.integers(9, len(data) + 1)]
        try:
            backend.add_upload(bytes(data))
        except UploadError as exc:
            assert exc.status in (415, 422), exc
