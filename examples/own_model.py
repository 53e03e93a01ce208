"""Explain your own torchvision model on your own image folder + CSV with glance.

This script is runnable end to end on a CPU in a few minutes. It stands in for your data and
model with small ones it makes itself, so every step is the one you would run on yours:

1. an image folder plus a CSV of per-image attributes ("context features", missing values
   allowed): here 32×32 RGB squares whose ``size`` causes their ``brightness``; the label is
   "large" when the size is above the median;
2. a torchvision model (ResNet-18, no pretrained download) with its input normalisation, trained
   briefly on it;
3. :class:`glance.Glance` fitted with the ``tiny`` preset (use ``fast`` or ``default`` for real);
4. faithfulness figures (how far to trust the explanations), local explanations of a few
   held-out images, and the self-contained HTML report.

Usage::

    python examples/own_model.py --out own-model-run            # everything (minutes on a CPU)
    python examples/own_model.py --out own-model-run --dry-run  # print the plan, do nothing

Replace :func:`make_dataset` and :func:`make_model` by your own folder and model; see
``docs/own-model.md``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

log = logging.getLogger("own_model")


def make_dataset(root: Path, n_images: int = 800, size: int = 32, seed: int = 0) -> Path:
    """Write ``root/images/*.png`` and ``root/attributes.csv`` (filename, label, size, brightness).

    ``brightness`` is caused by ``size`` (plus noise) and is missing for 10% of the images, to
    show that contexts may be partly unknown.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    sides = rng.uniform(6, 24, n_images)
    brightness = np.clip(0.35 + 0.025 * sides + rng.normal(0, 0.08, n_images), 0.2, 1.0)
    hue = rng.uniform(0, 1, n_images)  # a nuisance factor the label does not depend on
    median = float(np.median(sides))
    rows = []
    for i in range(n_images):
        img = np.full((size, size, 3), 20, dtype=np.uint8)
        s = int(round(sides[i]))
        x0, y0 = rng.integers(0, size - s + 1, 2)
        colour = np.array([1.0, 0.4 + 0.6 * hue[i], 1.0 - 0.6 * hue[i]]) * 255 * brightness[i]
        img[y0 : y0 + s, x0 : x0 + s] = colour.astype(np.uint8)
        name = f"img_{i:05d}.png"
        Image.fromarray(img).save(root / "images" / name)
        known = rng.uniform() > 0.1
        rows.append(
            [
                name,
                int(sides[i] > median),
                f"{sides[i]:.3f}",
                f"{brightness[i]:.4f}" if known else "",
            ]
        )
    with open(root / "attributes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "label", "size", "brightness"])
        w.writerows(rows)
    return root


def make_model(n_classes: int = 2, image_size: int = 32):
    """A torchvision ResNet-18 (random init: nothing is downloaded) with its normalisation.

    glance feeds classifiers ``[0, 1]`` images, so the normalisation is part of the module; the
    ``in_channels`` / ``input_size`` attributes tell glance the input geometry. Keeping both in
    the module means ``glance.load(run, classifier=model)`` restores exactly this classifier.
    """
    import torch
    import torchvision
    from torch import nn

    class Normalised(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.in_channels, self.input_size = 3, (image_size, image_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return Normalised(torchvision.models.resnet18(weights=None, num_classes=n_classes))


def train(model, dataset, epochs: int = 3, seed: int = 0) -> float:
    """A plain PyTorch training loop (stand-in for however you trained yours); returns accuracy."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x, y = dataset.load_images(), torch.as_tensor(dataset.labels)
    n_val = len(x) // 5
    perm = torch.randperm(len(x), generator=gen)
    val, tr = perm[:n_val], perm[n_val:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        model.train()
        for idx in tr[torch.randperm(len(tr), generator=gen)].split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[val]).argmax(1) == y[val]).float().mean().item()
        log.info("epoch %d: loss %.3f, held-out accuracy %.3f", epoch + 1, loss.item(), acc)
    return acc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="working directory (data, run, report)")
    p.add_argument("--n-images", type=int, default=800, help="images in the made-up dataset")
    p.add_argument("--epochs", type=int, default=3, help="classifier training epochs")
    p.add_argument("--preset", default="tiny", help="glance preset (tiny | fast | default)")
    p.add_argument("--n-explain", type=int, default=4, help="held-out images to explain")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    if args.n_images < 50:
        p.error(f"--n-images must be at least 50; got {args.n_images}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data, run = args.out / "data", args.out / "run"
    plan = [
        f"make {args.n_images} images + attributes.csv in {data}",
        f"train a torchvision resnet18 for {args.epochs} epochs",
        f"fit glance.Glance (preset {args.preset!r}, contexts size, brightness) into {run}",
        "evaluate faithfulness -> run/metrics.json (sealed into the run)",
        f"explain {args.n_explain} held-out images -> run/explanations/",
        f"write the report -> {args.out / 'report.html'}",
    ]
    if args.dry_run:
        print("\n".join(f"{i + 1}. {step}" for i, step in enumerate(plan)))
        return 0
    if run.exists():
        p.error(f"{run} exists; choose another --out")

    import torch

    import glance
    from glance.data import ImageFolderDataset
    from glance.report import write_report

    torch.manual_seed(0)  # a script may seed globally; the library never does
    make_dataset(data, args.n_images)
    dataset = ImageFolderDataset(data / "images", data / "attributes.csv")
    n_test = len(dataset) // 5
    train_set = dataset.subset(range(n_test, len(dataset)))
    test_set = dataset.subset(range(n_test))

    model = make_model(2)
    accuracy = train(model, train_set, args.epochs)
    log.info("classifier held-out accuracy %.3f", accuracy)

    # layer: where the features h(x) the concept encoder reads are taken (a dotted module name)
    est = glance.Glance(
        model, layer="net.layer4", contexts=["size", "brightness"], preset=args.preset
    )
    est.fit(train_set, out=run)

    # out=run seals the figures and the reconstruction/sample grids into the run
    metrics = est.evaluate(test_set, out=run)
    log.info(
        "fidelity %.3f, reconstruction fidelity %.3f",
        metrics["fidelity"],
        metrics["reconstruction_fidelity"],
    )

    explanation = est.explain(test_set.load_images(list(range(args.n_explain))))
    explanation.save(run / "explanations")  # inside the run: sealed into it
    report = write_report(run, args.out / "report.html")
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
