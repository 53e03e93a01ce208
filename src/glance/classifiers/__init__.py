"""Classifiers: the architecture-neutral adapter, reference architectures, training, caching."""

from glance.classifiers.adapter import (
    ClassifierAdapter,
    Normalize,
    RepeatChannels,
    find_feature_layer,
)

__all__ = ["ClassifierAdapter", "Normalize", "RepeatChannels", "find_feature_layer"]
