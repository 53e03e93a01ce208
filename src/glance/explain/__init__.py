"""Local explanations of GLANCE: interventional importance, interactions, counterfactual images.

Public API
----------
- :func:`explain` / :class:`LocalExplainer`: the full local explanation (DESIGN §2.4).
- :class:`InterventionalImportance`, :class:`CounterfactualSearch`: the parts on their own.
- :class:`LocalExplanation`: the batched, frozen result with ``to_dict()``, ``plot()``, ``save()``.
- :class:`Twin`: the protocol the explainers run on (built from a fitted ``glance.Glance``).
- :mod:`glance.explain.soundness`: counterfactual soundness metrics.
- :mod:`glance.explain.randomisation`: the model-parameter randomisation sanity check.
- :mod:`glance.explain.deletion`: concept-level deletion / insertion faithfulness.
- :mod:`glance.explain.toy`: an analytic world where the right explanation is known.
- :func:`concept_atlas` / :class:`ConceptAtlas`: what every node is (strips, correlations, effect
  on the classifier, a description), and AttFind-style class attributes.
- ``EXPLAINERS``: the registry (``"local"``, ``"importance"``, ``"counterfactual"``).
"""

from __future__ import annotations

from glance.explain._twin import GlanceSCMAdapter, Twin, ZSpaceSCM
from glance.explain.atlas import ConceptAtlas, concept_atlas
from glance.explain.base import EXPLAINERS, Explainer
from glance.explain.counterfactual import CounterfactualSearch
from glance.explain.explanation import Counterfactuals, Interactions, LocalExplanation
from glance.explain.importance import InterventionalImportance
from glance.explain.local import LocalExplainer, explain

__all__ = [
    "EXPLAINERS",
    "ConceptAtlas",
    "Counterfactuals",
    "CounterfactualSearch",
    "Explainer",
    "GlanceSCMAdapter",
    "Interactions",
    "InterventionalImportance",
    "LocalExplainer",
    "LocalExplanation",
    "Twin",
    "ZSpaceSCM",
    "concept_atlas",
    "explain",
]
