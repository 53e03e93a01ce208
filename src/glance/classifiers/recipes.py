"""Classifiers with known behaviour for the ground-truth benchmarks.

Each recipe fixes the architecture, target and schedule of a reference classifier whose reliance
on the data's factors is known by construction:

``morpho-digits``
    small-cnn predicting the digit of a Morpho-MNIST directory.
``morpho-thickness``
    small-cnn predicting "thick vs thin" (``thickness:median``): thickness above the training
    median. Its decision depends on thickness (and, through the Deep-SCM, on what correlates
    with it), not on the digit.
``shapes-plain``
    small-cnn on the ``plain`` causal shapes: the label rule uses only ``size``, and no other
    factor is associated with the label, so the classifier can only succeed through size.
``shapes-spurious``
    small-cnn on the ``spurious`` variant: a corner cue agrees with the label in ``train`` and
    ``test`` and is reversed in ``test_reversed``; the accuracy drop between those two splits
    measures how much the classifier relies on the cue.

:func:`train_recipe` trains one, evaluates it on every held-out split of the directory and
optionally saves it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from glance.classifiers.architectures import ReferenceClassifier
from glance.classifiers.serialization import save_classifier
from glance.classifiers.training import evaluate_classifier, train_classifier
from glance.exceptions import DataValidationError
from glance.registry import Registry

__all__ = ["Recipe", "RECIPES", "train_recipe"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one known-behaviour classifier.

    Attributes
    ----------
    arch, target
        Passed to :func:`~glance.classifiers.train_classifier`.
    epochs, lr
        Schedule.
    eval_splits
        Held-out splits to report (those present in the directory are used).
    description
        What the classifier is known to rely on.
    """

    arch: str
    target: str
    epochs: int
    lr: float
    eval_splits: tuple[str, ...]
    description: str


RECIPES: Registry[Recipe] = Registry("classifier recipe")
RECIPES.register(
    "morpho-digits",
    Recipe("small-cnn", "label", 6, 3e-3, ("t10k",), "digit classifier on Morpho-MNIST"),
)
RECIPES.register(
    "morpho-thickness",
    Recipe("small-cnn", "thickness:median", 6, 3e-3, ("t10k",),
           "thick vs thin: thickness above its training median"),
)  # fmt: skip
RECIPES.register(
    "shapes-plain",
    Recipe("small-cnn", "label", 8, 3e-3, ("test",),
           "causal shapes, plain variant: only size determines the label"),
)  # fmt: skip
RECIPES.register(
    "shapes-spurious",
    Recipe("small-cnn", "label", 8, 3e-3, ("test", "test_reversed"),
           "causal shapes, spurious variant: a label-agreeing corner cue is available"),
)  # fmt: skip


def train_recipe(
    name: str,
    data: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    quiet: bool = True,
    num_threads: int | None = None,
) -> tuple[ReferenceClassifier, dict[str, Any]]:
    """Train the recipe ``name`` on the dataset directory ``data``.

    Parameters
    ----------
    name
        One of ``RECIPES.names()``.
    data
        Dataset directory (Morpho-MNIST format or causal-shapes output).
    out
        If given, save the classifier there (``.safetensors`` + JSON with the evaluation).
    seed, epochs, quiet, num_threads
        Passed to :func:`~glance.classifiers.train_classifier` (``epochs`` overrides the
        recipe's).

    Returns
    -------
    model : ReferenceClassifier
    report : dict
        ``recipe``, ``held_out_accuracy`` (the training split's validation share) and
        ``accuracy`` per evaluated split; for ``shapes-spurious`` also ``cue_reliance`` =
        accuracy(test) - accuracy(test_reversed).
    """
    from glance.data import list_splits, load_dataset

    recipe = RECIPES.get(name)
    splits = list_splits(data)
    if "train" not in splits:
        raise DataValidationError(f"{data}: recipe {name!r} needs a 'train' split; found {splits}")
    model = train_classifier(
        load_dataset(data, "train"), recipe.arch, recipe.target,
        epochs=epochs or recipe.epochs, lr=recipe.lr, seed=seed, quiet=quiet,
        num_threads=num_threads,
    )  # fmt: skip
    report: dict[str, Any] = {
        "recipe": name,
        "description": recipe.description,
        "held_out_accuracy": model.meta["accuracy"],
        "accuracy": {},
    }
    for split in recipe.eval_splits:
        if split in splits:
            result = evaluate_classifier(model, load_dataset(data, split))
            report["accuracy"][split] = result["accuracy"]
    acc = report["accuracy"]
    if "test" in acc and "test_reversed" in acc:
        report["cue_reliance"] = acc["test"] - acc["test_reversed"]
    model.meta["evaluation"] = report
    if out is not None:
        save_classifier(model, Path(out))
    return model, report
