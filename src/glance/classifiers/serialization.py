"""Save and load classifiers: safetensors weights plus a JSON description, nothing pickled.

``MODEL.safetensors`` holds the network's state dict; ``MODEL.json`` (same stem) holds the
architecture, classes, input size, channels, normalisation, target spec and accuracy, plus the
sha256 of the weights file so a mismatched pair is detected. A user's plain ``torch.save`` state
dict (``.pt`` / ``.pth``) loads through ``torch.load(weights_only=True)`` given ``arch``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glance._io import (
    FORMAT_VERSION,
    atomic_write_json,
    load_safetensors,
    safe_torch_load,
    save_safetensors,
    sha256_file,
)
from glance._version import __version__
from glance.classifiers.architectures import ARCHITECTURES, ReferenceClassifier, build_classifier
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    ConfigError,
    UnsafeCheckpointError,
)

__all__ = [
    "save_classifier",
    "load_classifier",
    "read_classifier_meta",
    "sidecar_path",
    "classifier_fingerprint",
]

logger = logging.getLogger(__name__)

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def classifier_fingerprint(model: nn.Module) -> str:
    """Short sha256 of a classifier's weights: every state-dict entry's name, dtype, shape and
    bytes. Two modules with equal fingerprints compute the same function (same architecture)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON description next to a weights file (``MODEL.safetensors`` → ``MODEL.json``)."""
    return Path(path).with_suffix(".json")


def save_classifier(
    model: nn.Module, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as ``path`` (safetensors) plus its JSON description, atomically.

    Parameters
    ----------
    model
        A :class:`ReferenceClassifier` (as returned by ``train_classifier`` or
        ``load_classifier``).
    path
        Weights file; should end in ``.safetensors``. The JSON goes next to it.
    meta
        Extra metadata merged over ``model.meta`` (e.g. ``{"accuracy": 0.99}``).

    Returns
    -------
    pathlib.Path
        The JSON path.
    """
    if not isinstance(model, ReferenceClassifier):
        raise ConfigError(
            f"save_classifier needs a ReferenceClassifier (from train_classifier or "
            f"load_classifier); got {type(model).__name__}. Wrap your network in "
            "ReferenceClassifier(net, arch=..., classes=..., in_channels=..., input_size=...)."
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"classifier weights path must end in .safetensors; got {path}")
    extra = {**model.meta, **dict(meta or {})}
    save_safetensors(path, model.net.state_dict(), metadata={"format": "glance-classifier"})
    desc = {
        **extra,
        "format_version": FORMAT_VERSION,
        "glance_version": __version__,
        "kind": "glance-classifier",
        "arch": model.arch,
        "classes": model.classes,
        "n_classes": model.n_classes,
        "in_channels": model.in_channels,
        "input_size": list(model.input_size),
        "normalization": model.normalization,
        "weights": path.name,
        "weights_sha256": sha256_file(path),
    }
    json_path = sidecar_path(path)
    atomic_write_json(json_path, desc)
    return json_path


def read_classifier_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the JSON description of the classifier at ``path`` (weights or JSON)."""
    path = Path(path)
    jpath = path if path.suffix == ".json" else sidecar_path(path)
    if not jpath.is_file():
        raise CheckpointError(
            f"{jpath}: classifier description not found (it is written next to the weights by "
            "save_classifier); for a plain state dict pass arch= (--arch)"
        )
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(f"{jpath}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointCorruptError(f"{jpath}: expected a JSON object")
    if int(meta.get("format_version", 0) or 0) > FORMAT_VERSION:
        raise CheckpointIncompatibleError(
            f"{jpath}: written in format {meta['format_version']}; this glance reads "
            f"<= {FORMAT_VERSION}. Upgrade glance."
        )
    required = {
        "arch": str,
        "classes": list,
        "in_channels": int,
        "input_size": list,
        "normalization": dict,
    }
    for key, tp in required.items():
        if not isinstance(meta.get(key), tp):
            raise CheckpointCorruptError(
                f"{jpath}: field {key!r} must be a {tp.__name__}; got {meta.get(key)!r}"
            )
    if len(meta["input_size"]) != 2:
        raise CheckpointCorruptError(f"{jpath}: field 'input_size' must be [H, W]")
    return meta


def _detect_format(path: Path) -> str:
    """``safetensors``, ``torchscript``, ``torch-zip``, ``pickle`` or ``unknown`` by content."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch-zip"
    if head[:1] == b"\x80":  # pickle protocol opcode (legacy torch.save)
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then a JSON header
        return "safetensors"
    return "unknown"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"classifier file not found: {path}")
    fmt = _detect_format(path)
    if fmt == "safetensors":
        return load_safetensors(path)
    if fmt == "torchscript":
        raise UnsafeCheckpointError(
            f"{path} is a TorchScript archive; glance does not execute TorchScript code. Load "
            "it yourself and save its weights: torch.save(torch.jit.load(p).state_dict(), "
            "'weights.pt'), then pass --arch NAME"
        )
    if fmt not in ("torch-zip", "pickle"):
        raise CheckpointCorruptError(
            f"{path}: not a safetensors file or torch.save checkpoint (unrecognised header)"
        )
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointIncompatibleError(
            f"{path}: expected a state dict (name -> tensor); got {type(obj).__name__}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointIncompatibleError(
            f"{path}: expected a state dict of tensors; entries {bad[:5]} are not tensors"
        )
    # DataParallel / DistributedDataParallel prefix every key with "module.".
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module.") :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def _strip_net_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("net.") for k in state):
        return {k[4:]: v for k, v in state.items()}
    return dict(state)


