"""CLI subcommands of the 'report' area (see glance.cli.main): ``glance report RUN``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from glance.report import write_report

    path = write_report(args.run, args.out)
    print(f"report written to {Path(path)}")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``glance report``."""
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="Render a run directory (verified against its MANIFEST.json) into one "
        "self-contained HTML file that opens offline.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="output file (RUN/report.html)"
    )
    p.set_defaults(func=_run)
