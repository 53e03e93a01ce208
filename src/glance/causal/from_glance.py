"""Causal discovery on a fitted :class:`glance.Glance`: the global explanation.

:func:`discover_from_glance` returns a :class:`GlobalExplanation` (graph, SCM, global
importances); only :class:`glance.Glance` assigns it to its fitted state.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glance._io import atomic_write_json
from glance.causal._checks import drop_degenerate
from glance.causal.bootstrap import bootstrap_discover
from glance.causal.discovery import discover
from glance.causal.graph import CausalGraph
from glance.causal.knowledge import BackgroundKnowledge
from glance.causal.options import DiscoveryOptions, Mechanism
from glance.causal.scm import StructuralCausalModel
from glance.data.base import recorded
from glance.exceptions import ConfigError, DataValidationError, NotFittedError

__all__ = [
    "GlobalExplanation",
    "discovery_data",
    "discover_from_glance",
    "refit_scm",
    "save_graph_artifacts",
]

_GRAPH_JSON = "graph.json"
_IMPORTANCE_JSON = "global_importance.json"
_SCM_JSON = "scm.json"


@dataclass
class GlobalExplanation:
    """The global explanation of a fitted :class:`glance.Glance` (DESIGN §2.3).

    Attributes
    ----------
    graph : CausalGraph
        Contexts, free concepts and outputs, with bootstrap confidences and effect sizes.
    scm : StructuralCausalModel or None
        The structural causal model fitted on a DAG of the graph's class (``None`` when a
        gradient-boosted SCM was not saved with a run).
    importance : dict or None
        ``{output: {node: effect}}``: the average change of each output under
        ``do(node = node + 1 std)`` in the SCM.
    units : str
        The units the SCM's context nodes are in (``"raw"``: the contexts' own units).
    """

    graph: CausalGraph
    scm: StructuralCausalModel | None = None
    importance: dict[str, dict[str, float]] | None = None
    units: str = "raw"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the artefacts of :func:`save_graph_artifacts` into ``directory``.

        Inside a run directory they are sealed into the run as one transaction (a graph
        written before is replaced as a whole); elsewhere each file is written atomically.
        """
        from glance.run import Run, enclosing_run

        directory = Path(directory)
        outer = enclosing_run(directory)
        if outer is None:
            return save_graph_artifacts(
                self.graph, directory, importance=self.importance, scm=self.scm
            )
        run = Run.open(outer.path, verify=False)
        run.write_dir(
            run.relative(directory) or "",
            lambda d: save_graph_artifacts(self.graph, d, importance=self.importance, scm=self.scm),
        )
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> GlobalExplanation | None:
        """Read what :meth:`save` wrote to a folder outside a run (``None`` if no graph)."""
        import json

        directory = Path(directory)
        if not (directory / _GRAPH_JSON).is_file():
            return None
        importance = None
        if (directory / _IMPORTANCE_JSON).is_file():
            d = json.loads((directory / _IMPORTANCE_JSON).read_text(encoding="utf-8"))
            importance = d.get("importance", d)
        scm = None
        if (directory / _SCM_JSON).is_file():
            scm = StructuralCausalModel.load(directory)
        return cls(CausalGraph.load_json(directory / _GRAPH_JSON), scm, importance)

    @classmethod
    def from_run(cls, run: Any) -> GlobalExplanation | None:
        """The sealed graph of a :class:`glance.Run` (``None`` if it has none)."""
        graph_dir = run.graph_dir
        path = run.file(f"{graph_dir}/{_GRAPH_JSON}")
        if path is None:
            return None
        importance = run.read_json(f"{graph_dir}/{_IMPORTANCE_JSON}")
        if isinstance(importance, dict):
            importance = importance.get("importance", importance)
        scm = None
        if run.file(f"{graph_dir}/{_SCM_JSON}") is not None:
            scm = StructuralCausalModel.load(path.parent)
        return cls(CausalGraph.load_json(path), scm, importance)


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
    out = read.copy()
    for j, name in enumerate(contexts):
        column = recorded(dataset, name)
        if column is None:
            logger.info("context %r is not in the dataset; using the encoder's reading", name)
            continue
        col = column[idx]
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
    options: DiscoveryOptions | None = None,
    n_resamples: int = 20,
    threshold: float = 0.5,
    random_state: int = 0,
    n_jobs: int = 2,
    knowledge: BackgroundKnowledge | None = None,
    mechanism: Mechanism = "linear",
    outputs: Sequence[str] | None = None,
    max_images: int | None = None,
    concept_policy: str = "error",
    **overrides: Any,
) -> GlobalExplanation:
    """Discover the causal graph of a fitted Glance and fit its SCM.

    Returns a value; :meth:`glance.Glance.global_explanation` is what assigns it (``graph_``,
    ``scm_``, ``scm_units_``, ``global_importance_``) and saves it.

    Parameters
    ----------
    options, knowledge, **overrides
        As in :func:`glance.causal.discover`: the
        :class:`~glance.causal.options.DiscoveryOptions` (method, CI test, ``alpha``,
        orientation, ``max_k``, ``kci_subsample``), or its fields as keyword arguments.
    n_resamples
        Bootstrap resamples; 0 or 1 runs a single discovery (confidence 1 for every edge).
    threshold, n_jobs
        As in :func:`glance.causal.bootstrap_discover`.
    mechanism
        SCM mechanism (one of :data:`~glance.causal.options.MECHANISMS`).
    outputs, max_images
        As in :func:`discovery_data`.
    concept_policy
        ``"error"``: a constant, duplicated or collinear column stops discovery with a
        :class:`~glance.exceptions.DiscoveryError` naming it; ``"drop"``: free concepts at fault
        are dropped (logged, listed in ``meta["dropped_nodes"]``); contexts and outputs at fault
        still raise.

    Returns
    -------
    GlobalExplanation
        Its graph has ``meta["assumptions"]``: the orientations the SCM chose for undirected
        edges, and ``meta["data"]``: the data it was discovered from.
    """
    opts = DiscoveryOptions.resolve(options, overrides, "discover_from_glance")
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
    common = dict(options=opts, knowledge=knowledge)
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
    graph.meta["scm"] = {"mechanism": mechanism, "random_state": random_state}
    graph.meta["data"] = _data_meta(dataset, len(x))
    if dropped:
        graph.meta["dropped_nodes"] = dropped
    return GlobalExplanation(graph, scm, scm.global_importance(), "raw")