def _infer_dim(state: Mapping[str, torch.Tensor], key: str, dim: int, path: Path, what: str) -> int:
    t = state.get(key)
    if t is None or t.ndim <= dim:
        raise CheckpointIncompatibleError(
            f"{path}: cannot infer {what}: key {key!r} missing or not a weight; is the checkpoint "
            f"of this architecture? Keys start with: {list(state)[:6]}"
        )
    return int(t.shape[dim])


def _load_into(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs {arch} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:5])})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:5])})")
        raise CheckpointIncompatibleError(
            f"{path} does not fit architecture {arch!r}: {'; '.join(parts)}. Is it a checkpoint "
            "of another architecture or class count?"
        )
    net.load_state_dict(state, strict=True)


def load_classifier(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    classes: Sequence[str] | None = None,
    in_channels: int | None = None,
    input_size: Sequence[int] | int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ReferenceClassifier:
    """Load a classifier as an ``nn.Module`` in eval mode that takes ``[0, 1]`` images.

    Parameters
    ----------
    path
        ``MODEL.safetensors`` written by :func:`save_classifier` (its ``MODEL.json`` supplies
        everything else), or a plain ``torch.save(model.state_dict())`` file / a safetensors
        file without description, in which case ``arch`` is required.
    arch
        Registered architecture name (see ``ARCHITECTURES.names()``); overrides the JSON.
    classes
        Class names; default ``"0" .. "K-1"`` with ``K`` read from the weights.
    in_channels
        Default: read from the first convolution's weights.
    input_size
        ``(H, W)`` (or one int) the model takes; needed for a plain state dict.
    mean, std
        Per-channel normalisation the network expects; default none (0 and 1).

    Returns
    -------
    ReferenceClassifier
        In eval mode; input float images of shape (N, C, H, W) in ``[0, 1]``.

    Raises
    ------
    CheckpointError
        Missing file or description.
    CheckpointCorruptError
        Unreadable safetensors / JSON, or weights that do not match the recorded sha256.
    CheckpointIncompatibleError
        Weights of another architecture or class count (mismatching keys and shapes listed).
    UnsafeCheckpointError
        A pickled whole module, arbitrary objects or TorchScript (never executed).
    """
    path = Path(path)
    if path.suffix == ".json":  # the description was given: load the weights it names
        path = path.with_name(str(read_classifier_meta(path).get("weights") or path.stem))
    meta: dict[str, Any] = {}
    if sidecar_path(path).is_file() and path.suffix != ".json":
        meta = read_classifier_meta(path)
        digest = meta.get("weights_sha256")
        if path.is_file() and digest and digest != sha256_file(path):
            raise CheckpointCorruptError(
                f"{path}: sha256 does not match {sidecar_path(path).name} (weights replaced or "
                "corrupted)"
            )
    elif arch is None:
        raise CheckpointError(
            f"{path}: no {sidecar_path(path).name} description next to it; a plain state dict "
            f"holds no architecture, so pass arch= (--arch), one of: "
            f"{', '.join(ARCHITECTURES.names())}"
        )
    state = _strip_net_prefix(_read_state_dict(path))
    arch = arch or meta["arch"]
    spec = ARCHITECTURES.get(arch)
    n_cls = (
        len(classes)
        if classes is not None
        else len(meta.get("classes") or [])
        or (_infer_dim(state, spec.head_key, 0, path, "the class count"))
    )
    ch = (
        in_channels
        or meta.get("in_channels")
        or _infer_dim(state, spec.first_conv_key, 1, path, "the input channels")
    )
    size = input_size if input_size is not None else meta.get("input_size")
    if size is None:
        raise ConfigError(
            f"{path}: input_size (--input-size) is required for a plain state dict (the image "
            "size the network was trained at)"
        )
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    norm = meta.get("normalization") or {}
    names = (
        list(classes)
        if classes is not None
        else meta.get("classes") or [str(k) for k in range(n_cls)]
    )
    net = build_classifier(arch, n_cls, int(ch), size)
    _load_into(net, state, path, arch)
    model = ReferenceClassifier(
        net,
        arch=arch,
        classes=names,
        in_channels=int(ch),
        input_size=size,
        mean=mean if mean is not None else norm.get("mean", [0.0]),
        std=std if std is not None else norm.get("std", [1.0]),
        meta={
            k: v
            for k, v in meta.items()
            if k in ("target", "accuracy", "history", "training", "evaluation")
        },
    )
    return model.eval()
