"""The explorer's HTTP server: a static page and a small JSON API (documented in docs/api.md).

Standard library only (:class:`http.server.ThreadingHTTPServer`). Computation happens in an
:class:`~glance.serve.ExplorerBackend`, under its lock. Every error is answered as JSON
``{"error": message, "status": code}``: a 4xx status for anything the client sent (the
standard library's own rejections of malformed requests included), 500 only for a bug, whose
details go to the server log and never to the client. Nothing is fetched from outside the server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from glance.serve._backend import ExplorerBackend, UploadError, brief

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
#: Seconds a connection may stay silent (a body that never arrives, an idle keep-alive).
_REQUEST_TIMEOUT_S = 60.0
#: 18 digits is far beyond any body we accept, and keeps ``int()`` off huge digit strings.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_INTERNAL_ERROR = "internal error; see the server log"
_POST_ROUTES = ("/api/upload", "/api/counterfactual")


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


def _clip(text: str, limit: int = 80) -> str:
    """Client-supplied text (a path, a method) cut short before it goes into a message."""
    return text if len(text) <= limit else text[:limit] + "…"


def _parse_json_object(raw: bytes) -> dict:
    """The request body as a JSON object; every way it can fail is a 400 with a fixed message."""
    if not raw:
        raise UploadError("the request body is empty; send a JSON object")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UploadError("body is not valid JSON (not UTF-8)") from None
    except RecursionError:  # the C parser recurses once per nesting level
        raise UploadError("body is not valid JSON (nested too deep)") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise UploadError(f"body is not valid JSON ({exc.msg} at {where})") from None
    except ValueError:  # e.g. an integer beyond Python's digit limit
        raise UploadError("body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise UploadError("body must be a JSON object")
    return obj


class _Handler(BaseHTTPRequestHandler):
    backend: ExplorerBackend  # set on the subclass made by make_server
    server_version = "glance-explorer"
    protocol_version = "HTTP/1.1"
    timeout = _REQUEST_TIMEOUT_S

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
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(_json_safe(obj), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode("utf-8")
        extra = {"Allow": "GET, HEAD, POST"} if status == 405 else None
        self._send(status, body, "application/json", extra)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's rejections (malformed request line, headers too long or too
        many, unknown method), answered in JSON like every other error.

        Its 501 (unknown method) and 505 (HTTP version) are about what the client sent, so they
        become 405 and 400: a 5xx from this server means a bug.
        """
        self.close_connection = True  # the request could not be parsed: its framing is unknown
        if self.request_version == "HTTP/0.9":
            # The stdlib's default before it could parse a version; 0.9 answers carry no status
            # line, so the client would not see the error.
            self.request_version = "HTTP/1.0"
        if code == 501:
            method = _clip(self.command or "")
            code, message = 405, f"method {method!r} is not allowed; use GET, HEAD or POST"
        elif code == 505:
            code = 400
        self._error(code, _clip(message or self.responses.get(code, ("bad request",))[0], 200))

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True  # where such a body ends is not known to us
            raise UploadError(
                "Transfer-Encoding is not supported: send the JSON body with a Content-Length",
                status=411,
            )
        values = {v.strip() for v in self.headers.get_all("Content-Length") or ()}
        if not values:
            raise UploadError("a JSON body with a Content-Length header is required", status=411)
        value = values.pop()
        if values or not _CONTENT_LENGTH.fullmatch(value):
            self.close_connection = True
            raise UploadError("bad Content-Length header: give one non-negative integer")
        return int(value)

    def _refuse_too_large(self, n: int, limit: int) -> None:
        # Drain a moderately oversized body so the client reads our 413 instead of a reset
        # connection; beyond that, stop reading and close.
        if n <= _DRAIN_FACTOR * limit:
            remaining = n
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        self.close_connection = True
        raise UploadError(
            f"request body too large: {n} bytes; the limit is {limit} bytes (an upload may "
            f"be at most {self.backend.max_upload_bytes} bytes)",
            status=413,
        )

    def _read_json(self) -> dict:
        n = self._content_length()
        limit = self.backend.max_upload_bytes * 4 // 3 + _JSON_OVERHEAD
        if n > limit:
            self._refuse_too_large(n, limit)
        try:
            raw = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            raise UploadError(f"the {n}-byte request body did not arrive in time", 408) from None
        if len(raw) < n:
            self.close_connection = True
            raise UploadError(f"request body ended after {len(raw)} of its Content-Length {n}")
        self._body_pending = False
        return _parse_json_object(raw)

    def _answer(self, route: Callable[[str], None]) -> None:
        """Run ``route`` on the request's path; turn what it raises into a JSON error."""
        self._body_pending = self.command == "POST"  # a GET's body is refused in do_GET
        path = urlsplit(self.path).path
        try:
            route(path)
        except UploadError as exc:
            if self._body_pending:
                # An unread body would be parsed as the connection's next request.
                self.close_connection = True
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; there is no one to answer
        except Exception:  # a bug: log the traceback, tell the client nothing of it
            logger.exception("explorer request failed: %s %s", self.command, _clip(path))
            self.close_connection = True
            self._error(500, _INTERNAL_ERROR)

    # ---------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.headers.get("Content-Length", "0").strip() != "0" or self.headers.get(
            "Transfer-Encoding"
        ):
            self.close_connection = True  # a GET body is never read: it must not be parsed
        self._answer(self._get)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        self._answer(self._post)

    def _get(self, path: str) -> None:
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
            raise UploadError(f"no such endpoint: {self.command} {_clip(path)}", status=404)

    def _post(self, path: str) -> None:
        if path not in _POST_ROUTES:
            raise UploadError(f"no such endpoint: POST {_clip(path)}", status=404)
        body = self._read_json()
        image_id = body.get("image_id")
        if image_id is not None and not isinstance(image_id, str):
            raise UploadError(
                f"'image_id' must be a string (an id from /api/images); got {brief(image_id)}"
            )
        if body.get("image") is not None:
            data = ExplorerBackend.decode_base64_image(body["image"])
            image_id = self.backend.add_upload(data)
        if path == "/api/upload":
            if image_id is None:
                raise UploadError("'image' (base64 PNG or JPEG) is required")
            self._json(200, self.backend.upload_info(image_id))
            return
        if image_id is None:
            raise UploadError("give 'image_id' (from /api/images) or 'image' (base64 PNG)")
        result = self.backend.counterfactual(image_id, body.get("interventions"))
        result["image_id"] = image_id
        self._json(200, result)


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
