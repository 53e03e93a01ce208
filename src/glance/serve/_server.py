"""The explorer's HTTP server: a static page and a small JSON API (documented in docs/api.md).

Standard library only (:class:`http.server.ThreadingHTTPServer`). Computation happens in an
:class:`~glance.serve.ExplorerBackend`, under its lock. Every error is answered as JSON
``{"error": message}`` with a 4xx status; nothing is fetched from outside the server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from glance.serve._backend import ExplorerBackend, UploadError

__all__ = ["make_server", "is_loopback"]

logger = logging.getLogger(__name__)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
#: JSON bodies are the base64 of an upload (4/3 larger) plus a little structure.
_JSON_OVERHEAD = 4096
#: Oversized bodies up to this multiple of the limit are read and discarded before the 413.
_DRAIN_FACTOR = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback interface (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


class _Handler(BaseHTTPRequestHandler):
    backend: ExplorerBackend  # set on the subclass made by make_server
    server_version = "glance-explorer"
    protocol_version = "HTTP/1.1"

    # ---------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(_json_safe(obj), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None:
            raise UploadError("a JSON body with a Content-Length header is required", status=411)
        try:
            n = int(length)
        except ValueError:
            raise UploadError(f"bad Content-Length {length!r}") from None
        limit = self.backend.max_upload_bytes * 4 // 3 + _JSON_OVERHEAD
        if n > limit:
            # Drain a moderately oversized body so the client reads our 413 instead of a reset
            # connection; beyond that, stop reading and close.
            if n <= _DRAIN_FACTOR * limit:
                remaining = n
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            else:
                self.close_connection = True
            raise UploadError(
                f"request body too large: {n} bytes; the limit is {limit} bytes (an upload may "
                f"be at most {self.backend.max_upload_bytes} bytes)",
                status=413,
            )
        raw = self.rfile.read(n)
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise UploadError(f"body is not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise UploadError("body must be a JSON object")
        return obj

    # ---------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = urlsplit(self.path).path
        try:
            if path in _STATIC:
                name, ctype = _STATIC[path]
                body = resources.files("glance.serve").joinpath(f"static/{name}").read_bytes()
                self._send(200, body, ctype, {"Content-Security-Policy": _CSP})
            elif path == "/api/info":
                self._json(200, self.backend.info())
            elif path == "/api/images":
                self._json(200, {"images": self.backend.list_images()})
            elif path.startswith("/api/images/") and path.endswith(".png"):
                image_id = unquote(path[len("/api/images/") : -len(".png")])
                self._send(200, self.backend.image_png(image_id), "image/png")
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            else:
                self._error(404, f"no such endpoint: GET {path}")
        except UploadError as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # answer in JSON, log the traceback; the server keeps going
            logger.exception("explorer request failed")
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        path = urlsplit(self.path).path
        try:
            if path not in ("/api/upload", "/api/counterfactual"):
                raise UploadError(f"no such endpoint: POST {path}", status=404)
            body = self._read_json()
            image_id = body.get("image_id")
            if body.get("image") is not None:
                data = ExplorerBackend.decode_base64_image(body["image"])
                image_id = self.backend.add_upload(data)
            if path == "/api/upload":
                if image_id is None:
                    raise UploadError("'image' (base64 PNG or JPEG) is required")
                self._json(200, {"image_id": image_id})
                return
            if image_id is None:
                raise UploadError("give 'image_id' (from /api/images) or 'image' (base64 PNG)")
            result = self.backend.counterfactual(str(image_id), body.get("interventions"))
            result["image_id"] = image_id
            self._json(200, result)
        except UploadError as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # answer in JSON, log the traceback; the server keeps going
            logger.exception("explorer request failed")
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")


def make_server(
    backend: ExplorerBackend, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    """Create (bind) the explorer's HTTP server; call ``serve_forever()`` to run it.

    Parameters
    ----------
    backend
        The computation behind the API.
    host
        Interface to bind; loopback by default. Anything else exposes the model to the network.
    port
        TCP port; 0 picks a free one (see ``server.server_address``).
    """
    handler = type("GlanceExplorerHandler", (_Handler,), {"backend": backend})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
