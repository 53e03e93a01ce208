"""glance: Global-to-Local Architecture-Neutral Concept-based Explanations."""

from glance._version import __version__
from glance.estimator import Glance, load

__all__ = ["__version__"]
__all__ += ["Glance", "load"]
from glance.classifiers import ClassifierAdapter, load_classifier  # noqa: E402

__all__ += ["ClassifierAdapter", "load_classifier"]
