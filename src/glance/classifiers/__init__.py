"""Classifiers: the architecture-neutral adapter, reference architectures, training, caching.

See ``docs/architecture.md``: :class:`ClassifierAdapter` turns any ``nn.Module`` classifier into
features at a layer plus logits without changing it; :func:`load_classifier` /
:func:`save_classifier` use safetensors + JSON; :func:`train_classifier` trains the registered
reference architectures; :func:`cache_features` memory-maps a dataset's features, and
:class:`FeatureRows` reads them back by rows; :mod:`glance.classifiers.features` computes a
fit's training features (in memory up to ``FEATURE_MEMORY_BUDGET``, else cached).
"""

from glance.classifiers.adapter import (
    ClassifierAdapter,
    Normalize,
    RepeatChannels,
    find_feature_layer,
)
from glance.classifiers.architectures import (
    ARCHITECTURES,
    ReferenceClassifier,
    SmallCNN,
    build_classifier,
)
from glance.classifiers.cache import (
    FeatureCache,
    FeatureRows,
    cache_features,
    load_feature_cache,
)
from glance.classifiers.recipes import RECIPES, Recipe, train_recipe
from glance.classifiers.serialization import load_classifier, read_classifier_meta, save_classifier
from glance.classifiers.targets import apply_target, parse_target, resolve_target
from glance.classifiers.training import evaluate_classifier, predict, train_classifier

__all__ = [
    "ARCHITECTURES",
    "ClassifierAdapter",
    "FeatureCache",
    "FeatureRows",
    "Normalize",
    "RECIPES",
    "Recipe",
    "ReferenceClassifier",
    "RepeatChannels",
    "SmallCNN",
    "apply_target",
    "build_classifier",
    "cache_features",
    "evaluate_classifier",
    "find_feature_layer",
    "load_classifier",
    "load_feature_cache",
    "parse_target",
    "predict",
    "read_classifier_meta",
    "resolve_target",
    "save_classifier",
    "train_classifier",
    "train_recipe",
]
