"""Helpers shared by the checks of :mod:`~glance.explain.soundness`,
:mod:`~glance.explain.randomisation` and :mod:`~glance.explain.deletion`."""

from __future__ import annotations

from typing import Any

from glance.explain._twin import Twin

__all__ = ["as_twin"]


def as_twin(model: Any) -> Twin:
    """``model`` itself when it is a :class:`Twin`, else the twin of a fitted ``glance.Glance``."""
    return model if isinstance(model, Twin) else Twin.from_glance(model)
