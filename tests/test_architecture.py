"""Arrows point down (docs/architecture.md, "Dependencies"): no import cycle between the presets
and the training configuration, and no module outside ``glance.causal`` reaches into its private
names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import glance

SRC = Path(glance.__file__).parent


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``glance`` import of a module (function-level ones included): (module, names)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return [(m, n) for m, n in out if m == "glance" or m.startswith("glance.")]


def test_training_config_never_imports_the_presets():
    modules = [m for m, _ in _imports(SRC / "training" / "config.py")]
    assert not [m for m in modules if m == "glance.presets"], modules
    assert ("glance.training.config", ["PRESETS"]) in _imports(SRC / "presets.py")


@pytest.mark.parametrize(
    "order",
    [("glance.presets", "glance.training.config"), ("glance.training.config", "glance.presets")],
)
def test_presets_and_config_import_in_either_order(order):
    code = (
        f"import {order[0]}, {order[1]}, sys\n"
        "from glance.training.config import PRESETS, resolve_config\n"
        "import glance.presets\n"
        "assert glance.presets.PRESETS is PRESETS\n"
        "assert resolve_config('tiny') == PRESETS.get('tiny')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_config_needs_no_import_of_glance_presets():
    code = (
        "import sys\n"
        "from glance.training.config import resolve_config\n"
        "resolve_config('fast')\n"
        "assert 'glance.presets' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_private_name_of_causal_is_imported_from_outside():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if (SRC / "causal") in path.parents:
            continue
        for module, names in _imports(path):
            if not module.startswith("glance.causal"):
                continue
            private_module = any(p.startswith("_") for p in module.split(".")[2:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                offenders.append(f"{path.relative_to(SRC)}: {module} {private_names}")
    assert not offenders


def _layers() -> dict[str, int]:
    """Package -> line of the layer table in docs/architecture.md ("Dependencies"), top = 0."""
    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = doc.split("## Dependencies", 1)[1].split("```", 2)[1]
    lines = [line.split() for line in block.strip().splitlines()]
    return {name: i for i, names in enumerate(lines) for name in names}


def test_imports_point_down_the_documented_layers():
    layer = _layers()
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue
        here = parts[0]
        for module, names in _imports(path):
            targets = [module] if module != "glance" else [f"glance.{n}" for n in names]
            for target in targets:
                there = target.split(".")[1]
                if there != here and layer[there] <= layer[here]:
                    upward.append(f"{'/'.join(parts)}.py -> {target}")
    assert not upward, "imports that do not point down docs/architecture.md's layers"
