"""Global explanation: causal graph discovery (causal-learn), bootstrap confidence and a fitted
structural causal model (interventions and counterfactuals).

Public API: :class:`CausalGraph`, :class:`Edge`, :class:`Endpoint`, :class:`BackgroundKnowledge`,
:func:`discover`, :func:`bootstrap_discover`, :class:`StructuralCausalModel`; on a fitted
:class:`glance.Glance`: :func:`discover_from_glance` (the global explanation, ``glance graph
RUN``) returning a :class:`GlobalExplanation`. Scores against a known graph live in
:mod:`glance.metrics.graph`.
"""

from __future__ import annotations

from glance.causal.bootstrap import bootstrap_discover
from glance.causal.discovery import discover
from glance.causal.from_glance import GlobalExplanation, discover_from_glance
from glance.causal.graph import CausalGraph, Edge, Endpoint, Node
from glance.causal.knowledge import BackgroundKnowledge
from glance.causal.scm import StructuralCausalModel

__all__ = [
    "BackgroundKnowledge",
    "CausalGraph",
    "Edge",
    "Endpoint",
    "Node",
    "StructuralCausalModel",
    "bootstrap_discover",
    "discover",
    "discover_from_glance",
    "GlobalExplanation",
]
