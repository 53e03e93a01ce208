"""The small protocol the explainers run on: a *twin* of the classifier in concept space.

A :class:`Twin` bundles what a local explanation needs and nothing else: ``encode`` (images →
concepts ``z``), ``generate`` (``z`` → images), ``classify`` (the *real* classifier's logits), one
node name per ``z`` dimension, the scale of one "standard deviation" per node, and an optional
structural causal model working in ``z`` units. Keeping the explainers on this protocol (rather than
on :class:`glance.Glance` directly) lets them be proved correct on an analytic toy world
(:mod:`glance.explain.toy`) where the truth is known, and then reused unchanged on a fitted run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from glance.exceptions import ConfigError, NotFittedError

__all__ = ["Twin", "ZSpaceSCM", "GlanceSCMAdapter"]

logger = logging.getLogger(__name__)

#: Tail mass left out of each node's support on either side (``Twin.node_range``).
SUPPORT_QUANTILE = 0.005


@runtime_checkable
class ZSpaceSCM(Protocol):
    """A structural causal model over the concept dimensions, in ``z`` units.

    ``counterfactual`` abducts the exogenous residuals of each row of ``z``, applies the hard
    interventions (dimension index → new value per row) and propagates them to the descendants;
    every other dimension keeps its factual value. ``descendants(j)`` lists the ``z`` dimensions
    downstream of dimension ``j`` (``j`` itself excluded).
    """

    def counterfactual(
        self, z: np.ndarray, interventions: Mapping[int, np.ndarray]
    ) -> np.ndarray: ...

    def descendants(self, j: int) -> frozenset[int]: ...


@dataclass(frozen=True, eq=False)
class Twin:
    """Everything a local explanation needs about a fitted GLANCE model.

    Parameters
    ----------
    encode
        ``images (N, C, H, W) in [0, 1] -> z (N, d)``: the concept encoder (posterior mean).
    generate
        ``z (N, d) -> images (N, C, H, W) in [0, 1]``; must be deterministic.
    classify
        ``images -> logits (N, K)``: the *real* classifier. Every generated image is judged by it.
    nodes
        One node name per ``z`` dimension (context names first, then ``concept_<i>``).
    classes
        Class names, length ``K``.
    node_kinds
        ``"context"`` or ``"concept"`` per node; default: all ``"concept"``.
    node_std
        Size of one standard deviation of each node in ``z`` units (interventions are given in
        these units); default: ones (contexts are standardised).
    scm
        A :class:`ZSpaceSCM`; ``None`` means no causal graph is known, so total effects equal
        direct effects.
    node_range
        ``(d, 2)`` support of each node in ``z`` units, ``[low, high]``: an intervention is clipped
        to it, so the generator is never asked to render a node value the data never showed
        (there it extrapolates, and the classifier would judge artefacts). ``None``: unbounded.
    node_levels
        Per node, the sorted levels of a discrete node in ``z`` units (e.g. a 0/1 context), or
        ``None`` for a continuous one. A discrete node is only ever set to one of its levels:
        a shift of ``δ`` moves it ``max(1, round(|δ|))`` levels up or down from the level nearest
        its value, stopping at the last level (see :meth:`shift`).
    node_render
        ``(d, d)``: how the change of an intervened node is drawn. Row ``j`` is the move of
        every dim per unit change of node ``j``, so that the generated image changes ``j``'s
        context by what was asked and the other contexts not at all
        (:mod:`glance.explain.calibration`). After an intervention (and the SCM's propagation)
        the intervened nodes' own change ``Δ`` is rendered as ``Δ @ node_render``; what the
        SCM moved downstream is added as it is, drawn as the twin draws it. The SCM, the
        shifts, the support and :meth:`moves` keep working in the nodes' own units. ``None``:
        the identity.
    node_drawn
        ``(d,)``: the fraction of an asked change of each node that the generated image shows,
        as the fit measured it (:meth:`glance.Glance.calibrate_interventions`; through
        ``node_render`` where there is one), NaN where not measured. Explanations report it, so
        that a reader knows which bars rest on an intervention drawn only in part. ``None``:
        not measured.
    """

    encode: Callable[[torch.Tensor], torch.Tensor]
    generate: Callable[[torch.Tensor], torch.Tensor]
    classify: Callable[[torch.Tensor], torch.Tensor]
    nodes: tuple[str, ...]
    classes: tuple[str, ...]
    node_kinds: tuple[str, ...] | None = None
    node_std: np.ndarray | None = None
    scm: ZSpaceSCM | None = None
    node_range: np.ndarray | None = None
    node_levels: tuple[np.ndarray | None, ...] | None = None
    node_render: np.ndarray | None = None
    node_drawn: np.ndarray | None = None
    _descendants: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        d = len(self.nodes)
        if d == 0:
            raise ConfigError("Twin: 'nodes' must name at least one concept dimension; got none")
        object.__setattr__(self, "nodes", tuple(str(n) for n in self.nodes))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        kinds = self.node_kinds if self.node_kinds is not None else ("concept",) * d
        if len(kinds) != d:
            raise ConfigError(f"Twin: 'node_kinds' must have {d} entries; got {len(kinds)}")
        object.__setattr__(self, "node_kinds", tuple(kinds))
        std = np.ones(d) if self.node_std is None else np.asarray(self.node_std, dtype=np.float64)
        if std.shape != (d,) or not np.all(np.isfinite(std)) or np.any(std <= 0):
            raise ConfigError(
                f"Twin: 'node_std' must be {d} positive finite values; got {np.asarray(std)}"
            )
        object.__setattr__(self, "node_std", std)
        if self.node_range is not None:
            rng = np.asarray(self.node_range, dtype=np.float64)
            if rng.shape != (d, 2) or not np.all(np.isfinite(rng)) or np.any(rng[:, 0] > rng[:, 1]):
                raise ConfigError(
                    f"Twin: 'node_range' must be {d} finite [low, high] rows with low <= high; "
                    f"got {np.asarray(self.node_range)}"
                )
            object.__setattr__(self, "node_range", rng)
        if self.node_levels is not None:
            if len(self.node_levels) != d:
                raise ConfigError(
                    f"Twin: 'node_levels' must have {d} entries; got {len(self.node_levels)}"
                )
            levels = []
            for name, lv in zip(self.nodes, self.node_levels, strict=True):
                if lv is None:
                    levels.append(None)
                    continue
                arr = np.unique(np.asarray(lv, dtype=np.float64).reshape(-1))
                if arr.size < 2 or not np.all(np.isfinite(arr)):
                    raise ConfigError(
                        f"Twin: 'node_levels' of node {name!r} must be >= 2 finite values or "
                        f"None; got {lv!r}"
                    )
                levels.append(arr)
            object.__setattr__(self, "node_levels", tuple(levels))
        if self.node_render is not None:
            render = np.asarray(self.node_render, dtype=np.float64)
            if render.shape != (d, d) or not np.all(np.isfinite(render)):
                raise ConfigError(
                    f"Twin: 'node_render' must be a finite ({d}, {d}) matrix; got shape "
                    f"{render.shape}"
                )
            object.__setattr__(self, "node_render", render.copy())
        if self.node_drawn is not None:
            drawn = np.asarray(self.node_drawn, dtype=np.float64)
            if drawn.shape != (d,):
                raise ConfigError(
                    f"Twin: 'node_drawn' must hold one value per node ({d}); got shape "
                    f"{drawn.shape}"
                )
            object.__setattr__(self, "node_drawn", drawn.copy())
        if self.scm is not None and not isinstance(self.scm, ZSpaceSCM):
            raise ConfigError(
                "Twin: 'scm' must provide counterfactual(z, interventions) and descendants(j); "
                f"got {type(self.scm).__name__}"
            )
        desc = {
            j: (self.scm.descendants(j) if self.scm is not None else frozenset()) for j in range(d)
        }
        object.__setattr__(self, "_descendants", desc)

    @property
    def n_nodes(self) -> int:
        """Number of concept dimensions ``d``."""
        return len(self.nodes)

    def descendants(self, j: int) -> frozenset[int]:
        """``z`` dimensions downstream of dimension ``j`` in the SCM (empty without an SCM)."""
        return self._descendants[j]

    def intervene(
        self, z: torch.Tensor, interventions: Mapping[int, torch.Tensor], *, total: bool = True
    ) -> torch.Tensor:
        """Return ``z'`` after setting dimensions to new values, one value per row.

        With ``total=True`` the SCM propagates the change to the descendants (residuals of each
        row kept: a counterfactual); with ``total=False`` (or no SCM) only the named dimensions
        change, which gives direct effects. With a ``node_render`` the intervened nodes' own
        change is then drawn through it and the descendants' change is kept as it is (see the
        class docstring), so the returned ``z'`` is what the generator is given; the intervened
        values themselves are :meth:`clip_node`'s.
        """
        out = z.clone()
        if not interventions:
            return out
        interventions = {j: self.clip_node(j, v, z[:, j]) for j, v in interventions.items()}
        out = self._intervened(z, out, interventions, total)
        if self.node_render is None:
            return out
        render = torch.as_tensor(self.node_render, dtype=z.dtype, device=z.device)
        # Only the intervened nodes' own change is calibrated. Drawing what the SCM moved
        # downstream through the calibration too amplified the readers' errors on contexts tied
        # in the data (a shape's hue, drawn 2.6x further, made shape's total effect 2.7x the
        # renderer's) and lowered the pendulum's agreement of total effects (faithfulness.md).
        change = out - z
        own = torch.zeros_like(change)
        idx = list(interventions)
        own[:, idx] = change[:, idx]
        return self.clip(z + own @ render + (change - own), origin=out)

    def _intervened(
        self,
        z: torch.Tensor,
        out: torch.Tensor,
        interventions: Mapping[int, torch.Tensor],
        total: bool,
    ) -> torch.Tensor:
        if total and self.scm is not None and any(self.descendants(j) for j in interventions):
            vals = {
                j: v.detach().cpu().numpy().astype(np.float64) for j, v in interventions.items()
            }
            cf = self.scm.counterfactual(z.detach().cpu().numpy().astype(np.float64), vals)
            out = torch.as_tensor(np.asarray(cf), dtype=z.dtype, device=z.device)
            # The SCM must honour the intervention exactly; re-set it to remove float drift.
        for j, v in interventions.items():
            out[:, j] = v.to(dtype=z.dtype, device=z.device)
        return out

    def _levels(self, j: int) -> np.ndarray | None:
        return None if self.node_levels is None else self.node_levels[j]

    def _level_index(self, j: int, values: torch.Tensor) -> torch.Tensor:
        lv = torch.as_tensor(self._levels(j), dtype=values.dtype, device=values.device)
        return (values[:, None] - lv[None]).abs().argmin(dim=1)

    def clip_node(
        self, j: int, values: torch.Tensor, origin: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``values`` of node ``j`` made admissible: snapped to the nearest level of a discrete
        node, else clipped to its support (unchanged without ``node_range``).

        ``origin`` (the rows' current values) widens each row's support to include it, so an
        image whose node already lies outside the support is never moved the other way: a
        shift further out stays where it is instead of being pulled back across the range.
        """
        lv = self._levels(j)
        if lv is not None:
            return torch.as_tensor(lv, dtype=values.dtype, device=values.device)[
                self._level_index(j, values)
            ]
        if self.node_range is None:
            return values
        lo, hi = float(self.node_range[j, 0]), float(self.node_range[j, 1])
        if origin is None:
            return values.clamp(lo, hi)
        origin = origin.to(values.dtype)
        return torch.minimum(torch.maximum(values, origin.clamp(max=lo)), origin.clamp(min=hi))

    def shift(self, j: int, values: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Node ``j`` moved by ``deltas`` (std units, one per row) from ``values``.

        Continuous: ``values + δ · node_std`` (clipped to the support when intervened on).
        Discrete: ``max(1, round(|δ|))`` levels in the direction of ``δ`` from the level nearest
        ``values``, stopping at the first / last level.
        """
        lv = self._levels(j)
        if lv is None:
            return values + deltas.to(values.dtype) * float(self.node_std[j])
        steps = torch.sign(deltas) * torch.clamp(torch.round(deltas.abs()), min=1)
        idx = (self._level_index(j, values) + steps.long()).clamp(0, len(lv) - 1)
        return torch.as_tensor(lv, dtype=values.dtype, device=values.device)[idx]

    def moves(self, j: int, values: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """Whether setting node ``j`` from ``values`` to ``new`` is an intervention at all (the
        admissible value differs: another level, or a shift not clipped away), per row."""
        if self._levels(j) is not None:
            return self._level_index(j, values) != self._level_index(j, new)
        return (self.clip_node(j, new, values) - values).abs() > 1e-6 * float(self.node_std[j])

    def clip(self, z: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
        """Every column of ``z`` (N, d) clipped to its node's support (widened per row to
        include ``origin``, the rows' values before the change; see :meth:`clip_node`)."""
        if self.node_range is None:
            return z
        lo = torch.as_tensor(self.node_range[:, 0], dtype=z.dtype, device=z.device)
        hi = torch.as_tensor(self.node_range[:, 1], dtype=z.dtype, device=z.device)
        if origin is not None:
            lo, hi = torch.minimum(lo, origin), torch.maximum(hi, origin)
        return torch.maximum(torch.minimum(z, hi), lo)

    @classmethod
    def from_glance(
        cls, model: Any, *, n_std_samples: int = 4096, calibrated: bool = False
    ) -> Twin:
        """Build the twin of a fitted :class:`glance.Glance` (after causal discovery if any).

        A context node's standard deviation is how far one standard deviation of the context
        moves its aligned dimension in the training data (the model's ``context_scale_``:
        about 1 where the encoder reads the context, near 0 where it cannot, so an intervention
        on a context the twin does not hold moves next to nothing instead of whatever else that
        dimension picked up; 1 for models without it). Free concepts use the spread of concepts
        sampled from the fitted aggregate posterior when the model can sample them, else 1.
        The support of every node (``node_range``) is the central 99% of the same samples, so
        interventions stay where the generator was trained.

        ``calibrated=True`` (opt-in: measured, not yet better on every benchmark; see
        docs/faithfulness.md) uses what the model measured its generator to draw
        (``context_readback_``, from :meth:`glance.Glance.calibrate_interventions`): an
        intervened context's change is drawn so that the image changes it by what was asked and
        the other contexts not at all (``node_render``; :mod:`glance.explain.calibration`). A model
        without the measurement gives the uncalibrated twin either way.
        """
        for attr in ("encode", "generate", "classify", "concept_names_"):
            if not hasattr(model, attr):
                raise NotFittedError(
                    f"explain needs a fitted glance.Glance (missing {attr!r}); call fit() or "
                    "glance.load(RUN) first"
                )
        nodes = tuple(model.concept_names_)
        m = len(getattr(model, "context_names_", ()) or ())
        kinds = ("context",) * m + ("concept",) * (len(nodes) - m)
        std = np.ones(len(nodes))
        scale = getattr(model, "context_scale_", None)
        if scale is not None and m:
            scale = np.asarray(scale, dtype=np.float64).reshape(-1)
            if scale.shape != (m,) or not np.all(np.isfinite(scale) & (scale > 0)):
                raise ConfigError(
                    f"Twin: the model's 'context_scale_' must be {m} positive finite values; "
                    f"got {scale}"
                )
            std[:m] = scale
        node_range = None
        if hasattr(model, "sample_concepts"):
            try:
                zs = np.asarray(_to_numpy(model.sample_concepts(n_std_samples, random_state=0)))
                s = zs.std(axis=0)
                ok = np.isfinite(s) & (s > 1e-6)
                std[m:] = np.where(ok[m:], s[m:], 1.0)
                lo, hi = np.quantile(zs, [SUPPORT_QUANTILE, 1 - SUPPORT_QUANTILE], axis=0)
                if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi):
                    node_range = np.stack([lo, hi], axis=1)
            except Exception as exc:  # sampling is optional; fall back to the unit prior
                logger.warning("could not sample concepts for node scales (%s); using 1", exc)
        node_levels = None
        raw_levels = getattr(model, "context_levels_", None)
        if raw_levels and any(lv is not None for lv in raw_levels):
            mean = np.asarray(model.context_mean_, dtype=np.float64)
            sd = np.asarray(model.context_std_, dtype=np.float64)
            node_levels = tuple(
                [
                    None if lv is None else (np.asarray(lv, dtype=np.float64) - mean[k]) / sd[k]
                    for k, lv in enumerate(raw_levels)
                ]
                + [None] * (len(nodes) - m)
            )
        scm_obj = getattr(model, "scm_", None)
        scm = None
        if scm_obj is not None:
            offset, scale = _scm_units(model, scm_obj, nodes, m)
            scm = GlanceSCMAdapter(scm_obj, nodes, offset, scale)
        classes = tuple(getattr(model, "classes_", ()) or ())
        if not classes:
            raise NotFittedError("explain: the model has no 'classes_'; fit it first")
        render, drawn = None, None
        readback = getattr(model, "context_readback_", None)
        if readback is not None and m:
            from glance.explain.calibration import drawn_fractions

            if calibrated:  # validates the measurement's shape
                render = _render_map(model, readback, std, scm, m)
            if np.shape(readback) == (m, m):
                drawn = np.full(len(nodes), np.nan)
                drawn[:m] = drawn_fractions(readback, render, std)
        return cls(
            encode=model.encode,
            generate=model.generate,
            classify=model.classify,
            nodes=nodes,
            classes=classes,
            node_kinds=kinds,
            node_std=std,
            scm=scm,
            node_range=node_range,
            node_levels=node_levels,
            node_render=render,
            node_drawn=drawn,
        )


