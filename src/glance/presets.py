"""Registered configurations (presets) of a GLANCE fit.

=========  ==========================================================================
``tiny``   tests and smoke runs: a few steps, narrow networks (seconds)
``fast``   the demo: embedded Morpho-MNIST in at most 5 minutes on a laptop CPU
``default`` quality on CPU (at most 20 minutes on the embedded Morpho-MNIST)
``paper``  GPU runs at 64–256 px (faces): wide networks, long schedules
=========  ==========================================================================

Resolution and channel count are not part of a preset: they come from the data.

This module is the public name of the registry; the presets themselves are defined in
:mod:`glance.training.config`, next to the dataclasses they are made of and to
:func:`~glance.training.config.resolve_config`, which reads them. The dependency points one way:
this module imports :mod:`glance.training.config`; nothing in :mod:`glance.training` imports
this module.
"""

from __future__ import annotations

from glance.training.config import PRESETS

__all__ = ["PRESETS"]
