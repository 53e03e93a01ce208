"""CLI subcommands of the 'graph' area (see glance.cli.main)."""

from __future__ import annotations

import argparse


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (none yet)."""
