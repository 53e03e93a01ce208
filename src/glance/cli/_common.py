"""Helpers shared by several CLI areas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from glance.exceptions import DataValidationError


def run_dataset(
    run: Path, data: str | Path | None, split: str | None, role: Literal["train", "test"]
) -> Any:
    """The dataset a command on ``run`` works on.

    With ``data`` given, load that directory (``split``, or for ``role="test"`` its held-out
    split). Without it, use the data the run was fitted on, as recorded in ``RUN/data.json``,
    and its ``<role>_split``.
    """
    from glance.data import load_dataset, test_split

    if data is None:
        info_path = Path(run) / "data.json"
        if not info_path.is_file():
            raise DataValidationError(
                f"{run}: no data.json recording the training data; pass --data DIR"
            )
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataValidationError(f"{info_path}: not valid JSON ({exc})") from None
        return load_dataset(info["data"], split or info.get(f"{role}_split"))
    if split is None and role == "test":
        split = test_split(data)
    return load_dataset(data, split)
