"""The ``glance`` command line: a thin layer over the Python API.

Each area of glance adds its subcommands from its own module (``glance.cli._<area>``) through an
``add_parsers(subparsers)`` function that sets ``func`` on the parsers it creates, so areas
never edit each other's code. User errors (:class:`glance.exceptions.GlanceError`, missing
files, operating-system errors such as a full disk) print one line and exit non-zero (codes in
:mod:`glance.exceptions`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from glance._version import __version__
from glance.exceptions import ConfigError, GlanceError

#: Operating-system errors about the user's input (a missing file): exit 2; the rest (disk full,
#: read-only, permission, port in use) are the machine refusing: exit 5 (see glance.exceptions).
_INPUT_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)

# Order here is the order of ``glance --help``.
_AREAS = ("demo", "data", "classifier", "fit", "graph", "explain", "report", "serve")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line :class:`ConfigError`s (exit 2), like every
    other user error, instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every area's subcommands."""
    parser = _Parser(
        prog="glance",
        description="Explain any CNN image classifier with concepts, a causal graph and "
        "counterfactual images.",
    )
    parser.add_argument("--version", action="version", version=f"glance {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars, warnings only"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        module = importlib.import_module(f"glance.cli._{area}")
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ConfigError as exc:
        print(f"glance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("glance: interrupted", file=sys.stderr)
        return 130
    except GlanceError as exc:
        if args.debug:
            raise
        print(f"glance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if args.debug:
            raise
        from glance.cli._common import describe_os_error

        print(f"glance: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2 if exc.errno in _INPUT_ERRNOS else 5
    except MemoryError:
        if args.debug:
            raise
        print("glance: error: out of memory; use fewer or smaller images", file=sys.stderr)
        return 5


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
