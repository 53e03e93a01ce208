"""glance: Global-to-Local Architecture-Neutral Concept-based Explanations.

The public names are imported lazily (PEP 562) so that ``import glance`` and worker processes
that only need a submodule (morphometrics, discovery) do not pay for torch-heavy imports.
"""

from __future__ import annotations

import importlib
from typing import Any

from glance._version import __version__

_LAZY = {
    "Glance": "glance.estimator",
    "load": "glance.estimator",
    "Run": "glance.run",
    "ClassifierAdapter": "glance.classifiers",
    "load_classifier": "glance.classifiers",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'glance' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
