"""Guard for generator output directories: replace only what glance itself wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

from glance.exceptions import DataValidationError


def check_output_dir(
    out: str | os.PathLike[str], marker: str, generator: str, *, force: bool = False
) -> Path:
    """Return ``out`` if a generator may (re)write it, else raise.

    ``out`` may be absent, an empty directory, or — with ``force`` — a previous output of
    ``generator`` (its ``marker`` JSON file names it); anything else (a file, a user's folder)
    is refused rather than replaced, because the atomic swap would delete its contents.
    """
    out = Path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise DataValidationError(f"--out {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return out
    try:
        previous = json.loads((out / marker).read_text(encoding="utf-8")).get("generator")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != generator:
        raise DataValidationError(
            f"--out {out}: refusing to replace a non-empty directory that is not a dataset "
            f"written by {generator} (no {marker}); choose a new or empty directory"
        )
    if not force:
        raise DataValidationError(
            f"--out {out}: a dataset already exists there; pass --force to replace it"
        )
    return out
