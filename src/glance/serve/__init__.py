"""Interactive explorer of a fitted glance run: a local web page over a small JSON HTTP API.

>>> from glance.serve import ExplorerBackend, make_server     # doctest: +SKIP
>>> server = make_server(ExplorerBackend.from_run("runs/demo"), "127.0.0.1", 8000)  # doctest: +SKIP
>>> server.serve_forever()                                     # doctest: +SKIP

The endpoints are documented in ``docs/api.md``.
"""

from __future__ import annotations

from glance.serve._backend import DEFAULT_MAX_UPLOAD_BYTES, ExplorerBackend, UploadError
from glance.serve._server import is_loopback, make_server

__all__ = [
    "ExplorerBackend",
    "UploadError",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "make_server",
    "is_loopback",
]
