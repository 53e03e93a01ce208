"""Helpers of the product tests: hand-made run directories that follow docs/architecture.md.

The fixture runs are small and synthetic on purpose (the report and explorer are tested on their
structure); tests against a real fitted run live in test_product_real_run.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from glance._io import write_manifest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CONTEXTS = ["thickness", "intensity"]
CONCEPTS = ["concept_0", "concept_1"]
OUTPUTS = [f"output_{k}" for k in range(3)]


def png_bytes(h: int, w: int, seed: int, channels: int = 1) -> bytes:
    """A random grey (or RGB) PNG of size h × w."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w) if channels == 1 else (h, w, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_fixture_run(
    root: Path,
    *,
    fidelity: float = 0.981,
    with_metrics: bool = True,
    with_graph: bool = True,
    with_explanations: bool = True,
    n_images: int = 3,
    metrics_extra: dict | None = None,
) -> Path:
    """Write a small run directory with the artefacts of every area, and its manifest
    (``metrics_extra`` updates the figures of ``metrics.json``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("preset: fast\nseed: 0\ncontexts: [thickness, intensity]\n")
    (root / "state.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "glance_version": "0.1.0",
                "torch_version": "2.x-fixture",
                "preset": "fast",
                "random_state": 0,
                "precision": "bf16",
                "contexts": CONTEXTS,
                "concept_names": CONTEXTS + CONCEPTS,
                "classes": ["0", "1", "2"],
            }
        )
    )
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "encoder.safetensors").write_bytes(b"fixture weights")
    (root / "reconstructions.png").write_bytes(png_bytes(56, 112, 1))
    (root / "samples.png").write_bytes(png_bytes(56, 112, 2))
    if with_metrics:
        metrics = {
            "fidelity": fidelity,
            "reconstruction_fidelity": 0.912,
            "sampled_fidelity": 0.874,
            "alignment_r2": {"thickness": 0.93, "intensity": 0.85},
            "generated_alignment": {"thickness": 0.88, "intensity": 0.79},
            "mig": 0.31,
            "dci": {"disentanglement": 0.6, "completeness": 0.55, "informativeness": 0.8},
            "fid": 12.5,
            "kid": 0.011,
            "fit_seconds": 240.0,
            "counterfactual_soundness": {
                "composition": {"null_image_l1": 0.0, "cycle_class_agreement": 0.95},
                "reversibility": {"mean_class_agreement": 0.97, "mean_image_l1": 0.01},
                "effectiveness": {"thickness": {"spearman": 0.88}, "intensity": None},
            },
        }
        metrics.update(metrics_extra or {})
        (root / "metrics.json").write_text(json.dumps(metrics))
    if with_graph:
        nodes = (
            [{"name": n, "kind": "context"} for n in CONTEXTS]
            + [{"name": n, "kind": "concept"} for n in CONCEPTS]
            + [{"name": n, "kind": "output"} for n in OUTPUTS]
        )
        edges = [
            {
                "source": "thickness",
                "target": "intensity",
                "directed": False,
                "confidence": 0.95,
                "orientation_confidence": 0.5,
                "effect": 0.8,
            },
            {
                "source": "thickness",
                "target": "output_1",
                "directed": True,
                "confidence": 0.9,
                "orientation_confidence": 1.0,
                "effect": -0.4,
            },
            {
                "source": "concept_0",
                "target": "output_2",
                "directed": True,
                "confidence": 0.7,
                "orientation_confidence": 1.0,
                "effect": 0.6,
            },
        ]
        (root / "graph").mkdir(exist_ok=True)
        (root / "graph" / "graph.json").write_text(json.dumps({"nodes": nodes, "edges": edges}))
        (root / "graph" / "graph.png").write_bytes(png_bytes(120, 200, 3, channels=3))
        gi = {
            o: {n: 0.1 * (i + 1) * (j + 1) for j, n in enumerate(CONTEXTS + CONCEPTS)}
            for i, o in enumerate(OUTPUTS)
        }
        (root / "graph" / "global_importance.json").write_text(json.dumps(gi))
    if with_explanations:
        (root / "explanations").mkdir(exist_ok=True)
        records = []
        nodes = CONTEXTS + CONCEPTS
        for i in range(n_images):
            # the picture names LocalExplanation.save_pngs writes
            for kind, (h, w) in {
                "summary": (80, 200),
                "traversal": (112, 140),
                "interaction": (90, 90),
            }.items():
                (root / "explanations" / f"{kind}_{i}.png").write_bytes(png_bytes(h, w, 10 * i))
            records.append(
                {
                    "index": i,
                    "prediction": i % 3,
                    "probability": 0.9,
                    "target": i % 3,
                    "reconstruction": {"prediction": i % 3, "probability": 0.8},
                    "importance": {
                        "thickness": 0.3 + i,
                        "intensity": 0.1,
                        "concept_0": 0.05,
                        "concept_1": 0.2,
                    },
                    "direct_importance": {
                        "thickness": 0.2,
                        "intensity": 0.1,
                        "concept_0": 0.05,
                        "concept_1": 0.2,
                    },
                    "interactions": [
                        {"nodes": ["thickness", "intensity"], "strength": 0.04, "values": []},
                        {"nodes": ["thickness", "concept_1"], "strength": 0.02, "values": []},
                    ],
                    "counterfactual": {
                        "target": (i + 1) % 3,
                        "nodes": {"thickness": 1.5},
                        "prediction": (i + 1) % 3,
                        "probability": 0.7,
                        "valid": True,
                        "proximity": 0.1,
                    },
                }
            )
        (root / "explanations" / "explanations.json").write_text(
            json.dumps(
                {
                    "nodes": nodes,
                    "node_kinds": ["context"] * 2 + ["concept"] * 2,
                    "classes": ["0", "1", "2"],
                    "deltas": [-2, -1, 0, 1, 2],
                    "explanations": records,
                }
            )
        )
    write_manifest(root, {"kind": "glance-run"})
    return root


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM) and shutil.which(CHROMIUM) is not None


TOY_GRAPH = {
    "nodes": [
        {"name": "size", "kind": "context"},
        {"name": "brightness", "kind": "context"},
        {"name": "concept_0", "kind": "concept"},
        {"name": "output_0", "kind": "output"},
        {"name": "output_1", "kind": "output"},
    ],
    "edges": [
        {
            "source": "size",
            "target": "brightness",
            "directed": True,
            "confidence": 1.0,
            "orientation_confidence": 1.0,
            "effect": 0.8,
        },
        {
            "source": "size",
            "target": "output_1",
            "directed": True,
            "confidence": 1.0,
            "orientation_confidence": 1.0,
            "effect": 0.9,
        },
    ],
}


def toy_backend(n_images: int = 12, **kwargs):
    """An explorer backend on glance's analytic toy world (size → brightness; size decides)."""
    import dataclasses

    from glance.explain.toy import make_twin, render, sample_concepts
    from glance.serve import ExplorerBackend

    z = sample_concepts(n_images, random_state=0)
    labels = [int(v > 0) for v in z[:, 0].tolist()]
    # as if the fit had measured its generator to draw half of an asked size change
    twin = dataclasses.replace(make_twin(), node_drawn=np.array([0.5, 1.0, np.nan]))
    return ExplorerBackend(
        twin,
        render(z),
        labels,
        graph=TOY_GRAPH,
        name="toy",
        image_source="toy world",
        **kwargs,
    )
