"""Read a run directory's saved artefacts for the report and the explorer.

Everything the report shows comes from here, read through :class:`glance.Run`: only files the
run sealed are used (a file copied into the run by hand is ignored). A section whose files are
absent is ``None`` (the report says "not computed"); a file that is present but unreadable
raises :class:`~glance.exceptions.CheckpointCorruptError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glance import run as layout
from glance.exceptions import CheckpointCorruptError
from glance.run import Run

__all__ = ["RunArtifacts", "load_run_artifacts", "read_image_file", "safe_run_path"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GLOBAL_IMPORTANCE = f"{layout.GRAPH}/global_importance.json"


@dataclass
class RunArtifacts:
    """What a run directory holds, as plain Python data.

    Attributes
    ----------
    run : Run
        The run (only its sealed files are read).
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
    atlas : dict or None
        ``atlas/atlas.json`` (``glance concepts``).
    config_text : str or None
        ``config.yaml`` as written.
    state : dict or None
        ``state.json`` (names, context statistics, classes, versions).
    surrogate_pictures : list of str
        Run-relative paths of the top-level PNG grids (reconstructions, samples).
    """

    run: Run
    run_dir: Path
    manifest: dict
    metrics: dict | None = None
    graph: dict | None = None
    global_importance: dict | None = None
    global_importance_source: str | None = None
    explanations: dict | None = None
    atlas: dict | None = None
    config_text: str | None = None
    state: dict | None = None
    surrogate_pictures: list[str] = field(default_factory=list)
    evaluations: dict[str, dict] = field(default_factory=dict)

    def has(self, rel: str) -> bool:
        """Whether the run sealed the file ``rel``."""
        return self.run.file(rel) is not None


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


def load_run_artifacts(run_dir: str | os.PathLike[str], *, verify: bool = True) -> RunArtifacts:
    """Read every artefact of ``run_dir`` the report and the explorer use.

    Parameters
    ----------
    run_dir
        A run directory written by ``glance fit`` (and optionally ``glance evaluate``,
        ``glance graph``, ``glance explain``).
    verify
        Check every sealed file's sha256 first (an interrupted write is always finished or
        discarded first).

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
    run = Run.open(run_dir, verify=verify)
    with run.reading():
        art = RunArtifacts(run=run, run_dir=run.path, manifest=run.manifest())
        art.metrics = _expect(run, layout.METRICS)
        art.graph = _expect(run, f"{layout.GRAPH}/graph.json")
        obj = _expect(run, _GLOBAL_IMPORTANCE)
        if obj is not None:
            art.global_importance, art.global_importance_source = obj, _GLOBAL_IMPORTANCE
        art.explanations = _expect(run, f"{layout.EXPLANATIONS}/explanations.json")
        art.atlas = _expect(run, f"{layout.ATLAS}/atlas.json")
        art.state = _expect(run, layout.STATE)
        art.config_text = run.read_text(layout.CONFIG)
        art.surrogate_pictures = [v for v in layout.GRIDS.values() if art.has(v)]
        art.evaluations = {k: v for k, v in run.evaluations().items() if isinstance(v, dict)}
    return art


def _expect(run: Run, rel: str, expect: type = dict) -> Any:
    obj = run.read_json(rel)
    if obj is not None and not isinstance(obj, expect):
        raise CheckpointCorruptError(
            f"{run.path / rel}: expected a JSON {expect.__name__}, found {type(obj).__name__}"
        )
    return obj
