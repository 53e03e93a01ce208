"""Helpers shared by several CLI areas: checked option types, the classifier options, loading a
run's model, and turning operating-system errors into one line."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glance.exceptions import CheckpointError, ConfigError

# -- option types: every numeric option is range-checked by argparse ----------------------------


def _number(kind: type, check: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text}")
        return value

    parse.__name__ = expected  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
seed = _number(int, lambda v: 0 <= v < 2**63, "a seed, an integer >= 0")
open_unit = _number(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)")
half_open_unit = _number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
positive_float = _number(float, lambda v: 0.0 < v < float("inf"), "a positive number")
port = _number(int, lambda v: 0 <= v <= 65535, "a TCP port in 0..65535")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """Option type: an integer >= ``minimum`` (a bound owned by the API, e.g. KCI's rows)."""
    return _number(int, lambda v: v >= minimum, f"an integer >= {minimum}")


# -- the classifier: a glance file, or the user's own architecture --------------------------------


def add_classifier_args(parser: argparse.ArgumentParser, *, file_option: bool = False) -> None:
    """``--model package.module:factory`` and ``--weights FILE`` (and ``--classifier FILE``)."""
    if file_option:
        parser.add_argument(
            "--classifier",
            help="classifier weights written by glance (MODEL.safetensors + MODEL.json)",
        )
    parser.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="your own architecture: an importable factory returning the nn.Module (e.g. "
        "mypkg.nets:build); with --weights",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict for --model (.safetensors, or .pt/.pth loaded with weights_only=True)",
    )


def classifier_from_args(args: argparse.Namespace, *, required: bool = False) -> Any:
    """The classifier the options name (``None`` when none is given and none is required)."""
    path = getattr(args, "classifier", None)
    if args.model and path:
        raise ConfigError("give the classifier as --classifier FILE or as --model/--weights")
    if args.weights and not args.model:
        raise ConfigError("--weights needs --model MODULE:FACTORY (the architecture)")
    if path:
        from glance.classifiers.serialization import load_classifier

        return load_classifier(path)
    if args.model:
        return build_user_model(args.model, args.weights)
    if required:
        raise ConfigError(
            "no classifier: give --classifier FILE (glance's) or --model MODULE:FACTORY "
            "--weights FILE (your own architecture)"
        )
    return None


def build_user_model(spec: str, weights: str | None) -> Any:
    """Import ``package.module:factory``, call it, load ``weights`` strictly; eval mode."""
    import sys

    import torch

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--model must be 'package.module:factory'; got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to the user
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--model {spec}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec}: {module_name} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    if weights is None:
        raise ConfigError(f"--model {spec} needs --weights FILE (its trained state dict)")
    _load_weights(model, Path(weights))
    return model.eval()


def _load_weights(model: Any, path: Path) -> None:
    from glance._io import load_safetensors, safe_torch_load
    from glance.training.checkpoint import load_module_state

    state = load_safetensors(path) if path.suffix == ".safetensors" else safe_torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict; found {type(state).__name__}")
    load_module_state(model, state, str(path))


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: fix the CPU threads (default: the cores other processes leave free)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads (default: the cores other processes leave free, re-checked as the "
        "load changes; GLANCE_THREADS or OMP_NUM_THREADS also fix it)",
    )


def load_run_model(args: argparse.Namespace, *, writes: bool = False) -> Any:
    """``glance.load(args.run)`` with the classifier options, ``--device`` and ``--threads``.

    ``writes``: the command will write into the run; prove it can before any work is done.
    """
    from glance.estimator import load

    classifier = classifier_from_args(args)
    est = load(
        args.run,
        classifier=classifier,
        device=getattr(args, "device", "cpu"),
        n_threads=getattr(args, "threads", None),
    )
    if writes:
        est.run_.check_writable()
    return est


def check_new_output(path: Path, force: bool, what: str = "--out") -> None:
    """An output outside a run may replace an existing one only with ``--force``."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is a file; name a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ConfigError(f"{what} {path}: exists and is not empty; pass --force to replace it")


def check_new_file(path: Path, force: bool, what: str = "--out") -> None:
    """A file output may replace an existing file only with ``--force``."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; name a file")
    if path.exists() and not force:
        raise ConfigError(f"{what} {path}: exists; pass --force to replace it")


# -- operating-system errors -----------------------------------------------------------------------

_OS_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EROFS: "read-only file system; write to a writable directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EADDRINUSE: "the port is in use; choose another with --port (0: any free port)",
    errno.EADDRNOTAVAIL: "that address is not on this machine; use --host 127.0.0.1",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
    errno.EMFILE: "too many open files",
    errno.ENOMEM: "out of memory",
}


def describe_os_error(exc: OSError) -> str:
    """One line: what failed, on which path, and what to do."""
    hint = _OS_HINTS.get(exc.errno or -1, exc.strerror or str(exc))
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2:
        where = f"{where} -> {exc.filename2}"
    return f"{hint}: {where}" if where else hint
