"""Training checkpoints: atomic, verified, exact to resume.

A checkpoint is a directory ``RUN/checkpoints/ckpt-<step>/`` built under a temporary sibling name
and renamed into place after its ``MANIFEST.json`` (sha256 of every file) is written
(:func:`glance._io.atomic_directory`), so resume only ever sees complete checkpoints. It holds:

``model.safetensors``  every module's ``state_dict`` (keys ``<module>/<param>``)
``optim.safetensors``  every optimiser's tensors; the rest of its state is JSON in ``state.json``
``rng.safetensors``    ``torch.Generator`` states (uint8 tensors)
``extra.safetensors``  other tensors (for instance the fitted concept mixture)
``state.json``         step, stage, config and its hash, dataset fingerprint, RNG/numpy states,
                       optimiser skeletons, versions

Nothing is pickled. Non-finite tensors are refused (:func:`glance._io.save_safetensors`), so a NaN
model is never saved as good. Retention deletes old checkpoints only after the new one committed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glance._io import atomic_directory, atomic_write_json, load_safetensors, save_safetensors
from glance._io import verify_manifest as _verify_manifest
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    TrainingDivergedError,
)

__all__ = [
    "CheckpointData",
    "CheckpointManager",
    "flatten_state",
    "unflatten_state",
    "load_module_state",
    "dataset_fingerprint",
]

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


# --------------------------------------------------------------------------------------------
# Flattening nested states (optimizer.state_dict()) into tensors + a JSON skeleton.


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of ``obj`` into ``tensors`` and return a JSON-safe skeleton.

    Dict keys keep their type (optimiser states are keyed by int), tuples stay tuples, so
    :func:`unflatten_state` rebuilds an object equal to ``obj``.
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().clone()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {
            "__dict__": [
                [_encode_key(k), flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {
            "__tuple__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        }
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _encode_key(key: Any) -> Any:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise CheckpointError(f"cannot store dict key {key!r} in a checkpoint")
    return key


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointCorruptError(f"checkpoint tensor {key!r} is missing")
            return tensors[key]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def load_module_state(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> None:
    """``load_state_dict`` strictly, raising :class:`CheckpointIncompatibleError` on mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:5]}")
        raise CheckpointIncompatibleError(
            f"{what} does not match the model built from this config: " + "; ".join(parts)
        )
    module.load_state_dict(dict(state), strict=True)


def dataset_fingerprint(dataset: Any, n_images: int = 256) -> str:
    """sha256 over the size, labels, attributes and an even sample of images of ``dataset``."""
    import hashlib

    h = hashlib.sha256()
    n = len(dataset)
    h.update(json.dumps([n, list(dataset.image_shape), list(dataset.attribute_names)]).encode())
    h.update(np.ascontiguousarray(dataset.labels, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(dataset.attributes, dtype=np.float64).tobytes())
    if n:
        idx = np.unique(np.linspace(0, n - 1, min(n, n_images)).astype(np.int64))
        h.update(np.ascontiguousarray(dataset._load_uint8(idx)).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------


@dataclass
class CheckpointData:
    """What a checkpoint holds, as loaded back into memory."""

    path: Path
    step: int
    modules: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]
    generators: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)


