"""A structural causal model fitted on a DAG of a learned equivalence class.

Each node ``v`` gets a mechanism ``v = f_v(pa(v)) + u_v`` (additive noise): ``f_v`` is a linear
regression, a small MLP or gradient boosting on its parents (scikit-learn), ``u_v`` the
residual. Interventions ``do(v = value)`` replace ``f_v`` and propagate to the descendants in
topological order; counterfactuals first abduct the residuals of the given rows.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from glance.causal._pdag import PDAG
from glance.causal._threads import single_threaded
from glance.causal.discovery import apply_knowledge
from glance.causal.graph import CausalGraph, Edge
from glance.causal.knowledge import KIND_RANK, BackgroundKnowledge
from glance.causal.options import MECHANISMS, Mechanism
from glance.exceptions import ConfigError, DataValidationError, NotFittedError, ShapeError

__all__ = ["StructuralCausalModel", "MECHANISMS"]

logger = logging.getLogger(__name__)

Interventions = Mapping[str, Any]


#: Rows of training residuals kept by :meth:`StructuralCausalModel.save` (noise for ``do``).
SAVED_RESIDUAL_ROWS = 5000
SCM_FORMAT = 1


class _LinearMechanism:
    """A linear mechanism restored from JSON (``predict`` as scikit-learn's)."""

    def __init__(self, coef: Sequence[float], intercept: float) -> None:
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = float(intercept)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_


class _MLPMechanism:
    """An MLP mechanism restored from safetensors: scale the parents, ReLU layers, identity
    output, unscale (the forward pass of the fitted scikit-learn pipeline, no pickle)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], n_layers: int) -> None:
        self.x_mean, self.x_scale = arrays["x_mean"], arrays["x_scale"]
        self.y_mean, self.y_scale = float(arrays["y_mean"][0]), float(arrays["y_scale"][0])
        self.weights = [arrays[f"w{i}"] for i in range(n_layers)]
        self.biases = [arrays[f"b{i}"] for i in range(n_layers)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * self.y_scale + self.y_mean

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "x_mean": self.x_mean,
            "x_scale": self.x_scale,
            "y_mean": np.array([self.y_mean]),
            "y_scale": np.array([self.y_scale]),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return out

    @staticmethod
    def arrays_of(model: Any) -> dict[str, np.ndarray]:
        """The arrays of a fitted ``TransformedTargetRegressor(StandardScaler + MLP)``."""
        pipe = model.regressor_
        scaler, net = pipe[0], pipe[-1]
        if net.activation != "relu" or net.out_activation_ != "identity":
            raise ConfigError(f"cannot save an MLP mechanism with activation {net.activation!r}")
        out = {
            "x_mean": scaler.mean_,
            "x_scale": scaler.scale_,
            "y_mean": np.atleast_1d(model.transformer_.mean_),
            "y_scale": np.atleast_1d(model.transformer_.scale_),
        }
        for i, (w, b) in enumerate(zip(net.coefs_, net.intercepts_, strict=True)):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _one_thread(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public method with single-threaded BLAS/OpenMP (see glance.causal._threads)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded():
            return method(*args, **kwargs)

    return wrapper


class StructuralCausalModel:
    """Additive-noise SCM over the nodes of a :class:`CausalGraph`.

    Parameters
    ----------
    graph
        A CPDAG / MPDAG or DAG. Undirected edges are oriented into a DAG of the equivalence
        class that agrees with ``knowledge``; each choice is recorded in ``assumptions_``.
    mechanism
        ``"linear"`` (least squares), ``"mlp"`` (small neural network) or ``"gbm"``
        (histogram gradient boosting).
    knowledge
        Background knowledge for the orientation; default: the knowledge stored in
        ``graph.meta`` by discovery, else the default tiers.
    random_state
        Seed of the nonlinear mechanisms and of :meth:`sample`.

    Attributes
    ----------
    dag_ : networkx.DiGraph
        The DAG the mechanisms were fitted on.
    assumptions_ : list of dict
        ``{"source", "target", "reason"}`` for every edge the data left undirected and the
        model oriented.
    order_ : list of str
        A topological order of the nodes.
    mean_, std_ : ndarray of shape (n_nodes,)
        Mean and standard deviation of each node in the training data.
    residuals_ : ndarray of shape (n_samples, n_nodes)
        Training residuals (the abducted noise of the training rows).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=500); b = 2 * a + rng.normal(size=500)
    >>> g = CausalGraph.from_edges(["a", "b"], [("a", "b")])
    >>> scm = StructuralCausalModel(g).fit(np.c_[a, b])
    >>> mean_b = scm.do({"a": 1.0}, n_samples=2000, random_state=0)[:, 1].mean()
    >>> bool(abs(mean_b - 2.0) < 0.15)  # E[b | do(a = 1)] = 2
    True
    """

    def __init__(
        self,
        graph: CausalGraph,
        *,
        mechanism: Mechanism = "linear",
        knowledge: BackgroundKnowledge | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.graph = graph
        self.mechanism = mechanism
        self.knowledge = knowledge
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    @_one_thread
    def fit(self, data: np.ndarray | Mapping[str, Any]) -> StructuralCausalModel:
        """Choose the DAG and fit one mechanism per node.

        Parameters
        ----------
        data
            Array of shape (n_samples, n_nodes) in ``graph.names`` order, or a mapping from
            node name to a 1-D array.
        """
        if self.mechanism not in MECHANISMS:
            raise ConfigError(
                f"'mechanism' of StructuralCausalModel must be one of "
                f"{list(MECHANISMS)}; got {self.mechanism!r}"
            )
        names = self.graph.names
        x = self._as_matrix(data, "fit")
        if x.shape[0] < 3:
            raise DataValidationError(
                f"StructuralCausalModel.fit needs at least 3 rows; got {x.shape[0]}"
            )
        self.dag_, self.assumptions_ = self._choose_dag()
        index = {n: i for i, n in enumerate(names)}
        self.order_ = list(nx.lexicographical_topological_sort(self.dag_, key=index.__getitem__))
        self.parents_ = {v: sorted(self.dag_.predecessors(v), key=index.__getitem__) for v in names}
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)
        self.mechanisms_: dict[str, Any] = {}
        residuals = np.empty_like(x)
        for v in self.order_:
            j = index[v]
            pa = [index[p] for p in self.parents_[v]]
            model = self._make_regressor() if pa else None
            if model is not None:
                model.fit(x[:, pa], x[:, j])
            self.mechanisms_[v] = model
            residuals[:, j] = x[:, j] - self._predict(v, x)
        self.residuals_ = residuals
        self.n_features_in_ = len(names)
        return self

    def _make_regressor(self) -> Any:
        if self.mechanism == "linear":
            from sklearn.linear_model import LinearRegression

            return LinearRegression()
        if self.mechanism == "gbm":
            from sklearn.ensemble import HistGradientBoostingRegressor

            return HistGradientBoostingRegressor(max_iter=200, random_state=self.random_state)
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        net = MLPRegressor(
            hidden_layer_sizes=(32, 32),
            max_iter=400,
            early_stopping=True,
            random_state=self.random_state,
        )
        return TransformedTargetRegressor(
            make_pipeline(StandardScaler(), net), transformer=StandardScaler()
        )

    def _choose_dag(self) -> tuple[nx.DiGraph, list[dict[str, str]]]:
        g, names = self.graph, self.graph.names
        knowledge = self.knowledge
        if knowledge is None:
            stored = g.meta.get("params", {}).get("knowledge")
            knowledge = BackgroundKnowledge.from_dict(stored) if stored else BackgroundKnowledge()
        rk = knowledge.resolve(names, g.kinds)
        idx = {n: i for i, n in enumerate(names)}
        pdag = PDAG.from_edges(
            len(names),
            [(idx[e.source], idx[e.target]) for e in g.edges() if e.directed],
            [(idx[e.source], idx[e.target]) for e in g.edges() if not e.directed],
        )
        before = set(pdag.undirected_edges())
        apply_knowledge(pdag, rk)
        assumptions = [
            {"source": names[a], "target": names[b], "reason": "background knowledge"}
            for a, b in pdag.directed_edges()
            if (min(a, b), max(a, b)) in before
        ]
        priority = [(KIND_RANK[k], i) for i, k in enumerate(g.kinds)]
        while und := pdag.undirected_edges():
            # Orient the first undirected edge from the earlier node (tier, then column
            # order); Meek's rules then keep the result inside the equivalence class.
            a, b = min(und, key=lambda e: (min(priority[e[0]], priority[e[1]]), e))
            if priority[b] < priority[a]:
                a, b = b, a
            if not (rk.allowed(a, b) and pdag.can_orient(a, b)):
                a, b = b, a
            pdag.add_directed(a, b)
            assumptions.append(
                {
                    "source": names[a],
                    "target": names[b],
                    "reason": "undirected in the graph; chosen by node order",
                }
            )
            before_meek = set(pdag.undirected_edges())
            pdag.meek(allowed=rk.allowed)
            for c, d in pdag.directed_edges():
                if (min(c, d), max(c, d)) in before_meek:
                    assumptions.append(
                        {
                            "source": names[c],
                            "target": names[d],
                            "reason": f"implied by {names[a]} -> {names[b]}",
                        }
                    )
        dag = nx.DiGraph()
        dag.add_nodes_from(names)
        dag.add_edges_from((names[a], names[b]) for a, b in pdag.directed_edges())
        if not nx.is_directed_acyclic_graph(dag):
            raise DataValidationError(
                "StructuralCausalModel: the graph's directed edges form a "
                f"cycle {nx.find_cycle(dag)}; no DAG agrees with it"
            )
        for a in assumptions:
            logger.info("SCM assumption: %s -> %s (%s)", a["source"], a["target"], a["reason"])
        return dag, assumptions

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "mechanisms_"):
            raise NotFittedError(
                "This StructuralCausalModel instance is not fitted yet. Call "
                "'fit' with data before using it."
            )

    def _as_matrix(self, data: np.ndarray | Mapping[str, Any], where: str) -> np.ndarray:
        names = self.graph.names
        if isinstance(data, Mapping):
            missing = [n for n in names if n not in data]
            if missing:
                raise DataValidationError(
                    f"'data' of StructuralCausalModel.{where} lacks node(s) {missing}"
                )
            cols = [np.asarray(data[n], dtype=np.float64).reshape(-1) for n in names]
            if len({c.shape[0] for c in cols}) != 1:
                raise ShapeError(
                    f"'data' of StructuralCausalModel.{where}: columns differ in length"
                )
            x = np.column_stack(cols)
        else:
            x = np.asarray(data, dtype=np.float64)
            if x.ndim == 1:
                x = x[None, :]
            if x.ndim != 2 or x.shape[1] != len(names):
                raise ShapeError(
                    f"'data' of StructuralCausalModel.{where} must have shape "
                    f"(n_samples, {len(names)}) in the order {names}; "
                    f"got {x.shape}"
                )
        if not np.isfinite(x).all():
            bad = [names[j] for j in np.flatnonzero(~np.isfinite(x).all(0))]
            raise DataValidationError(
                f"'data' of StructuralCausalModel.{where} has NaN or infinite values in {bad}"
            )
        return x

    def _predict(self, v: str, x: np.ndarray) -> np.ndarray:
        """``f_v`` evaluated on the parent columns of ``x`` (mean for a root)."""
        j = self.graph.index(v)
        model = self.mechanisms_[v]
        if model is None:
            return np.full(x.shape[0], self.mean_[j])
        pa = [self.graph.index(p) for p in self.parents_[v]]
        return np.asarray(model.predict(x[:, pa]), dtype=np.float64)

    def _intervention_values(
        self, interventions: Interventions, n_rows: int
    ) -> tuple[dict[int, np.ndarray], int, bool]:
        """Broadcast intervention values to shape (k, n_rows); ``scalar`` when all are scalars."""
        if not isinstance(interventions, Mapping) or not interventions:
            raise DataValidationError(
                "'interventions' must be a non-empty mapping from node name to value(s)"
            )
        arrays, ks = {}, set()
        for name, value in interventions.items():
            j = self.graph.index(name)
            v = np.asarray(value, dtype=np.float64)
            if v.ndim == 0:
                v = v.reshape(1, 1)
            elif v.ndim == 1:
                v = v[:, None]
            elif v.ndim != 2 or v.shape[1] not in (1, n_rows):
                raise ShapeError(
                    f"intervention on {name!r} must be a scalar, shape (k,) or "
                    f"(k, {n_rows}); got {np.shape(value)}"
                )
            if not np.isfinite(v).all():
                raise DataValidationError(f"intervention on {name!r} has non-finite values")
            arrays[j] = v
            if v.shape[0] != 1:
                ks.add(v.shape[0])
        if len(ks) > 1:
            raise ShapeError(f"interventions have different numbers of settings {sorted(ks)}")
        k = ks.pop() if ks else 1
        scalar = all(np.ndim(v) == 0 for v in interventions.values())
        return {j: np.broadcast_to(v, (k, n_rows)) for j, v in arrays.items()}, k, scalar

    def _propagate(
        self,
        noise: np.ndarray,
        interventions: Interventions | None = None,
        *,
        relative: bool = False,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Evaluate the mechanisms in topological order with the given noise terms.

        ``base`` holds the factual values that relative interventions shift (default: the
        unintervened world of the same noise).
        """
        n, p = noise.shape
        if not interventions:
            values, k, scalar = {}, 1, True
        else:
            values, k, scalar = self._intervention_values(interventions, n)
        if relative and base is None:
            base = self._propagate(noise)
        u = np.tile(noise, (k, 1))
        out = np.empty((k * n, p))
        for v in self.order_:
            j = self.graph.index(v)
            if j in values:
                out[:, j] = values[j].reshape(k * n)
                if relative:
                    out[:, j] += np.tile(base[:, j], k)
            else:
                out[:, j] = self._predict(v, out) + u[:, j]
        out = out.reshape(k, n, p)
        return out[0] if scalar else out

    # ------------------------------------------------------------------ queries
    @_one_thread
    def sample(self, n_samples: int, random_state: int | None = None) -> np.ndarray:
        """Draw (n_samples, n_nodes) observational samples (noise resampled per node)."""
        self._check_fitted()
        return self._propagate(self._draw_noise(n_samples, random_state))

    def _draw_noise(self, n_samples: int, random_state: int | None) -> np.ndarray:
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"'n_samples' must be a positive integer; got {n_samples!r}")
        rng = np.random.default_rng(self.random_state if random_state is None else random_state)
        m = self.residuals_.shape[0]
        # Independent noise terms: each node's residual is drawn from its own empirical
        # distribution, independently of the other nodes.
        rows = rng.integers(0, m, size=(n_samples, self.residuals_.shape[1]))
        return np.take_along_axis(self.residuals_, rows, axis=0)

    @_one_thread
    def do(
        self,
        interventions: Interventions,
        data: np.ndarray | Mapping[str, Any] | None = None,
        *,
        n_samples: int = 1000,
        relative: bool = False,
        random_state: int | None = None,
    ) -> np.ndarray:
        """Samples of every node under the intervention ``do(node = value, ...)``.

        Parameters
        ----------
        interventions
            Node name -> value: a scalar; an array of shape (k,) for k settings; or (k, n_rows)
            for a value per setting and row. In the nodes' own units.
        data
            Rows whose noise terms are used (equivalent to :meth:`counterfactual`); default:
            ``n_samples`` noise draws from the training residuals.
        n_samples
            Number of draws when ``data`` is None.
        relative
            Values are shifts added to each row's natural value (``do(v = v + value)``).
        random_state
            Seed of the noise draws (default: the model's).

        Returns
        -------
        ndarray
            Shape (n_rows, n_nodes) when every value is a scalar, else (k, n_rows, n_nodes).
        """
        self._check_fitted()
        if data is not None:
            return self.counterfactual(data, interventions, relative=relative)
        noise = self._draw_noise(n_samples, random_state)
        return self._propagate(noise, interventions, relative=relative)

    @_one_thread
    def abduct(self, data: np.ndarray | Mapping[str, Any]) -> np.ndarray:
        """Noise terms (residuals) of the given rows, shape (n_rows, n_nodes)."""
        self._check_fitted()
        x = self._as_matrix(data, "abduct")
        u = np.empty_like(x)
        for v in self.order_:
            j = self.graph.index(v)
            u[:, j] = x[:, j] - self._predict(v, x)
        return u

    @_one_thread
    def counterfactual(
        self,
        data: np.ndarray | Mapping[str, Any],
        interventions: Interventions,
        *,
        relative: bool = False,
    ) -> np.ndarray:
        """What each row would have been under the intervention (abduct, act, predict).

        Shapes as in :meth:`do`; non-descendants of the intervened nodes keep their values.
        """
        self._check_fitted()
        x = self._as_matrix(data, "counterfactual")
        return self._propagate(self.abduct(x), interventions, relative=relative, base=x)

    # ------------------------------------------------------------------ effects
    @_one_thread
    def standardised_effects(self, data: np.ndarray | None = None) -> dict[tuple[str, str], float]:
        """Direct effect of each edge of the DAG in standard deviations.

        The average change of the target, in its standard deviations, when the source rises by
        one standard deviation and the target's other parents are held fixed (the standardised
        coefficient for a linear mechanism). Averaged over ``data`` (default: up to 2,000
        training rows reconstructed from the residuals).
        """
        self._check_fitted()
        x = self._reference_rows(data)
        out = {}
        for t in self.order_:
            jt = self.graph.index(t)
            base = self._predict(t, x)
            for s in self.parents_[t]:
                js = self.graph.index(s)
                shifted = x.copy()
                shifted[:, js] += self.std_[js]
                out[(s, t)] = float(np.mean(self._predict(t, shifted) - base) / self.std_[jt])
        return out

    @_one_thread
    def total_effect(
        self, source: str, target: str, *, delta: float = 1.0, data: np.ndarray | None = None
    ) -> float:
        """Average total effect on ``target`` (its std) of ``do(source = source + delta·std)``."""
        self._check_fitted()
        js, jt = self.graph.index(source), self.graph.index(target)
        x = self._reference_rows(data)
        cf = self.counterfactual(x, {source: delta * self.std_[js]}, relative=True)
        return float(np.mean(cf[:, jt] - x[:, jt]) / self.std_[jt])

    @_one_thread
    def global_importance(
        self,
        outputs: Sequence[str] | None = None,
        *,
        delta: float = 1.0,
        data: np.ndarray | None = None,
    ) -> dict[str, dict[str, float]]:
        """Average total effect of ``do(v = v + delta·std_v)`` on every output, in output units.

        Returns ``{output: {node: effect}}`` for every node that is not an output.
        """
        self._check_fitted()
        names, kinds = self.graph.names, self.graph.kinds
        outputs = (
            [n for n, k in zip(names, kinds, strict=True) if k == "output"]
            if outputs is None
            else list(outputs)
        )
        x = self._reference_rows(data)
        out_idx = [self.graph.index(o) for o in outputs]
        result: dict[str, dict[str, float]] = {o: {} for o in outputs}
        for j, (v, kind) in enumerate(zip(names, kinds, strict=True)):
            if kind == "output" or v in result:
                continue
            cf = self.counterfactual(x, {v: delta * self.std_[j]}, relative=True)
            diff = (cf[:, out_idx] - x[:, out_idx]).mean(axis=0)
            for o, d in zip(outputs, diff, strict=True):
                result[o][v] = float(d)
        return result

    def _reference_rows(self, data: np.ndarray | None, max_rows: int = 2000) -> np.ndarray:
        if data is not None:
            return self._as_matrix(data, "effects")
        return self._propagate(self.residuals_[:max_rows])

    def to_graph(self) -> CausalGraph:
        """The fitted DAG as a :class:`CausalGraph` with the SCM's standardised effects.

        Edge confidences are taken from the source graph; ``meta["assumptions"]`` lists the
        orientations the model chose.
        """
        self._check_fitted()
        effects = self.standardised_effects()
        edges = []
        for s, t in sorted(
            self.dag_.edges, key=lambda e: (self.graph.index(e[0]), self.graph.index(e[1]))
        ):
            src = self.graph.edge(s, t)
            conf = src.confidence if src is not None else math.nan
            oc = (
                src.orientation_confidence
                if src is not None and src.source == s
                else (math.nan if src is None or not src.directed else 0.0)
            )
            edges.append(Edge(s, t, True, conf, oc, effects[(s, t)]))
        return self.graph.with_edges(
            edges, assumptions=list(self.assumptions_), mechanism=self.mechanism
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``scm.json`` (DAG, assumptions, coefficients) and ``scm.safetensors``
        (statistics and up to ``SAVED_RESIDUAL_ROWS`` training residuals) into ``directory``.

        Linear and MLP mechanisms are saved as plain arrays; gradient-boosted trees are not
        (they would need pickle, which glance never loads): :class:`ConfigError` for them (refit
        with :meth:`fit` instead).
        """
        self._check_fitted()
        if self.mechanism not in ("linear", "mlp"):
            raise ConfigError(
                f"only linear and mlp SCMs can be saved (no pickle); this one is "
                f"{self.mechanism!r}. Refit it from the saved graph and data instead."
            )
        import torch

        from glance._io import atomic_write_json, save_safetensors

        directory = Path(directory)
        mechanisms: dict[str, Any] = {}
        tensors = {
            "mean": torch.from_numpy(self.mean_.copy()),
            "std": torch.from_numpy(self.std_.copy()),
            "residuals": torch.from_numpy(self.residuals_[:SAVED_RESIDUAL_ROWS].copy()),
        }
        for v, model in self.mechanisms_.items():
            if model is None:
                continue
            if self.mechanism == "linear":
                mechanisms[v] = {
                    "parents": self.parents_[v],
                    "coef": model.coef_.tolist(),
                    "intercept": float(model.intercept_),
                }
                continue
            arrays = (
                model.arrays()
                if isinstance(model, _MLPMechanism)
                else _MLPMechanism.arrays_of(model)
            )
            n_layers = sum(k.startswith("w") for k in arrays)
            mechanisms[v] = {"parents": self.parents_[v], "layers": n_layers}
            k = self.graph.index(v)
            for name, arr in arrays.items():
                tensors[f"mlp.{k}.{name}"] = torch.from_numpy(np.ascontiguousarray(arr))
        atomic_write_json(
            directory / "scm.json",
            {
                "format": SCM_FORMAT,
                "mechanism": self.mechanism,
                "random_state": self.random_state,
                "graph": self.graph.to_dict(),
                "dag_edges": [list(e) for e in sorted(self.dag_.edges, key=self._edge_key)],
                "assumptions": self.assumptions_,
                "mechanisms": mechanisms,
            },
        )
        save_safetensors(directory / "scm.safetensors", tensors)

    def _edge_key(self, e: tuple[str, str]) -> tuple[int, int]:
        return self.graph.index(e[0]), self.graph.index(e[1])

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> StructuralCausalModel:
        """Restore an SCM written by :meth:`save` (no pickle)."""
        import json

        from glance._io import load_safetensors
        from glance.exceptions import CheckpointCorruptError

        directory = Path(directory)
        try:
            d = json.loads((directory / "scm.json").read_text(encoding="utf-8"))
            if int(d["format"]) > SCM_FORMAT:
                raise CheckpointCorruptError(
                    f"{directory}/scm.json: format {d['format']} is newer than this glance reads"
                )
            graph = CausalGraph.from_dict(d["graph"])
            scm = cls(graph, mechanism=d["mechanism"], random_state=d["random_state"])
            tensors = load_safetensors(directory / "scm.safetensors")
            scm.dag_ = nx.DiGraph()
            scm.dag_.add_nodes_from(graph.names)
            scm.dag_.add_edges_from(tuple(e) for e in d["dag_edges"])
            scm.assumptions_ = list(d["assumptions"])
            index = {n: i for i, n in enumerate(graph.names)}
            scm.order_ = list(nx.lexicographical_topological_sort(scm.dag_, key=index.__getitem__))
            scm.parents_ = {
                v: sorted(scm.dag_.predecessors(v), key=index.__getitem__) for v in graph.names
            }
            scm.mechanisms_ = {v: None for v in graph.names}
            for v, m in d["mechanisms"].items():
                if list(m["parents"]) != scm.parents_[v]:
                    raise CheckpointCorruptError(
                        f"{directory}/scm.json: parents of {v!r} disagree with the DAG"
                    )
                if "layers" in m:  # an MLP mechanism: its arrays are in scm.safetensors
                    k = graph.index(v)
                    prefix = f"mlp.{k}."
                    arrays = {
                        name[len(prefix) :]: t.numpy().astype(np.float64)
                        for name, t in tensors.items()
                        if name.startswith(prefix)
                    }
                    scm.mechanisms_[v] = _MLPMechanism(arrays, int(m["layers"]))
                else:
                    scm.mechanisms_[v] = _LinearMechanism(m["coef"], m["intercept"])
            scm.mean_ = tensors["mean"].numpy().astype(np.float64)
            scm.std_ = tensors["std"].numpy().astype(np.float64)
            scm.residuals_ = tensors["residuals"].numpy().astype(np.float64)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorruptError(f"{directory}: unreadable SCM ({exc!r})") from None
        scm.n_features_in_ = len(graph.names)
        return scm
