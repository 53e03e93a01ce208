"""Helpers shared by the tests of every directory: a tiny CNN, a blob dataset, a workspace.

Import it as ``from helpers import ...``: ``[tool.pytest.ini_options] pythonpath`` in
pyproject.toml puts tests/ on ``sys.path`` for every test directory, and the subprocess drivers
(tests/training/*_driver.py) insert tests/ themselves. Fixtures live in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from glance.data import ArrayDataset
from glance.threads import torch_threads  # noqa: F401  (re-exported for tests)


class TinyCNN(nn.Module):
    """A 2-conv classifier of 16x16 one-channel images into 3 classes (random weights).

    ``declare_geometry=False`` leaves out the ``in_channels`` / ``input_size`` attributes, so
    that the classifier adapter has to probe the input geometry itself.
    """

    def __init__(
        self,
        channels: int = 1,
        size: int = 16,
        n_classes: int = 3,
        *,
        declare_geometry: bool = True,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_classes))
        if declare_geometry:
            self.in_channels, self.input_size = channels, (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_dataset(n: int = 64, size: int = 16, channels: int = 1, seed: int = 0) -> ArrayDataset:
    """Blobs whose radius ('thickness') and brightness ('intensity') are known contexts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    radius = rng.uniform(2, size / 3, n)
    bright = rng.uniform(0.3, 1.0, n)
    cx, cy = rng.uniform(size / 3, 2 * size / 3, (2, n))
    d = np.sqrt((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
    img = (d < radius[:, None, None]) * bright[:, None, None]
    img = np.repeat(img[:, None], channels, axis=1)
    images = (img * 255).round().astype(np.uint8)
    attrs = np.stack([radius, bright], axis=1)
    attrs[::7, 1] = np.nan  # weak supervision: some intensities unknown
    labels = np.digitize(radius, np.quantile(radius, [1 / 3, 2 / 3]))
    return ArrayDataset(
        images,
        labels=labels,
        attributes=attrs,
        attribute_names=["thickness", "intensity"],
        source="<blobs>",
    )


def write_morpho_split(root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    """Write blobs of :func:`make_dataset` as split ``split`` of a Morpho-MNIST directory."""
    from glance.data import write_idx

    ds = make_dataset(n, seed=int(rng.integers(1 << 30)))
    write_idx(root / f"{split}-images-idx3-ubyte.gz", ds.images[:, 0])
    write_idx(root / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    lines = ["index,thickness,intensity"]
    for i, (t, v) in enumerate(ds.attributes):
        v = 0.5 if np.isnan(v) else v  # the Morpho-MNIST format has no missing values
        lines.append(f"{i},{t:.4f},{v:.4f}")
    (root / f"{split}-morpho.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def morpho_workspace(root: Path, seed: int = 0) -> tuple[Path, Path, Path, Path]:
    """A tiny workspace for the command line: ``(root, data, classifier, config)``.

    ``data`` is a Morpho-MNIST-format directory (train 48, t10k 24 blobs of 16x16 with
    thickness and intensity), ``classifier`` a random small-cnn saved by glance, ``config`` a
    YAML override that makes a ``tiny`` fit take a few steps.
    """
    from glance.classifiers.architectures import ReferenceClassifier, build_classifier
    from glance.classifiers.serialization import save_classifier

    data = root / "morpho"
    data.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    write_morpho_split(data, "train", 48, rng)
    write_morpho_split(data, "t10k", 24, rng)
    torch.manual_seed(seed)
    net = build_classifier("small-cnn", 10, 1, (16, 16))
    clf = ReferenceClassifier(
        net,
        arch="small-cnn",
        classes=[str(i) for i in range(10)],
        in_channels=1,
        input_size=(16, 16),
    ).eval()
    save_classifier(clf, root / "clf.safetensors")
    cfg = root / "cfg.yaml"
    cfg.write_text(
        "train:\n  encoder_steps: 6\n  generator_steps: 4\n  eval_images: 24\n", encoding="utf-8"
    )
    return root, data, root / "clf.safetensors", cfg


def fit_argv(ws: tuple, out: Path, *extra: str) -> list[str]:
    """``glance fit`` arguments for a :func:`morpho_workspace` (tiny preset, seed 5)."""
    _, data, clf, cfg = ws[:4]
    return [
        "-q",
        "fit",
        "--data",
        str(data),
        "--classifier",
        str(clf),
        "--contexts",
        "thickness,intensity",
        "--preset",
        "tiny",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--seed",
        "5",
        *extra,
    ]


# A short fit for resume tests: 6 encoder steps then 8 generator steps; checkpoints at 0, 4,
# 6 (stage end), 8, 12, 14.
RESUME_CONFIG = {
    "train": {
        "encoder_steps": 6,
        "generator_steps": 8,
        "checkpoint_every": 4,
        "encoder_batch": 16,
        "generator_batch": 8,
        "keep_checkpoints": 10,
    },
    "loss": {"r1_interval": 3, "disentangle_interval": 3},
}


class Crash(Exception):
    """Stands in for a process killed at a step boundary."""
