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
