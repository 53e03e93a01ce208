"""CLI of the explain area: ``glance explain RUN (IMAGE... | --data DIR --index A:B) [--out DIR]``.

Writes ``explanations.json`` (the :meth:`glance.explain.LocalExplanation.to_dict` layout) and the
PNGs (``summary_<i>.png``, ``traversal_<i>.png``, ``interaction_<i>.png``,
``counterfactual_<i>.png``) into ``--out`` (default ``RUN/explanations``; inside the run they are
sealed into it, replacing explanations written there before). When the run has a causal graph
(``glance graph RUN`` was run, so ``glance.load`` restores ``graph_``), ``graph_<i>.png`` draws
that graph with its nodes coloured by image ``i``'s importances. ``--no-pngs`` writes none of them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glance.cli._common import (
    add_classifier_args,
    add_threads_arg,
    check_new_output,
    load_run_model,
    nonneg_int,
    positive_int,
)
from glance.exceptions import ConfigError, DataValidationError, ShapeError
from glance.explain import EXPLAINERS

logger = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``glance explain``."""
    p = subparsers.add_parser(
        "explain",
        help="local explanations of images (importances, interactions, counterfactuals)",
        description="Explain images with a fitted run: interventional importances (total and "
        "direct), interactions, a counterfactual verified by the real classifier, traversals.",
    )
    p.add_argument("run", type=Path, help="run directory written by 'glance fit'")
    p.add_argument("images", nargs="*", type=Path, help="image files (PNG, JPEG, ...)")
    p.add_argument("--data", type=Path, help="dataset directory (instead of image files)")
    p.add_argument("--split", help="split of --data (default: the held-out split)")
    p.add_argument("--index", default="0:16", help="images of --data, 'A:B' or 'i,j,k'")
    p.add_argument(
        "--target", type=nonneg_int, default=None, help="class for the counterfactual"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default RUN/explanations)"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing --out outside the run"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="images explained together"
    )
    p.add_argument(
        "--method",
        choices=EXPLAINERS.names(),
        default="local",
        help="registered explainer (glance.explain.EXPLAINERS); default local: importances, "
        "interactions, counterfactual and traversals",
    )
    p.add_argument("--no-pngs", action="store_true", help="write the JSON only")
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="draw every intervention with what the fit measured its generator to draw "
        "(opt-in; docs/faithfulness.md#calibrated-interventions)",
    )
    p.add_argument(
        "--significance",
        type=nonneg_int,
        default=0,
        metavar="N",
        help="test importances against N random concepts (0: off; N >= 19 for p <= 0.05; "
        "--method local or importance)",
    )
    p.add_argument("--device", default="cpu")
    add_classifier_args(p)
    add_threads_arg(p)
    p.set_defaults(func=_run)

    c = subparsers.add_parser(
        "concepts",
        help="the concept atlas: what every node is (strips, correlations, effect, description)",
        description="Measure every node of a fitted run on held-out images — a traversal strip, "
        "its correlation with each context and class, its effect on the real classifier — "
        "describe it in words, and find the node moves that make each class (AttFind). Writes "
        "RUN/atlas (sealed into the run) and prints the descriptions.",
    )
    c.add_argument("run", type=Path, help="run directory written by 'glance fit'")
    c.add_argument("--data", type=Path, help="dataset (default: the run's held-out split)")
    c.add_argument("--split", help="split of --data (default: its held-out split)")
    c.add_argument(
        "--n-images", type=positive_int, default=64, help="held-out images measured (64)"
    )
    c.add_argument("--n-strip", type=positive_int, default=6, help="images per strip (6)")
    c.add_argument("--device", default="cpu")
    add_classifier_args(c)
    add_threads_arg(c)
    c.set_defaults(func=_concepts)


def parse_index(text: str, n: int) -> np.ndarray:
    """``"A:B"`` (Python slice, B may be omitted) or ``"i,j,k"`` → indices into ``n`` items."""
    try:
        if ":" in text:
            a, _, b = text.partition(":")
            span = (int(a) if a else 0, int(b) if b else n)
        else:
            span = None
            idx = np.asarray([int(t) for t in text.split(",") if t.strip()], dtype=np.int64)
    except ValueError:
        raise ConfigError(f"--index must be 'A:B' or 'i,j,k'; got {text!r}") from None
    if span is not None:
        if not 0 <= span[0] < span[1] <= n:  # never clipped silently
            raise ConfigError(
                f"--index {text!r} must satisfy 0 <= A < B <= {n} (the dataset holds {n} images)"
            )
        idx = np.arange(*span)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
        raise ConfigError(f"--index {text!r} selects no valid image of the {n} in the dataset")
    return idx


