"""Read a run directory's saved artefacts for the report and the explorer.

Everything the report shows comes from here: the files the other parts of glance wrote into the
run directory (``docs/architecture.md``, "Run directory"). A section whose files are absent is
``None`` (the report says "not computed"); a file that is present but unreadable raises
:class:`~glance.exceptions.CheckpointCorruptError` naming it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glance._io import MANIFEST, verify_manifest
from glance.exceptions import CheckpointCorruptError, CheckpointError

__all__ = ["RunArtifacts", "load_run_artifacts", "read_image_file", "safe_run_path"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: Files the report may look for the global importances in (the causal area's choice).
_GLOBAL_IMPORTANCE_FILES = (
    "graph/global_importance.json",
    "graph/global_importances.json",
    "graph/importance.json",
    "graph/importances.json",
)
#: Top-level pictures of the fitted surrogate (reconstruction / sample grids), by name pattern.
_SURROGATE_PICTURE_HINTS = ("recon", "sample")


@dataclass
class RunArtifacts:
    """What a run directory holds, as plain Python data.

    Attributes
    ----------
    run_dir : Path
        The run directory.
    manifest : dict
        ``MANIFEST.json`` (verified unless loading was told not to).
    metrics : dict or None
        ``metrics.json`` (``glance evaluate``).
    graph : dict or None
        ``graph/graph.json`` (``glance graph``).
    global_importance : dict or None
        The global importances written next to the graph, and the file they came from in
        ``global_importance_source``.
    explanations : dict or None
        ``explanations/explanations.json`` (``glance explain``).
    config_text : str or None
        ``config.yaml`` as written.
    state : dict or None
        ``state.json`` (names, context statistics, classes, versions).
    surrogate_pictures : list of str
        Run-relative paths of the top-level PNG grids (reconstructions, samples).
    """

    run_dir: Path
    manifest: dict
    metrics: dict | None = None
    graph: dict | None = None
    global_importance: dict | None = None
    global_importance_source: str | None = None
    explanations: dict | None = None
    config_text: str | None = None
    state: dict | None = None
    surrogate_pictures: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointCorruptError(f"{path}: not UTF-8 text ({exc})") from None
    try:
        return json.loads(text, parse_constant=lambda name: math.nan)
    except ValueError as exc:
        raise CheckpointCorruptError(f"{path}: not valid JSON ({exc})") from None


def _optional_json(run_dir: Path, rel: str, expect: type = dict) -> Any:
    path = run_dir / rel
    if not path.is_file():
        return None
    obj = _read_json(path)
    if not isinstance(obj, expect):
        raise CheckpointCorruptError(
            f"{path}: expected a JSON {expect.__name__}, found {type(obj).__name__}"
        )
    return obj


def safe_run_path(run_dir: Path, rel: str, *, what: str) -> Path:
    """Resolve ``rel`` inside ``run_dir``; refuse absolute paths and ``..`` escapes.

    Raises
    ------
    CheckpointCorruptError
        ``rel`` points outside the run directory.
    """
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        raise CheckpointCorruptError(f"{run_dir}: {what} path {rel!r} must be run-relative")
    root = run_dir.resolve()
    path = (root / rel).resolve()
    if root != path and root not in path.parents:
        raise CheckpointCorruptError(f"{run_dir}: {what} path {rel!r} leaves the run directory")
    return path


def read_image_file(path: Path) -> tuple[bytes, str]:
    """Return ``(bytes, mime type)`` of a PNG or JPEG file, checked by its magic bytes.

    Raises
    ------
    CheckpointCorruptError
        The file is neither PNG nor JPEG.
    """
    data = path.read_bytes()
    if data.startswith(_PNG_MAGIC):
        return data, "image/png"
    if data.startswith(_JPEG_MAGIC):
        return data, "image/jpeg"
    raise CheckpointCorruptError(f"{path}: expected a PNG or JPEG picture, found other bytes")


def _read_config(run_dir: Path) -> str | None:
    for name in ("config.yaml", "config.yml", "config.json"):
        path = run_dir / name
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise CheckpointCorruptError(f"{path}: not UTF-8 text ({exc})") from None
    return None


def load_run_artifacts(run_dir: str | os.PathLike[str], *, verify: bool = True) -> RunArtifacts:
    """Read every artefact of ``run_dir`` the report and the explorer use.

    Parameters
    ----------
    run_dir
        A run directory written by ``glance fit`` (and optionally ``glance evaluate``,
        ``glance graph``, ``glance explain``).
    verify
        Check ``MANIFEST.json`` (sha256 of each listed file, format version) first.

    Returns
    -------
    RunArtifacts

    Raises
    ------
    CheckpointError
        ``run_dir`` is not a directory.
    CheckpointCorruptError
        The manifest is missing or a listed file is missing or changed, or an artefact is
        unreadable.
    CheckpointIncompatibleError
        The run was written by a newer glance format.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"run directory not found: {root}")
    if verify:
        manifest = verify_manifest(root)
    else:
        mpath = root / MANIFEST
        manifest = _read_json(mpath) if mpath.is_file() else {}
    art = RunArtifacts(run_dir=root, manifest=manifest)
    art.metrics = _optional_json(root, "metrics.json")
    art.graph = _optional_json(root, "graph/graph.json")
    for rel in _GLOBAL_IMPORTANCE_FILES:
        obj = _optional_json(root, rel)
        if obj is not None:
            art.global_importance, art.global_importance_source = obj, rel
            break
    art.explanations = _optional_json(root, "explanations/explanations.json")
    art.state = _optional_json(root, "state.json")
    art.config_text = _read_config(root)
    art.surrogate_pictures = sorted(
        p.name
        for p in root.glob("*.png")
        if any(hint in p.name.lower() for hint in _SURROGATE_PICTURE_HINTS)
    )
    return art
