"""Atomic, verifiable file I/O shared by every part of glance.

Writes go to a temporary name in the target's directory, are flushed and fsync'ed, then
``os.replace``'d into place, so a reader never sees a partial file. Directories (checkpoints,
run artefacts) get a ``MANIFEST.json`` written last with a sha256 per file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    TrainingDivergedError,
    UnsafeCheckpointError,
)

__all__ = [
    "FORMAT_VERSION",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_directory",
    "fsync_dir",
    "write_manifest",
    "verify_manifest",
    "sha256_file",
    "save_safetensors",
    "load_safetensors",
    "safe_torch_load",
    "check_finite_tensors",
    "to_jsonable",
]

#: Version of the on-disk artefact format. Readers refuse anything newer.
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a power cut (where supported)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsync'ed
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is None:  # a failed write names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch scalars and arrays (recursively) into JSON-serialisable values."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor without importing torch
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # JSON has no NaN; null means "not available"
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON (sorted keys, so equal objects give equal bytes) atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(
    directory: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> dict:
    """Write ``MANIFEST.json`` (sha256 of every file, format version) into ``directory``, last."""
    from glance._version import __version__

    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {"format_version": FORMAT_VERSION, "glance_version": __version__, "files": files}
    if extra:
        manifest.update(to_jsonable(dict(extra)))
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def verify_manifest(directory: str | os.PathLike[str], *, check_hashes: bool = True) -> dict:
    """Check ``directory`` against its manifest; return the manifest.

    Raises
    ------
    CheckpointCorruptError
        The manifest is missing or unreadable, a listed file is missing, or a hash differs.
    CheckpointIncompatibleError
        The manifest declares a newer ``format_version`` than this glance reads.
    """
    directory = Path(directory)
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise CheckpointCorruptError(f"incomplete artefact {directory}: {MANIFEST} missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        version = int(manifest["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(f"{mpath}: unreadable manifest ({exc})") from None
    if version > FORMAT_VERSION:
        raise CheckpointIncompatibleError(
            f"{directory} was written in format {version}; this glance reads formats "
            f"<= {FORMAT_VERSION}. Upgrade glance."
        )
    for rel, digest in files.items():
        fpath = directory / rel
        if not fpath.is_file():
            raise CheckpointCorruptError(
                f"{directory}: file {rel!r} listed in {MANIFEST} is missing"
            )
        if check_hashes and sha256_file(fpath) != digest:
            raise CheckpointCorruptError(
                f"{fpath}: sha256 mismatch against {MANIFEST} (file changed or corrupted)"
            )
    return manifest


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], manifest_extra: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and move it onto ``path`` when complete.

    The body writes files into the yielded temporary directory. On success a manifest is written
    last, then the directory is renamed into place (an existing ``path`` is replaced only after the
    new one is complete). On an exception the temporary directory is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        write_manifest(tmp, manifest_extra)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_finite_tensors(tensors: Mapping[str, Any], what: str) -> None:
    """Raise :class:`TrainingDivergedError` naming the first non-finite tensor in ``tensors``."""
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise TrainingDivergedError(
                f"refusing to save {what}: tensor {name!r} holds NaN or inf values"
            )


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save a flat name → tensor mapping as safetensors, atomically, refusing non-finite values."""
    import torch
    from safetensors.torch import save

    check_finite_tensors(tensors, str(path))
    clean = {
        k: v.detach().cpu().contiguous() for k, v in tensors.items() if isinstance(v, torch.Tensor)
    }
    try:
        data = save(clean, metadata=dict(metadata) if metadata else None)
    except Exception as exc:  # safetensors raises plain exceptions on shared storage etc.
        raise CheckpointError(f"cannot serialise tensors for {path}: {exc}") from exc
    atomic_write_bytes(path, data)


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a safetensors file into CPU tensors.

    Corrupt files raise :class:`CheckpointCorruptError`.
    """
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return load(path.read_bytes())
    except Exception as exc:  # SafetensorError, ValueError, ... depending on the damage
        raise CheckpointCorruptError(f"{path}: not a valid safetensors file ({exc})") from None


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` with ``weights_only=True`` and errors mapped to glance's checkpoint errors.

    There is deliberately no fallback to unrestricted unpickling.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle objects other than tensors and plain containers "
            f"({str(exc).splitlines()[0][:200]}). Save a state_dict instead "
            "(torch.save(model.state_dict(), path)) or convert it to safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointCorruptError(f"{path}: cannot read checkpoint ({exc})") from None