def read_images(paths: list[Path], shape: tuple[int, int, int]) -> torch.Tensor:
    """Read image files as float (N, C, H, W) in [0, 1] with the run's channels and size."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    out = []
    for path in paths:
        try:
            with Image.open(path) as im:  # reads the header only: the size is checked first
                if im.size != (w, h):
                    raise ShapeError(
                        f"{path}: image is {im.size[0]}x{im.size[1]}; the run explains "
                        f"{w}x{h} images (resize it first)"
                    )
                arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255.0
        except Image.DecompressionBombError:
            raise DataValidationError(
                f"{path}: refusing a decompression bomb (more than {Image.MAX_IMAGE_PIXELS} "
                f"pixels); the run explains {w}x{h} images"
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise DataValidationError(f"{path}: not a readable image ({exc})") from None
        out.append(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))
    return torch.as_tensor(np.stack(out))


def _inputs(args: argparse.Namespace, model: Any) -> torch.Tensor:
    if args.images:
        return read_images(list(args.images), tuple(model.image_shape_))
    from glance.data import load_dataset, test_split

    ds = load_dataset(args.data, args.split or test_split(args.data))
    idx = parse_index(args.index, len(ds))
    return ds.load_images(idx).float()


def _run(args: argparse.Namespace) -> int:
    from glance.explain import explain
    from glance.threads import compute

    if bool(args.images) == bool(args.data):
        raise ConfigError("glance explain: give image files or --data DIR (exactly one)")
    model = load_run_model(args)
    run = model.run_
    out = Path(args.out) if args.out is not None else run.path / run.explanations_dir
    if run.relative(out) is None:
        if out.resolve() == run.path.resolve():
            raise ConfigError(f"--out {out} is the run itself; name a folder inside or outside it")
        check_new_output(out, args.force)
    else:
        run.check_writable()  # before the explanations are computed, not after
    if args.target is not None and args.target >= len(model.classes_):
        raise ConfigError(
            f"--target {args.target}: the classifier has {len(model.classes_)} classes "
            f"(0..{len(model.classes_) - 1})"
        )
    x = _inputs(args, model)
    significance = {"n_random": args.significance} if args.significance else {}
    with compute(args.threads):
        exp = explain(
            _twin(model, args.calibrated),
            x,
            args.target,
            explainer=args.method,
            batch_size=args.batch_size,
            **significance,
        )
    _warn_partly_drawn(exp.meta.get("partly_drawn", {}), args.calibrated)
    graph = None if args.no_pngs else getattr(model, "graph_", None)
    path = exp.save(out, pngs=not args.no_pngs, graph=graph, replace=True)
    valid = exp.counterfactual.valid.mean() if exp.counterfactual is not None else float("nan")
    logger.info(
        "explained %d images in %.1f s; counterfactual validity %.0f%%; wrote %s",
        len(exp),
        exp.meta["seconds"]["total"],
        100 * valid,
        path,
    )
    return 0


def _warn_partly_drawn(partly_drawn: dict[str, float], calibrated: bool) -> None:
    """One line naming the contexts whose interventions the twin draws too little or too much
    of (their importances are under- or overstated)."""
    if partly_drawn:
        logger.warning(
            "the twin draws %s of an asked change: read their importances with that in mind%s "
            "(docs/faithfulness.md#calibrated-interventions)",
            ", ".join(f"{n} at {v:.0%}" for n, v in partly_drawn.items()),
            "" if calibrated else "; --calibrated draws them as asked",
        )


def _twin(model: Any, calibrated: bool) -> Any:
    """The run itself, or its calibrated twin for ``--calibrated``."""
    from glance.explain import Twin

    if not calibrated:
        return model
    if getattr(model, "context_readback_", None) is None:
        raise ConfigError(
            f"--calibrated: the run {model.run_.path} measured no calibration (a run fitted "
            "before it existed, on fewer than 500 images, or without contexts); "
            "Glance.calibrate_interventions(train) then save() adds it"
        )
    return Twin.from_glance(model, calibrated=True)


def _concepts(args: argparse.Namespace) -> int:
    import sys

    model = load_run_model(args, writes=True)
    run = model.run_
    dataset = run.dataset("test", args.data, args.split)
    atlas = model.describe_concepts(
        dataset,
        n_images=args.n_images,
        n_strip=args.n_strip,
        out=run.path / run.atlas_dir,
    )
    for j in atlas.order:
        sys.stdout.write(f"{atlas.nodes[j]}: {atlas.descriptions[j]}\n")
    sys.stdout.write(f"atlas written to {run.path / run.atlas_dir}\n")
    return 0
