"""The output of a local explanation: :class:`LocalExplanation`, batched over images.

Every array has the images on its first axis (``N``). Nodes are the concept dimensions (context
nodes first, then ``concept_<i>``); ``V`` is their number, ``G`` the number of intervention sizes
``deltas`` (in units of each node's standard deviation, ``0`` included: the reconstruction).

``LocalExplanation.to_dict()`` layout (the contract the report and explorer read)::

    {"nodes": [...], "node_kinds": [...], "classes": [...], "deltas": [...],
     "interaction_deltas": [...], "meta": {...},
     "explanations": [                                    # one entry per image
        {"index": i, "prediction": k, "probability": p, "target": t,
         "reconstruction": {"prediction": k, "probability": p},
         "importance": {node: total effect}, "direct_importance": {node: direct effect},
         "curves": {node: {"total": [G], "direct": [G]}},  # signed Δp(target) per delta
         "interactions": [{"nodes": [u, v], "strength": s, "values": [[...]]}],
         "pair_grid": {"nodes": [u, v], "classes": [[G×G]], "probabilities": [[G×G]]},
         "traversal": {node: {"classes": [G], "probabilities": [G]}},
         "counterfactual": {"target": k, "nodes": {node: delta}, "prediction": k,
                            "probability": p, "valid": bool, "proximity": l1}}]}

Absent parts (an explainer that does not compute them) are ``null``. The significance test against
random concepts (``n_random > 0``, RELIABILITY c.13) adds keys; without it they are not written::

    {..., "n_random": R, "alpha": a,
     "significance_summary": {node: {"p_value": p, "difference": d, "direction": "above",
                                     "significant": bool, "fraction_significant": f,
                                     "n_random": R, "n_images": N}},
     "explanations": [{..., "significance": {node: p}, "significant": {node: bool}}]}
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glance._io import atomic_write_bytes, atomic_write_json, to_jsonable
from glance.exceptions import ConfigError

__all__ = ["LocalExplanation", "Counterfactuals", "Interactions"]

_SHARED = {"shared": True}


def _concat(items: Sequence[Any]) -> Any:
    """Concatenate batched dataclasses along the image axis (shared fields from the first)."""
    first = items[0]
    if first is None:
        return None
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        vals = [getattr(it, f.name) for it in items]
        if f.metadata.get("shared") or vals[0] is None:
            kw[f.name] = vals[0]
        elif dataclasses.is_dataclass(vals[0]):
            kw[f.name] = _concat(vals)
        elif isinstance(vals[0], tuple):
            kw[f.name] = tuple(x for v in vals for x in v)
        else:
            kw[f.name] = np.concatenate(vals, axis=0)
    return type(first)(**kw)


def _take(obj: Any, idx: np.ndarray) -> Any:
    if obj is None:
        return None
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.metadata.get("shared") or v is None:
            kw[f.name] = v
        elif dataclasses.is_dataclass(v):
            kw[f.name] = _take(v, idx)
        elif isinstance(v, tuple):
            kw[f.name] = tuple(v[i] for i in idx)
        else:
            kw[f.name] = v[idx]
    return type(obj)(**kw)


def _wilcoxon_two_sided(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diff`` against 0 (1 when all are 0)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0 or not np.all(np.isfinite(d)) or np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notes: the p-value stays valid
        p = float(wilcoxon(d, alternative="two-sided").pvalue)
    return p if np.isfinite(p) else 1.0


@dataclass(frozen=True)
class Counterfactuals:
    """Counterfactuals to a target class, one per image, verified with the real classifier.

    Attributes
    ----------
    target : ndarray of shape (N,)
        The class asked for (default: the classifier's second most likely class).
    nodes : tuple of dict
        Per image, the interventions made: node → shift in units of the node's std.
    prediction : ndarray of shape (N,)
        The real classifier's class on the generated counterfactual image.
    probability : ndarray of shape (N,)
        The real classifier's probability of ``target`` on that image.
    valid : ndarray of shape (N,)
        ``prediction == target``.
    proximity : ndarray of shape (N,)
        Mean absolute pixel difference between the counterfactual and the reconstruction.
    images : ndarray of shape (N, C, H, W), uint8, or None
        The counterfactual images.
    """

    target: np.ndarray
    nodes: tuple[dict[str, float], ...]
    prediction: np.ndarray
    probability: np.ndarray
    valid: np.ndarray
    proximity: np.ndarray
    images: np.ndarray | None = None

    def record(self, i: int) -> dict[str, Any]:
        """The JSON record of image ``i``."""
        return {
            "target": int(self.target[i]),
            "nodes": {k: float(v) for k, v in self.nodes[i].items()},
            "prediction": int(self.prediction[i]),
            "probability": float(self.probability[i]),
            "valid": bool(self.valid[i]),
            "proximity": float(self.proximity[i]),
        }


@dataclass(frozen=True)
class Interactions:
    """Pairwise interaction effects ``Δ(u,v) − Δ(u) − Δ(v)`` among the most important nodes.

    Attributes
    ----------
    pairs : ndarray of shape (N, P, 2)
        Node indices of each pair (``-1`` pads when fewer nodes exist).
    strength : ndarray of shape (N, P)
        Mean absolute interaction over the ``deltas × deltas`` grid.
    values : ndarray of shape (N, P, Gi, Gi)
        Signed interaction of ``p(target)`` at each pair of shifts.
    deltas : ndarray of shape (Gi,)
        Shifts used for the interactions (node std units, shared).
    grid_nodes : ndarray of shape (N, 2)
        The pair drawn as a 2-D image grid (the two most important nodes).
    grid_classes, grid_probabilities : ndarray of shape (N, G, G)
        Real classifier's class and its probability for each image of that grid, over the main
        ``deltas`` of the explanation (rows: first node, columns: second node).
    grid_images : ndarray of shape (N, G, G, C, H, W), uint8, or None
    """

    pairs: np.ndarray
    strength: np.ndarray
    values: np.ndarray
    deltas: np.ndarray = field(metadata=_SHARED)
    grid_nodes: np.ndarray
    grid_classes: np.ndarray
    grid_probabilities: np.ndarray
    grid_images: np.ndarray | None = None


@dataclass(frozen=True)
class LocalExplanation:
    """Local GLANCE explanations of ``N`` images (see the module docstring for ``to_dict``).

    Attributes
    ----------
    nodes, node_kinds, classes : tuple of str
        Node names and kinds (``context`` / ``concept``), class names.
    deltas : ndarray of shape (G,)
        Intervention sizes in units of each node's std (``0`` is the reconstruction).
    prediction : ndarray of shape (N,)
        Real classifier's class on the input image; ``probabilities`` of shape (N, K).
    reconstruction_prediction : ndarray of shape (N,)
        Real classifier's class on ``G(E(x))``; ``reconstruction_probabilities`` (N, K).
    target : ndarray of shape (N,)
        The class whose probability the importances track.
    importance, direct_importance : ndarray of shape (N, V)
        Mean ``|Δ p(target)|`` over the non-zero deltas: total effect (descendants follow the
        SCM) and direct effect (descendants held at their factual values).
    curves, direct_curves : ndarray of shape (N, V, G)
        Signed ``Δ p(target)`` against the reconstruction at each delta.
    has_descendants : ndarray of shape (V,)
        Whether a node has descendants among the nodes (otherwise direct = total).
    traversal_classes, traversal_probabilities : ndarray of shape (N, V, G)
        Real classifier's class, and its probability, on each image of the traversal grid
        (row = node, total effect, column = delta).
    interactions : Interactions or None
    counterfactual : Counterfactuals or None
    images, reconstructions : ndarray of shape (N, C, H, W), uint8
    traversal_images : ndarray of shape (N, V, G, C, H, W), uint8, or None
    random_importance : ndarray of shape (N, R), or None
        Importance (mean ``|Δ p(target)|``, same shifts) of ``R`` random concepts: unit directions
        in the standardised concept space, rendered without SCM propagation. ``None`` unless the
        explainer ran with ``n_random > 0``.
    significance : ndarray of shape (N, V), or None
        Per image, the one-sided empirical p-value of each node's (total) importance against the
        random concepts, ``(1 + #{random >= node}) / (R + 1)``.
    alpha : float or None
        Level of the test (shared): a node is significant in an image when ``p <= alpha``.
    meta : dict
        Method parameters and timings (shared).
    """

    nodes: tuple[str, ...] = field(metadata=_SHARED)
    node_kinds: tuple[str, ...] = field(metadata=_SHARED)
    classes: tuple[str, ...] = field(metadata=_SHARED)
    deltas: np.ndarray = field(metadata=_SHARED)
    prediction: np.ndarray
    probabilities: np.ndarray
    reconstruction_prediction: np.ndarray
    reconstruction_probabilities: np.ndarray
    target: np.ndarray
    importance: np.ndarray
    direct_importance: np.ndarray
    curves: np.ndarray
    direct_curves: np.ndarray
    has_descendants: np.ndarray = field(metadata=_SHARED)
    traversal_classes: np.ndarray
    traversal_probabilities: np.ndarray
    images: np.ndarray
    reconstructions: np.ndarray
    traversal_images: np.ndarray | None = None
    interactions: Interactions | None = None
    counterfactual: Counterfactuals | None = None
    random_importance: np.ndarray | None = None
    significance: np.ndarray | None = None
    alpha: float | None = field(default=None, metadata=_SHARED)
    meta: dict[str, Any] = field(default_factory=dict, metadata=_SHARED)

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def n_random(self) -> int:
        """Number of random concepts of the significance test (0: no test was run)."""
        return 0 if self.random_importance is None else int(self.random_importance.shape[1])

    def _alpha(self, alpha: float | None, caller: str) -> float:
        if self.significance is None or self.alpha is None:
            raise ConfigError(
                f"LocalExplanation.{caller}: no significance test was run; explain with "
                "n_random >= 19 (e.g. LocalExplainer(model).explain(x, n_random=50))"
            )
        a = self.alpha if alpha is None else alpha
        try:
            value = float(a)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(a, bool) or not 0.0 < value < 1.0:
            raise ConfigError(
                f"'alpha' of LocalExplanation.{caller} must be a number in (0, 1); got {a!r}"
            )
        return value

    def significant(self, alpha: float | None = None) -> np.ndarray:
        """Whether each node beats the random concepts in each image, (N, V) bool.

        ``p <= alpha`` (default: the ``alpha`` the explanation was made with); an empirical
        p-value ``(1 + b) / (R + 1)`` compared this way gives a test of exact level ``alpha``.
        """
        a = self._alpha(alpha, "significant")
        return np.asarray(self.significance) <= a

    def significance_summary(self, alpha: float | None = None) -> dict[str, dict[str, Any]]:
        """Dataset-level test per node across the images of the explanation.

        For each node, the differences ``importance − mean random importance`` (one per image)
        go through a two-sided Wilcoxon signed-rank test (``p_value``; 1 when every difference
        is 0). ``direction`` says on which side of the random concepts the node lies; a node is
        ``significant`` only when ``p_value <= alpha`` *and* it lies above them (a node
        significantly *less* important than random concepts is not an important node).
        ``fraction_significant`` is the share of images where the per-image test passes.
        """
        a = self._alpha(alpha, "significance_summary")
        diffs = self.importance - np.asarray(self.random_importance).mean(axis=1, keepdims=True)
        per_image = self.significant(a).mean(axis=0)
        out = {}
        for j, node in enumerate(self.nodes):
            p = _wilcoxon_two_sided(diffs[:, j])
            mean = float(diffs[:, j].mean())
            direction = "above" if mean > 0 else "below" if mean < 0 else "equal"
            out[node] = {
                "p_value": p,
                "difference": mean,
                "direction": direction,
                "significant": bool(p <= a and direction == "above"),
                "fraction_significant": float(per_image[j]),
                "n_random": self.n_random,
                "n_images": len(self),
            }
        return out

    @classmethod
    def concatenate(cls, parts: Sequence[LocalExplanation]) -> LocalExplanation:
        """Join explanations of consecutive mini-batches into one."""
        if not parts:
            raise ValueError("LocalExplanation.concatenate: 'parts' is empty")
        return _concat(list(parts))

    def select(self, indices: int | Sequence[int] | np.ndarray) -> LocalExplanation:
        """The explanations of a subset of the images, in the order given."""
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"LocalExplanation.select: index out of range for {len(self)} images")
        return _take(self, idx)

    def ranking(self, i: int, *, direct: bool = False) -> list[str]:
        """Nodes of image ``i`` from most to least important (stable for ties)."""
        imp = (self.direct_importance if direct else self.importance)[i]
        return [self.nodes[j] for j in np.argsort(-imp, kind="stable")]

    def record(self, i: int) -> dict[str, Any]:
        """The JSON record of image ``i`` (an element of ``to_dict()["explanations"]``)."""
        nodes = self.nodes
        rec: dict[str, Any] = {
            "index": i,
            "prediction": int(self.prediction[i]),
            "probability": float(self.probabilities[i, self.prediction[i]]),
            "target": int(self.target[i]),
            "reconstruction": {
                "prediction": int(self.reconstruction_prediction[i]),
                "probability": float(
                    self.reconstruction_probabilities[i, self.reconstruction_prediction[i]]
                ),
            },
            "importance": dict(zip(nodes, self.importance[i].tolist(), strict=True)),
            "direct_importance": dict(zip(nodes, self.direct_importance[i].tolist(), strict=True)),
            "curves": {
                n: {
                    "total": self.curves[i, j].tolist(),
                    "direct": self.direct_curves[i, j].tolist(),
                }
                for j, n in enumerate(nodes)
            },
            "traversal": {
                n: {
                    "classes": self.traversal_classes[i, j].tolist(),
                    "probabilities": self.traversal_probabilities[i, j].tolist(),
                }
                for j, n in enumerate(nodes)
            },
            "interactions": None,
            "pair_grid": None,
            "counterfactual": None,
        }
        ia = self.interactions
        if ia is not None:
            rec["interactions"] = [
                {"nodes": [nodes[u], nodes[v]], "strength": float(s), "values": vals.tolist()}
                for (u, v), s, vals in zip(ia.pairs[i], ia.strength[i], ia.values[i], strict=True)
                if u >= 0
            ]
            a, b = ia.grid_nodes[i]
            if a >= 0:
                rec["pair_grid"] = {
                    "nodes": [nodes[a], nodes[b]],
                    "classes": ia.grid_classes[i].tolist(),
                    "probabilities": ia.grid_probabilities[i].tolist(),
                }
        if self.counterfactual is not None:
            rec["counterfactual"] = self.counterfactual.record(i)
        if self.significance is not None:
            rec["significance"] = dict(zip(nodes, self.significance[i].tolist(), strict=True))
            rec["significant"] = dict(zip(nodes, self.significant()[i].tolist(), strict=True))
        return rec

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (layout in the module docstring); images excluded."""
        out: dict[str, Any] = {
            "nodes": list(self.nodes),
            "node_kinds": list(self.node_kinds),
            "classes": list(self.classes),
            "deltas": self.deltas,
            "interaction_deltas": (
                self.interactions.deltas if self.interactions is not None else None
            ),
            "meta": self.meta,
        }
        if self.significance is not None:
            out["n_random"] = self.n_random
            out["alpha"] = self.alpha
            out["significance_summary"] = self.significance_summary()
        out["explanations"] = [self.record(i) for i in range(len(self))]
        return to_jsonable(out)

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        pngs: bool = True,
        graph: Any = None,
        replace: bool = False,
    ) -> Path:
        """Write ``explanations.json`` (and, by default, the PNGs) into ``directory``.

        Parameters
        ----------
        directory
            Inside a run directory the explanations are sealed into the run as one transaction
            (explanations written there before are replaced as a whole). Elsewhere the files
            are written into ``directory``, each atomically.
        pngs
            Also write ``<kind>_<i>.png`` per image (:meth:`save_pngs`).
        graph
            A :class:`~glance.causal.CausalGraph`: with ``pngs``, also ``graph_<i>.png``, the
            graph coloured by image ``i``'s importances.
        replace
            Outside a run: build the folder under a temporary name and swap it in whole, so
            files of an earlier explanation in ``directory`` do not linger.

        Returns
        -------
        Path
            ``directory / "explanations.json"``.
        """
        from glance._io import atomic_directory
        from glance.run import Run, enclosing_run

        out = Path(directory)

        def write(folder: Path) -> None:
            atomic_write_json(folder / "explanations.json", self.to_dict())
            if pngs:
                self.save_pngs(folder)
                if graph is not None:
                    self.save_graph_pngs(graph, folder)

        outer = enclosing_run(out)
        if outer is not None:
            run = Run.open(outer.path, verify=False)
            run.write_dir(run.relative(out) or "", write)
        elif replace:
            with atomic_directory(out) as tmp:
                write(tmp)
        else:
            out.mkdir(parents=True, exist_ok=True)
            write(out)
        return out / "explanations.json"

    def save_graph_pngs(self, graph: Any, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``graph_<i>.png``: ``graph`` with its nodes coloured by image ``i``'s
        importances, for every image."""
        from glance.explain._graph_plot import save_graph_importance_png

        paths = [Path(directory) / f"graph_{i}.png" for i in range(len(self))]
        for i, path in enumerate(paths):
            save_graph_importance_png(graph, self, i, path)
        return paths

    def plot(self, i: int = 0, *, kind: str = "summary") -> Any:
        """A matplotlib figure for image ``i``.

        Parameters
        ----------
        i
            Image index.
        kind
            ``"summary"`` (input, reconstruction, counterfactual, importances, effect curves),
            ``"traversal"`` (one row per node), ``"interaction"`` (the 2-D pair grid) or
            ``"counterfactual"`` (before / after / difference).
        """
        from glance.explain import _plot

        return _plot.figure(self, i, kind)

    def save_pngs(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``<kind>_<i>.png`` per image for every figure kind the explanation supports."""
        import matplotlib.pyplot as plt

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for i in range(len(self)):
            for kind in ("summary", "traversal", "interaction", "counterfactual"):
                if kind == "traversal" and self.traversal_images is None:
                    continue
                if kind == "counterfactual" and (
                    self.counterfactual is None or self.counterfactual.images is None
                ):
                    continue
                if kind == "interaction" and (
                    self.interactions is None or self.interactions.grid_images is None
                ):
                    continue
                fig = self.plot(i, kind=kind)
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=100)
                plt.close(fig)
                path = out / f"{kind}_{i}.png"
                atomic_write_bytes(path, buf.getvalue())
                written.append(path)
        return written
