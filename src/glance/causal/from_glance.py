"""Causal discovery on a fitted :class:`glance.Glance`: the global explanation.

Nodes (DESIGN §2.3): every context (its observed value where the dataset knows it, else the
aligned concept's reading de-standardised to the context's units), every free concept
(``concept_<i>``, encoder posterior mean) and one output per class (``output_<class>``, the
surrogate head's logit for the encoded concepts). Contexts are in their raw units, so the SCM is
too (``scm_units_ = "raw"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glance._io import atomic_write_json
from glance.causal._checks import drop_degenerate
from glance.causal.bootstrap import bootstrap_discover
from glance.causal.discovery import discover
from glance.causal.graph import CausalGraph
from glance.causal.knowledge import BackgroundKnowledge
from glance.causal.scm import StructuralCausalModel
from glance.exceptions import ConfigError, DataValidationError, NotFittedError

__all__ = ["discovery_data", "discover_from_glance", "save_graph_artifacts", "load_graph_state"]

logger = logging.getLogger(__name__)


def discovery_data(
    glance: Any,
    dataset: Any,
    *,
    outputs: Sequence[str] | None = None,
    max_images: int | None = None,
    batch_size: int = 256,
    random_state: int = 0,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The data matrix of the causal graph: contexts, free concepts, outputs.

    Parameters
    ----------
    glance
        A fitted :class:`glance.Glance`.
    dataset
        An :class:`~glance.data.ImageDataset` (its attribute columns give observed contexts).
    outputs
        Classes whose logits become output nodes (default: every class).
    max_images
        Use a random subset of at most this many images (``None``: all).
    batch_size
        Images encoded at once.
    random_state
        Seed of the subset.

    Returns
    -------
    data : ndarray of shape (n_images, n_nodes)
    names, kinds : list of str
    """
    for attr in ("encode", "surrogate_logits", "concept_names_", "context_names_", "classes_"):
        if not hasattr(glance, attr):
            raise NotFittedError(f"discovery needs a fitted glance.Glance (missing {attr!r})")
    n = len(dataset)
    idx = np.arange(n)
    if max_images is not None and max_images < n:
        idx = np.sort(np.random.default_rng(random_state).choice(n, max_images, replace=False))
    contexts = list(glance.context_names_)
    m = len(contexts)
    classes = [str(c) for c in glance.classes_]
    wanted = classes if outputs is None else [str(c) for c in outputs]
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise ConfigError(f"'outputs' names unknown class(es) {unknown}; classes are {classes}")
    cls_idx = [classes.index(c) for c in wanted]
    z_parts, logit_parts = [], []
    for start in range(0, len(idx), batch_size):
        images = dataset.load_images(idx[start : start + batch_size])
        z = glance.encode(images)
        z_parts.append(np.asarray(z.detach().cpu().numpy(), dtype=np.float64))
        logits = glance.surrogate_logits(z)
        logit_parts.append(np.asarray(logits.detach().cpu().numpy(), dtype=np.float64))
    z = np.concatenate(z_parts) if z_parts else np.zeros((0, len(glance.concept_names_)))
    logits = np.concatenate(logit_parts) if logit_parts else np.zeros((0, len(classes)))
    ctx = _contexts(glance, dataset, idx, z[:, :m], contexts)
    x = np.column_stack([ctx, z[:, m:], logits[:, cls_idx]])
    names = contexts + list(glance.concept_names_[m:]) + [f"output_{c}" for c in wanted]
    kinds = ["context"] * m + ["concept"] * (z.shape[1] - m) + ["output"] * len(wanted)
    return x, names, kinds


def _contexts(
    glance: Any, dataset: Any, idx: np.ndarray, aligned: np.ndarray, contexts: list[str]
) -> np.ndarray:
    """Observed context values, else the aligned dims' reading in the context's units."""
    mean = np.asarray(glance.context_mean_, dtype=np.float64)
    std = np.asarray(glance.context_std_, dtype=np.float64)
    read = mean + std * aligned
    attr_names = list(getattr(dataset, "attribute_names", []) or [])
    attrs = getattr(dataset, "attributes", None)
    out = read.copy()
    for j, name in enumerate(contexts):
        if attrs is None or name not in attr_names:
            logger.info("context %r is not in the dataset; using the encoder's reading", name)
            continue
        col = np.asarray(attrs, dtype=np.float64)[idx, attr_names.index(name)]
        known = np.isfinite(col)
        out[known, j] = col[known]
        if not known.all():
            logger.info(
                "context %r: %d of %d values read from the encoder",
                name,
                int((~known).sum()),
                len(col),
            )
    return out


