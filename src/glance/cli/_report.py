"""CLI subcommands of the 'report' area (see glance.cli.main): ``glance report RUN``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from glance.cli._common import check_new_file
    from glance.report import write_report
    from glance.run import Run, enclosing_run

    if args.out is not None and enclosing_run(args.out) is None and Run.is_run(args.run):
        check_new_file(args.out, args.force)  # a file outside any run is the user's
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
    p.add_argument(
        "--force", action="store_true", help="replace an existing --out file outside the run"
    )
    p.set_defaults(func=_run)
