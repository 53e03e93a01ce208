"""Build a small but real fitted glance run (every area's public API, tiny preset).

Data: 300 embedded MNIST digits in the Morpho-MNIST on-disk format, with two cheap real image
measurements as contexts (``area``: pixels above half intensity; ``intensity``: median of those
pixels). A small-cnn trained for one epoch, the twin fitted with the ``tiny`` preset, one PC run
(no bootstrap) for the graph and SCM, two explained digits, the faithfulness figures, and the
run's manifest sealed over everything — the same sequence as ``glance demo``, only smaller.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 240, 60


def _write_morpho(root: Path) -> Path:
    from glance.data import load_embedded_digits, write_idx

    images, labels = load_embedded_digits()
    images, labels = images[: N_TRAIN + N_TEST], labels[: N_TRAIN + N_TEST]
    root.mkdir(parents=True, exist_ok=True)
    for split, sl in (("train", slice(0, N_TRAIN)), ("t10k", slice(N_TRAIN, None))):
        x, y = np.ascontiguousarray(images[sl]), np.ascontiguousarray(labels[sl])
        write_idx(root / f"{split}-images-idx3-ubyte.gz", x.astype(np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", y.astype(np.uint8))
        rows = ["index,area,intensity"]
        for i, img in enumerate(x):
            fg = img[img >= 0.5 * img.max()]
            rows.append(f"{i},{fg.size},{float(np.median(fg)):.2f}")
        (root / f"{split}-morpho.csv").write_text("\n".join(rows) + "\n")
    return root


def make_real_run(root: Path) -> Path:
    """Write data and a fitted, graphed, explained, evaluated run under ``root``; return RUN."""
    from glance import Glance
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset
    from glance.explain import explain

    data = _write_morpho(root / "data")
    train, test = load_dataset(data, "train"), load_dataset(data, "t10k")
    clf = train_classifier(train, "small-cnn", epochs=1, seed=0, quiet=True)
    run = root / "run"
    est = Glance(clf, contexts=("area", "intensity"), preset="tiny", random_state=0, quiet=True)
    est.fit(train, out=run)  # a sealed run that records its data (data.json)
    est.global_explanation(train, n_resamples=0, random_state=0, out=run / "graph")
    est.describe_concepts(test, n_images=32, out=run / "atlas")
    explain(est, test.load_images([0, 1])).save(run / "explanations")
    est.evaluate(test, out=run)  # the run's own held-out split: RUN/metrics.json
    return run


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
