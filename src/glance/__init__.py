"""glance: Global-to-Local Architecture-Neutral Concept-based Explanations."""

from glance._version import __version__

__all__ = ["__version__"]