def _render_map(model: Any, readback: Any, std: np.ndarray, scm: Any, m: int) -> np.ndarray:
    """``node_render`` from the model's read-back matrix and the graph (identity for the free
    concepts and for contexts not calibrated)."""
    from glance.explain.calibration import intervention_basis

    a = np.asarray(readback, dtype=np.float64)
    tied = np.asarray(model.context_tied_, dtype=bool)
    if a.shape != (m, m) or tied.shape != (m, m):
        raise ConfigError(
            f"Twin: the model's 'context_readback_' and 'context_tied_' must be ({m}, {m}); "
            f"got {a.shape} and {tied.shape}"
        )

    def below(j: int) -> set[int]:
        return {k for k in (scm.descendants(j) if scm is not None else ()) if k < m}

    step, corr = intervention_basis(a, tied, below)
    render = np.eye(len(std))
    # per z unit of context j (one std asked = std[j] z units): j moves step[j]; k moves
    # corr[j, k] of its own steps per std of j asked, i.e. corr[j, k] * std[k] / std[j]
    render[:m, :m] += np.diag(step - 1.0) + corr * std[None, :m] / std[:m, None]
    return render


def _scm_units(model: Any, scm: Any, nodes: Sequence[str], m: int) -> tuple[np.ndarray, ...]:
    """Affine map ``z → SCM units`` per node.

    Concept nodes are in ``z`` units. A context node is in standardised units (= ``z``) unless
    the model says ``scm_units_ == "raw"`` or, without that attribute, the SCM's training mean
    and std of the node are closer to the context's raw statistics than to (0, 1).
    """
    d = len(nodes)
    offset, scale = np.zeros(d), np.ones(d)
    cmean = np.asarray(getattr(model, "context_mean_", np.zeros(m)), dtype=np.float64)
    cstd = np.asarray(getattr(model, "context_std_", np.ones(m)), dtype=np.float64)
    declared = getattr(model, "scm_units_", None)
    names = list(getattr(getattr(scm, "graph", None), "names", []))
    for i in range(m):
        raw = declared == "raw"
        if declared is None and nodes[i] in names and hasattr(scm, "mean_"):
            c = names.index(nodes[i])
            mu, sd = float(scm.mean_[c]), max(float(scm.std_[c]), 1e-12)
            d_raw = abs(mu - cmean[i]) / cstd[i] + abs(np.log(sd / cstd[i]))
            d_std = abs(mu) + abs(np.log(sd))
            raw = d_raw < d_std
        if raw:
            offset[i], scale[i] = cmean[i], cstd[i]
            logger.debug(
                "SCM node %r is in raw context units (mean %.3g, std %.3g)",
                nodes[i],
                cmean[i],
                cstd[i],
            )
    return offset, scale


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class GlanceSCMAdapter:
    """Expose a fitted :class:`glance.causal.StructuralCausalModel` as a :class:`ZSpaceSCM`.

    The SCM works on the nodes of its graph (context names, ``concept_<i>``, ``output_<class>``)
    in its own units; node ``v``'s value is ``offset_v + scale_v · z_v`` (identity by default, i.e.
    contexts in standardised units as in the aligned dimensions). Output nodes are sinks, so
    their factual values cannot change a concept dimension: the adapter feeds zeros for them (the
    real classifier, not the SCM, judges every image). Descendants come from the SCM's chosen DAG.

    Parameters
    ----------
    scm
        A fitted SCM with ``graph.names``, ``dag_`` and ``counterfactual(data, interventions)``.
    nodes
        The ``z`` node names, in ``z`` order.
    offset, scale
        Per ``z`` node, the affine map from ``z`` units to the SCM's units.
    """

    def __init__(
        self,
        scm: Any,
        nodes: Sequence[str],
        offset: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> None:
        self.scm = scm
        self.nodes = tuple(nodes)
        self.names = list(scm.graph.names)
        col = {n: i for i, n in enumerate(self.names)}
        self._cols = [(i, col[n]) for i, n in enumerate(self.nodes) if n in col]
        d = len(self.nodes)
        self.offset = np.zeros(d) if offset is None else np.asarray(offset, dtype=np.float64)
        self.scale = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
        dag = getattr(scm, "dag_", None)
        index = {n: i for i, n in enumerate(self.nodes)}
        self._desc: dict[int, frozenset[int]] = {}
        for i, name in enumerate(self.nodes):
            below = _dag_descendants(dag, scm.graph, name)
            self._desc[i] = frozenset(index[n] for n in below if n in index and n != name)

    def descendants(self, j: int) -> frozenset[int]:
        """``z`` dimensions downstream of ``j`` in the SCM's DAG."""
        return self._desc[j]

    def counterfactual(self, z: np.ndarray, interventions: Mapping[int, np.ndarray]) -> np.ndarray:
        """Counterfactual ``z`` rows under per-row hard interventions (in ``z`` units)."""
        data = np.zeros((len(z), len(self.names)))
        for i, c in self._cols:
            data[:, c] = self.offset[i] + self.scale[i] * z[:, i]
        ivs = {
            self.nodes[j]: (self.offset[j] + self.scale[j] * np.asarray(v, np.float64))[None, :]
            for j, v in interventions.items()
            if self.nodes[j] in self.names
        }
        res = z.copy()
        if not ivs:
            return res
        out = np.asarray(self.scm.counterfactual(data, ivs))
        out = out[0] if out.ndim == 3 else out  # one setting of per-row values: (1, n, p)
        for i, c in self._cols:
            res[:, i] = (out[:, c] - self.offset[i]) / self.scale[i]
        return res


def _dag_descendants(dag: Any, graph: Any, name: str) -> set[str]:
    """Descendants of ``name`` in the fitted DAG (else the graph's directed part)."""
    if dag is not None:
        import networkx as nx

        return set(nx.descendants(dag, name)) if name in dag else set()
    if graph is not None and hasattr(graph, "descendants") and name in graph.names:
        return {getattr(n, "name", n) for n in graph.descendants(name)}
    return set()