def refit_scm(
    glance: Any, graph: CausalGraph, dataset: Any, *, max_images: int = 2000
) -> GlobalExplanation:
    """Fit the SCM of an existing ``graph`` again on ``dataset`` (same discovery data, the
    mechanism and seed recorded in ``graph.meta["scm"]``), for a run whose SCM was not saved
    (a gradient-boosted one needs pickle)."""
    x, names, _ = discovery_data(glance, dataset, max_images=max_images, random_state=0)
    recorded = graph.meta.get("scm", {}) if isinstance(graph.meta, dict) else {}
    scm = StructuralCausalModel(
        graph,
        mechanism=recorded.get("mechanism", "linear"),
        random_state=recorded.get("random_state", 0),
    ).fit({n: x[:, i] for i, n in enumerate(names)})
    return GlobalExplanation(graph, scm, scm.global_importance(), "raw")


def _data_meta(dataset: Any, n_images: int) -> dict[str, Any]:
    """What the graph was discovered from (source, images used, fingerprint)."""
    from glance.training.checkpoint import dataset_fingerprint

    meta: dict[str, Any] = {"source": str(getattr(dataset, "source", "")), "n_images": n_images}
    try:
        meta["fingerprint"] = dataset_fingerprint(dataset)
    except (AttributeError, TypeError):  # a duck-typed dataset without images to hash
        pass
    return meta


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
    pickle); a loaded :class:`GlobalExplanation` then has no ``scm``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph.save_json(out / _GRAPH_JSON)
    graph.to_graphml(out / "graph.graphml")
    graph.to_dot(out / "graph.dot")
    graph.save_png(out / "graph.png", title=title)
    if importance is not None:
        atomic_write_json(
            out / _IMPORTANCE_JSON,
            {
                "importance": importance,
                "definition": "average change of each output (logit units) under the "
                "counterfactual intervention do(node = node + 1 std) in the fitted SCM",
            },
        )
    if scm is not None and scm.mechanism in ("linear", "mlp"):
        scm.save(out)
    return out
