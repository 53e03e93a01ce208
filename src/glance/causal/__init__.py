"""Global explanation: causal graph discovery (causal-learn), bootstrap confidence and a fitted
structural causal model (interventions and counterfactuals).

Public API: :class:`CausalGraph`, :class:`Edge`, :class:`Endpoint`, :class:`BackgroundKnowledge`,
:func:`discover`, :func:`bootstrap_discover` (both configured by one :class:`DiscoveryOptions`),
:func:`dag_to_cpdag`, :class:`StructuralCausalModel`; on a fitted :class:`glance.Glance`:
:func:`discover_from_glance` (the global explanation, ``glance graph RUN``) returning a
:class:`GlobalExplanation`. The choices (methods, CI tests, orientation rules, SCM mechanisms)
are listed once, in :mod:`glance.causal.options`; the graph pictures are
:mod:`glance.causal.plot`. Scores against a known graph live in :mod:`glance.metrics.graph`.
"""

from __future__ import annotations

from glance.causal.bootstrap import bootstrap_discover
from glance.causal.discovery import dag_to_cpdag, discover
from glance.causal.from_glance import GlobalExplanation, discover_from_glance
from glance.causal.graph import CausalGraph, Edge, Endpoint, Node
from glance.causal.knowledge import BackgroundKnowledge
from glance.causal.options import DiscoveryOptions
from glance.causal.scm import StructuralCausalModel
from glance.causal.story import graph_story, readable_graph

__all__ = [
    "BackgroundKnowledge",
    "CausalGraph",
    "DiscoveryOptions",
    "Edge",
    "Endpoint",
    "Node",
    "StructuralCausalModel",
    "bootstrap_discover",
    "dag_to_cpdag",
    "discover",
    "discover_from_glance",
    "GlobalExplanation",
    "graph_story",
    "readable_graph",
]
