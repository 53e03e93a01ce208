"""A user's own torchvision network at 64 px RGB through every command (issue 12, part 4).

The pendulum scene rendered by glance, a torchvision ResNet-18 and a MobileNetV3 (random
initialisation, a few training steps outside glance: the plumbing is under test, not the
figures), then from the shell fit → evaluate → graph → explain → report with ``--model`` /
``--weights``, and the explorer on the run from Python with an uploaded 64 px image. Every image
glance writes keeps the data's resolution and colour.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from glance.cli.main import main

MODULE = """
import torch, torchvision


class Normalised(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.in_channels, self.input_size = 3, (64, 64)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def resnet18():
    return Normalised(torchvision.models.resnet18(weights=None, num_classes=2))


def mobilenet_v3_small():
    return Normalised(torchvision.models.mobilenet_v3_small(weights=None, num_classes=2))
"""

LAYERS = {"resnet18": "net.layer4", "mobilenet_v3_small": "net.features"}
CONTEXTS = "pendulum_angle,light_angle,shadow_length,shadow_position"


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pendulum64") / "data"
    argv = ["-q", "data", "pendulum", "--out", str(out), "--n", "160", "--jobs", "1"]
    assert main(argv) == 0
    return out


def _train_outside(model: torch.nn.Module, data: Path, steps: int = 4) -> None:
    """A few steps of a plain PyTorch loop: the user's training, not glance's."""
    from glance.data import load_dataset

    ds = load_dataset(data, split="train")
    x, y = ds.load_images().float(), torch.as_tensor(np.asarray(ds.labels))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 16, (i + 1) * 16) % len(x)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("arch", sorted(LAYERS))
def test_own_torchvision_model_at_64px_through_every_command(
    arch: str, pendulum: Path, tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "usernets.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernets

    torch.manual_seed(0)
    model = getattr(usernets, arch)()
    _train_outside(model, pendulum)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    own = ["--model", f"usernets:{arch}", "--weights", str(weights)]
    run = tmp_path / "run"
    argv = ["-q", "fit", "--data", str(pendulum), *own, "--layer", LAYERS[arch]]
    argv += ["--contexts", CONTEXTS, "--preset", "tiny", "--out", str(run), "--threads", "2"]
    assert main(argv) == 0
    assert main(["-q", "evaluate", str(run), *own]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # the image-reading measures exist for a user's run at 64 px RGB
    assert set(metrics["readback_r2"]) | set(metrics.get("readback_r2_unmeasured", {})) == set(
        CONTEXTS.split(",")
    )
    assert 0.0 <= metrics["reconstruction_ssim"] <= 1.0
    assert main(["-q", "graph", str(run), "--bootstrap", "0", "--jobs", "1", *own]) == 0
    expl = tmp_path / "expl"
    argv = ["-q", "explain", str(run), "--data", str(pendulum), "--index", "0:2", *own]
    assert main([*argv, "--out", str(expl)]) == 0
    assert main(["-q", "report", str(run)]) == 0
    assert (run / "report.html").stat().st_size > 10_000
    # every picture of the data keeps its 64 px RGB: an input row and a reconstruction row
    pngs = [p for p in (*run.rglob("*.png"), *expl.rglob("*.png")) if "reconstruction" in p.name]
    assert pngs, "the run has no reconstruction grid"
    for p in pngs:
        with Image.open(p) as img:
            assert img.mode == "RGB" and min(img.size) >= 2 * 64, (p.name, img.size)

    from glance.serve import ExplorerBackend

    backend = ExplorerBackend.from_run(run, classifier=model, n_images=4)
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    image_id = backend.add_upload(buf.getvalue())
    factual = backend.counterfactual(image_id, {})["nodes"]["shadow_length"]
    out = backend.counterfactual(image_id, {"shadow_length": factual - 0.5})
    # moved down (within the node's fitted support, which may clip the move)
    assert out["nodes"]["shadow_length"] < factual
    assert sum(out["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    png = base64.b64decode(out["image"].split(",")[-1])
    with Image.open(io.BytesIO(png)) as img:
        assert img.mode == "RGB" and img.size == (64, 64)
