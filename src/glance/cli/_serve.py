"""CLI subcommands of the 'serve' area (see glance.cli.main): ``glance serve RUN``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from glance.cli._common import (
    add_classifier_args,
    add_threads_arg,
    classifier_from_args,
    describe_os_error,
    port,
    positive_int,
)
from glance.exceptions import ConfigError, ResourceError

logger = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    import socket

    from glance.serve import ExplorerBackend, is_loopback, make_server

    backend = ExplorerBackend.from_run(
        args.run,
        data=args.data,
        n_images=args.n_images,
        max_upload_bytes=args.max_upload_bytes,
        threads=args.threads,
        classifier=classifier_from_args(args),
    )
    if not is_loopback(args.host):
        logger.warning(
            "binding %s: the explorer and the model are reachable from the network", args.host
        )
    try:
        server = make_server(backend, args.host, args.port)
    except socket.gaierror:
        raise ConfigError(
            f"--host {args.host!r} is not a name or address of this machine"
        ) from None
    except OSError as exc:
        raise ResourceError(
            f"cannot listen on {args.host}:{args.port}: {describe_os_error(exc)}"
        ) from None
    host, port = server.server_address[:2]
    print(f"glance explorer on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``glance serve``."""
    p = subparsers.add_parser(
        "serve",
        help="interactive explorer of a run in the browser",
        description="Serve an interactive explorer (counterfactual sliders, class probabilities, "
        "causal graph) of a fitted run, with its JSON API (docs/api.md).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    p.add_argument("--port", type=port, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--data", type=Path, default=None, help="dataset to pick images from (held-out split)"
    )
    p.add_argument(
        "--n-images", type=positive_int, default=64, help="images offered in the picker"
    )
    p.add_argument(
        "--max-upload-bytes",
        type=positive_int,
        default=1 << 20,
        help="largest accepted upload (bytes)",
    )
    add_threads_arg(p)
    add_classifier_args(p)
    p.set_defaults(func=_run)