def _split_prefixed(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, rest = key.partition("/")
        out.setdefault(name, {})[rest] = value
    return out


class CheckpointManager:
    """Writes, lists, verifies and loads the checkpoints of one run.

    Parameters
    ----------
    directory
        ``RUN/checkpoints``.
    keep
        How many committed checkpoints to keep (older ones are deleted after a new commit).
    on_before_commit
        Test seam: called with the temporary directory once all files are written, before the
        manifest and the rename (to simulate a crash during a save).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 2,
        on_before_commit: Callable[[Path], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.on_before_commit = on_before_commit

    def path_for(self, step: int) -> Path:
        """Directory of the checkpoint at ``step``."""
        return self.directory / f"ckpt-{step:06d}"

    def save(
        self,
        step: int,
        *,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        generators: Mapping[str, torch.Generator],
        extra: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and apply retention; return its path.

        Raises
        ------
        TrainingDivergedError
            A module or optimiser tensor is non-finite (nothing is written).
        CheckpointError
            The write failed (disk full, permissions); previous checkpoints are untouched.
        """
        target = self.path_for(step)
        model_t = {f"{n}/{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
        optim_t: dict[str, torch.Tensor] = {}
        skeletons = {n: flatten_state(o.state_dict(), n, optim_t) for n, o in optimizers.items()}
        rng_t = {n: g.get_state() for n, g in generators.items()}
        meta = {**dict(state or {}), "step": step, "optimizers": skeletons}
        try:
            with atomic_directory(target, {"kind": "checkpoint", "step": step}) as tmp:
                save_safetensors(tmp / "model.safetensors", model_t)
                save_safetensors(tmp / "optim.safetensors", optim_t)
                save_safetensors(tmp / "rng.safetensors", rng_t)
                save_safetensors(tmp / "extra.safetensors", dict(extra or {}))
                atomic_write_json(tmp / "state.json", meta)
                if self.on_before_commit is not None:
                    self.on_before_commit(tmp)
        except (TrainingDivergedError, CheckpointError):
            raise
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoint {target}: {exc.strerror or exc} (errno {exc.errno}); "
                "earlier checkpoints are untouched"
            ) from exc
        self._retain()
        return target

    def _retain(self) -> None:
        for old in self.committed()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def committed(self) -> list[Path]:
        """Checkpoint directories with a manifest, oldest first (not hash-verified)."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if p.is_dir() and (m := _CKPT_RE.match(p.name)) and (p / "MANIFEST.json").is_file()
        ]
        return [p for _, p in sorted(found)]

    def clean_partial(self) -> None:
        """Remove temporary directories left by a save that was killed (logged)."""
        if not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
                logger.warning("removing incomplete checkpoint %s left by an interrupted save", p)
                shutil.rmtree(p, ignore_errors=True)

    def latest_valid(self) -> Path | None:
        """Newest checkpoint that verifies; corrupt ones are renamed ``*.corrupt`` (warned)."""
        self.clean_partial()
        for path in reversed(self.committed()):
            try:
                self.verify(path)
                return path
            except CheckpointCorruptError as exc:
                bad = path.with_name(path.name + ".corrupt")
                logger.warning("skipping corrupt checkpoint (%s); renamed to %s", exc, bad.name)
                os.replace(path, bad)
        return None

    @staticmethod
    def verify(path: str | os.PathLike[str]) -> dict:
        """Check the manifest and hashes of one checkpoint; return the manifest."""
        return _verify_manifest(path)

    def load(self, path: str | os.PathLike[str]) -> CheckpointData:
        """Verify and load the checkpoint at ``path``."""
        path = Path(path)
        self.verify(path)
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointCorruptError(f"{path / 'state.json'}: unreadable ({exc})") from None
        optim_t = load_safetensors(path / "optim.safetensors")
        optimizers = {
            n: unflatten_state(s, optim_t) for n, s in state.pop("optimizers", {}).items()
        }
        return CheckpointData(
            path=path,
            step=int(state["step"]),
            modules=_split_prefixed(load_safetensors(path / "model.safetensors")),
            optimizers=optimizers,
            generators=load_safetensors(path / "rng.safetensors"),
            extra=load_safetensors(path / "extra.safetensors"),
            state=state,
        )

    def restore(
        self,
        data: CheckpointData,
        *,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        generators: Mapping[str, torch.Generator],
    ) -> None:
        """Load ``data`` into live objects, strictly (every name must be present)."""
        for name, module in modules.items():
            if name not in data.modules:
                raise CheckpointIncompatibleError(f"{data.path}: no weights for module {name!r}")
            load_module_state(module, data.modules[name], f"{data.path} ({name})")
        for name, opt in optimizers.items():
            if name not in data.optimizers:
                raise CheckpointIncompatibleError(f"{data.path}: no state for optimiser {name!r}")
            try:
                opt.load_state_dict(data.optimizers[name])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointIncompatibleError(
                    f"{data.path}: optimiser {name!r} state does not fit ({exc})"
                ) from None
        for name, gen in generators.items():
            if name not in data.generators:
                raise CheckpointIncompatibleError(
                    f"{data.path}: no RNG state for {name!r}; resume would not be exact"
                )
            gen.set_state(data.generators[name])