def discover_from_glance(
    glance: Any,
    dataset: Any,
    *,
    n_resamples: int = 20,
    threshold: float = 0.5,
    random_state: int = 0,
    n_jobs: int = 2,
    knowledge: BackgroundKnowledge | None = None,
    method: str = "pc",
    ci_test: str = "fisherz",
    alpha: float = 0.01,
    orientation: str = "conservative",
    mechanism: str = "linear",
    outputs: Sequence[str] | None = None,
    max_images: int | None = None,
    concept_policy: str = "error",
    out: str | os.PathLike[str] | None = None,
) -> CausalGraph:
    """Discover the causal graph of a fitted Glance and fit its SCM.

    Sets ``glance.graph_``, ``glance.scm_``, ``glance.scm_units_ = "raw"`` and
    ``glance.global_importance_`` (``{output: {node: effect}}``); with ``out`` writes the
    artefacts of :func:`save_graph_artifacts` there.

    Parameters
    ----------
    n_resamples
        Bootstrap resamples; 0 or 1 runs a single discovery (confidence 1 for every edge).
    threshold, n_jobs
        As in :func:`glance.causal.bootstrap_discover`.
    knowledge, method, ci_test, alpha, orientation
        As in :func:`glance.causal.discover`.
    mechanism
        SCM mechanism (``linear``, ``mlp``, ``gbm``).
    outputs, max_images
        As in :func:`discovery_data`.
    concept_policy
        ``"error"``: a constant, duplicated or collinear column stops discovery with a
        :class:`~glance.exceptions.DiscoveryError` naming it; ``"drop"``: free concepts at fault
        are dropped (logged, listed in ``meta["dropped_nodes"]``); contexts and outputs at fault
        still raise.

    Returns
    -------
    CausalGraph
        With ``meta["assumptions"]``: the orientations the SCM chose for undirected edges.
    """
    x, names, kinds = discovery_data(
        glance, dataset, outputs=outputs, max_images=max_images, random_state=random_state
    )
    if len(x) == 0:
        raise DataValidationError("discovery: the dataset has no images")
    if concept_policy not in ("error", "drop"):
        raise ConfigError(f"'concept_policy' must be 'error' or 'drop'; got {concept_policy!r}")
    dropped: list[dict[str, str]] = []
    if concept_policy == "drop":
        x, names, kinds, dropped = drop_degenerate(x, names, kinds)
        for d in dropped:
            logger.warning("dropped node %s: %s", d["node"], d["reason"])
    common = dict(
        method=method, ci_test=ci_test, alpha=alpha, knowledge=knowledge, orientation=orientation
    )
    if n_resamples >= 2:
        graph = bootstrap_discover(
            x,
            names,
            kinds,
            n_resamples=n_resamples,
            threshold=threshold,
            random_state=random_state,
            n_jobs=n_jobs,
            **common,
        )
    else:
        graph = discover(x, names, kinds, random_state=random_state, **common)
    scm = StructuralCausalModel(
        graph, mechanism=mechanism, knowledge=knowledge, random_state=random_state
    ).fit(x)
    graph.meta["assumptions"] = list(scm.assumptions_)
    graph.meta["data"] = {"source": str(getattr(dataset, "source", "")), "n_images": len(x)}
    if dropped:
        graph.meta["dropped_nodes"] = dropped
    importance = scm.global_importance()
    glance.graph_, glance.scm_ = graph, scm
    glance.scm_units_ = "raw"
    glance.global_importance_ = importance
    if out is not None:
        save_graph_artifacts(graph, out, importance=importance, scm=scm)
    return graph


def save_graph_artifacts(
    graph: CausalGraph,
    out: str | os.PathLike[str],
    *,
    importance: dict[str, dict[str, float]] | None = None,
    scm: StructuralCausalModel | None = None,
    title: str | None = None,
) -> Path:
    """Write ``graph.json``, ``graph.graphml``, ``graph.dot``, ``graph.png`` and, if given,
    ``global_importance.json`` and a linear or MLP SCM (``scm.json``, ``scm.safetensors``) into
    ``out`` (each atomically); return ``out``. A gradient-boosted SCM is not saved (it would need
    pickle); :func:`load_graph_state` then refits nothing and leaves ``scm_`` unset."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph.save_json(out / "graph.json")
    graph.to_graphml(out / "graph.graphml")
    graph.to_dot(out / "graph.dot")
    graph.save_png(out / "graph.png", title=title)
    if importance is not None:
        atomic_write_json(
            out / "global_importance.json",
            {
                "importance": importance,
                "definition": "average change of each output (logit units) under the "
                "counterfactual intervention do(node = node + 1 std) in the fitted SCM",
            },
        )
    if scm is not None and scm.mechanism in ("linear", "mlp"):
        scm.save(out)
    return out


def load_graph_state(glance: Any, graph_dir: str | os.PathLike[str]) -> Any:
    """Restore ``graph_``, ``scm_`` (linear and MLP SCMs), ``scm_units_`` and
    ``global_importance_`` on a loaded Glance from a directory written by
    :func:`save_graph_artifacts` (``RUN/graph``).

    Returns ``glance``. Missing files leave the matching attribute unset.
    """
    import json

    graph_dir = Path(graph_dir)
    if (graph_dir / "graph.json").is_file():
        glance.graph_ = CausalGraph.load_json(graph_dir / "graph.json")
    if (graph_dir / "scm.json").is_file():
        glance.scm_ = StructuralCausalModel.load(graph_dir)
        glance.scm_units_ = "raw"
    if (graph_dir / "global_importance.json").is_file():
        d = json.loads((graph_dir / "global_importance.json").read_text(encoding="utf-8"))
        glance.global_importance_ = d.get("importance", d)
    return glance
