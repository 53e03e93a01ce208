"""Soundness of counterfactuals and a sanity check of the importances (plain functions → dicts).

Counterfactual soundness follows Monteiro et al. (2023, "Measuring axiomatic soundness of
counterfactual image models"):

- :func:`effectiveness` — intervening on an aligned context changes the context *measured on the
  generated image* the right way (with glance's morphometrics, or a context reader of
  :mod:`glance.metrics.readers`); :func:`specificity_from` — and leaves the contexts that are not
  its descendants alone (cross-talk);
- :func:`composition` — the null intervention reproduces the reconstruction (and re-encoding the
  reconstruction comes back to it);
- :func:`reversibility` — undoing an intervention comes back to the reconstruction.

:func:`randomisation_sanity` is the model-parameter randomisation test (Adebayo et al. 2018):
re-initialise the classifier's weights and compare the importances; they must not correlate
beyond what both share through how much each node changes the image
(:func:`partial_rank_correlation`), and the randomised ones must be small
(:func:`magnitude_ratio`).
:func:`deletion_insertion` is concept-level deletion / insertion faithfulness (RELIABILITY c.6,
Petsiuk et al. 2018, with concepts in place of pixels): removing the most important concepts first
must lower ``p(target)`` faster, and restoring them first raise it faster, than random orders.
Every check returns a JSON-ready dict for ``metrics.json`` (:func:`magnitude_ratio` a float).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr, wilcoxon

from glance.exceptions import ConfigError, ShapeError
from glance.explain._engine import Renderer
from glance.explain._twin import Twin
from glance.explain.explanation import LocalExplanation
from glance.explain.importance import InterventionalImportance

__all__ = [
    "DELTAS",
    "InterventionReadout",
    "read_interventions",
    "effectiveness",
    "effectiveness_from",
    "specificity_from",
    "composition",
    "reversibility",
    "randomisation_sanity",
    "partial_rank_correlation",
    "magnitude_ratio",
    "deletion_insertion",
]


def _twin(model: Any) -> Twin:
    return model if isinstance(model, Twin) else Twin.from_glance(model)


def _node(twin: Twin, node: str | int, caller: str) -> int:
    if isinstance(node, int) and 0 <= node < twin.n_nodes:
        return node
    if node in twin.nodes:
        return twin.nodes.index(node)
    raise ConfigError(f"'node' of {caller} must be one of {list(twin.nodes)}; got {node!r}")


def _l1(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a - b).abs().flatten(1).mean(1).cpu().numpy()


def _pred(twin: Twin, x: torch.Tensor) -> np.ndarray:
    return twin.classify(x).argmax(1).cpu().numpy()


#: Shifts (node std units) of the effectiveness and specificity interventions.
DELTAS = (-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0)


@dataclasses.dataclass(frozen=True)
class InterventionReadout:
    """What a measurement read on ``G(z')`` for ``do(node = node + δ)``, every image and shift.

    Built by :func:`read_interventions`; summarised by :func:`effectiveness_from` (the node's own
    column) and :func:`specificity_from` (the other columns).

    Attributes
    ----------
    node
        The node intervened on.
    deltas
        The shifts asked for (node std units), length ``G``.
    shifts
        The shift actually made in ``z`` units, shape (N, G) (an intervention is clipped to the
        node's support).
    base
        The measurement on ``G(E(x))``, shape (N, m).
    after
        The measurement on ``G(z')``, shape (N, G, m).
    """

    node: str
    deltas: tuple[float, ...]
    shifts: np.ndarray
    base: np.ndarray
    after: np.ndarray

    @property
    def change(self) -> np.ndarray:
        """Measured change ``after - base``, shape (N, G, m)."""
        return self.after - self.base[:, None, :]


def _columns(values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ShapeError(
            f"'measure' must return shape (N,) or (N, m) for N = {n} images; got {arr.shape}"
        )
    return arr


@torch.no_grad()
def read_interventions(
    model: Any,
    images: torch.Tensor,
    node: str | int,
    measure: Callable[[torch.Tensor], np.ndarray],
    *,
    deltas: Sequence[float] = DELTAS,
) -> InterventionReadout:
    """Intervene ``do(node = node + δ)`` for every shift and read ``G(z')`` with ``measure``.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    node
        The node (name or index).
    measure
        ``images -> values`` of shape (N,) or (N, m): one attribute, or several read at once
        (e.g. every context, by a :class:`glance.metrics.readers.ContextReader`).
    deltas
        Shifts in node std units (total interventions: the SCM moves the descendants).
    """
    twin = _twin(model)
    j = _node(twin, node, "read_interventions")
    z = twin.encode(images).float()
    base = _columns(measure(twin.generate(z)), len(z))
    shifts, after = [], []
    for dl in deltas:
        zp = twin.intervene(z, {j: twin.shift(j, z[:, j], torch.full_like(z[:, j], float(dl)))})
        after.append(_columns(measure(twin.generate(zp)), len(z)))
        # The shift actually made (an intervention is clipped to the node's support).
        shifts.append((zp[:, j] - z[:, j]).cpu().numpy().astype(np.float64))
    return InterventionReadout(
        node=twin.nodes[j],
        deltas=tuple(float(d) for d in deltas),
        shifts=np.stack(shifts, 1),
        base=base,
        after=np.stack(after, 1),
    )


@torch.no_grad()
def effectiveness(
    model: Any,
    images: torch.Tensor,
    node: str | int,
    measure: Callable[[torch.Tensor], np.ndarray],
    *,
    deltas: Sequence[float] = DELTAS,
    unit: float = 1.0,
) -> dict[str, Any]:
    """Does ``do(node = node + δ)`` change the measured attribute of ``G(z')`` the right way?

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    node
        The aligned context node (name or index).
    measure
        ``images -> values (N,)``: the attribute measured on images (e.g. morphometric thickness,
        or a context reader's column).
    deltas
        Shifts in node std units.
    unit
        Attribute units per node std (``context_std_`` of the node) for the calibration slope.

    Returns
    -------
    dict
        See :func:`effectiveness_from`.
    """
    readout = read_interventions(model, images, node, measure, deltas=deltas)
    return effectiveness_from(readout, unit=unit)


def effectiveness_from(
    readout: InterventionReadout, *, column: int = 0, unit: float = 1.0
) -> dict[str, Any]:
    """Effectiveness of the intervention of ``readout``, measured by its column ``column``.

    Returns
    -------
    dict
        ``spearman`` between the intended shift and the measured change (all images and shifts
        pooled), ``per_image_spearman`` (mean), ``slope`` of change on intended change (1 is
        perfect calibration), ``mean_abs_error`` of the change in attribute units, counts.
    """
    intended = readout.shifts * unit  # [N, G]
    change = readout.change[:, :, column]
    ok = np.isfinite(change).all(1)
    per = [_rank_corr(intended[i], change[i]) for i in np.flatnonzero(ok)]
    per = [r for r in per if np.isfinite(r)]
    x, y = intended[ok].ravel(), change[ok].ravel()
    slope = float(np.polyfit(x, y, 1)[0]) if x.size > 1 else float("nan")
    return {
        "node": readout.node,
        "deltas": list(readout.deltas),
        "spearman": _rank_corr(x, y),
        "per_image_spearman": float(np.mean(per)) if per else float("nan"),
        "slope": slope,
        "mean_abs_error": float(np.mean(np.abs(y - x))) if x.size else float("nan"),
        "n_images": int(ok.sum()),
        "n_unmeasurable": int((~ok).sum()),
    }


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman of two vectors; NaN when either is constant (no ranking: nothing changed)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def specificity_from(
    readout: InterventionReadout,
    names: Sequence[str],
    *,
    scale: Sequence[float] | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Cross-talk of an intervention: how much it moves the *other* measured attributes.

    For the node ``k`` of ``readout`` (one of ``names``) and every other column ``j`` not in
    ``exclude`` (the node's descendants, which *should* move): the mean absolute measured change
    of ``j`` as a fraction of that of ``k``, both in units of ``scale`` (e.g. each context's
    std), pooled over images and shifts. 0 is a perfectly specific intervention.

    Parameters
    ----------
    readout
        From :func:`read_interventions`, with one column per name.
    names
        Column names; the readout's node must be one of them.
    scale
        Per column, the size of one unit (default 1).
    exclude
        Columns left out (the node's descendants in the causal graph).

    Returns
    -------
    dict
        ``cross_talk`` {name: fraction}, the ``worst`` fraction and its ``worst_context``
        (``None`` when no column is compared), ``change`` (mean absolute change of the node in
        its units), ``excluded`` (the names left out), ``n_images``.
    """
    names = [str(n) for n in names]
    if readout.node not in names or readout.change.shape[2] != len(names):
        raise ConfigError(
            f"'names' of specificity_from must name the readout's {readout.change.shape[2]} "
            f"columns, including its node {readout.node!r}; got {names}"
        )
    unit = np.ones(len(names)) if scale is None else np.asarray(scale, dtype=np.float64)
    change = np.abs(readout.change) / unit  # [N, G, m]
    ok = np.isfinite(change).all(axis=(1, 2))
    mean = change[ok].mean(axis=(0, 1)) if ok.any() else np.full(len(names), np.nan)
    k = names.index(readout.node)
    own = float(mean[k])
    cross: dict[str, float | None] = {}
    for j, name in enumerate(names):
        if j == k or name in exclude:
            continue
        cross[name] = float(mean[j] / own) if own > 0 and np.isfinite(own) else None
    valid = {n: v for n, v in cross.items() if v is not None and np.isfinite(v)}
    worst = max(valid, key=valid.__getitem__) if valid else None
    return {
        "node": readout.node,
        "cross_talk": cross,
        "worst": valid[worst] if worst is not None else None,
        "worst_context": worst,
        "change": own,
        "excluded": [n for n in names if n in exclude and n != readout.node],
        "n_images": int(ok.sum()),
    }


@torch.no_grad()
def composition(model: Any, images: torch.Tensor) -> dict[str, Any]:
    """The null intervention must reproduce the reconstruction.

    Returns
    -------
    dict
        ``null_latent_max_abs``: largest change of ``z`` when every node with descendants is
        set, through the SCM counterfactual, to its own value (0 when abduction is exact);
        ``null_image_l1``: mean absolute pixel change of ``G(z')`` against ``G(E(x))``;
        ``cycle_image_l1`` and ``cycle_class_agreement``: ``G(E(G(E(x))))`` against
        ``G(E(x))`` (re-encoding the reconstruction must come back to it).
    """
    twin = _twin(model)
    z = twin.encode(images).float()
    recon = twin.generate(z)
    worst = torch.zeros(z.shape[0])
    z_null = z.clone()
    if twin.scm is not None:
        for j in range(twin.n_nodes):
            if twin.descendants(j):
                cf = twin.scm.counterfactual(z.double().numpy(), {j: z[:, j].double().numpy()})
                zj = torch.as_tensor(cf, dtype=z.dtype)
                worst = torch.maximum(worst, (zj - z).abs().amax(1))
                z_null = zj
    again = twin.generate(twin.encode(recon).float())
    return {
        "null_latent_max_abs": float(worst.max()),
        "null_image_l1": float(_l1(twin.generate(z_null), recon).mean()),
        "cycle_image_l1": float(_l1(again, recon).mean()),
        "cycle_class_agreement": float(np.mean(_pred(twin, again) == _pred(twin, recon))),
        "n_images": int(z.shape[0]),
    }


@torch.no_grad()
def reversibility(
    model: Any, images: torch.Tensor, *, delta: float = 1.0, nodes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Intervene ``do(v = v + δ)``, re-encode the generated image, intervene back, compare.

    Returns
    -------
    dict
        Per node and on average: ``image_l1`` between the round trip and ``G(E(x))`` and
        ``class_agreement`` of the real classifier on the two.
    """
    twin = _twin(model)
    idx = [_node(twin, n, "reversibility") for n in (nodes or twin.nodes)]
    z = twin.encode(images).float()
    recon = twin.generate(z)
    recon_cls = _pred(twin, recon)
    l1, agree = {}, {}
    for j in idx:
        zp = twin.intervene(z, {j: twin.shift(j, z[:, j], torch.full_like(z[:, j], float(delta)))})
        back_z = twin.intervene(twin.encode(twin.generate(zp)).float(), {j: z[:, j]})
        back = twin.generate(back_z)
        l1[twin.nodes[j]] = float(_l1(back, recon).mean())
        agree[twin.nodes[j]] = float(np.mean(_pred(twin, back) == recon_cls))
    return {
        "delta": float(delta),
        "image_l1": l1,
        "class_agreement": agree,
        "mean_image_l1": float(np.mean(list(l1.values()))),
        "mean_class_agreement": float(np.mean(list(agree.values()))),
        "n_images": int(z.shape[0]),
    }


def randomised_copy(
    classifier: Any, random_state: int = 0, *, top_layers: int | None = None
) -> Any:
    """A deep copy of ``classifier`` with its parameters re-initialised (the original is kept).

    Modules with ``reset_parameters`` use their own initialisation; other parameters get
    ``N(0, 0.05²)``. ``top_layers=k`` re-initialises only the last ``k`` parameterised modules
    (the cascading randomisation of Adebayo et al. 2018, from the output down); ``None`` = all.
    The global RNG state is restored afterwards.
    """
    clone = copy.deepcopy(classifier)
    modules = _layers(clone.modules() if isinstance(clone, torch.nn.Module) else _modules_of(clone))
    if top_layers is not None:
        modules = modules[len(modules) - top_layers :] if top_layers > 0 else []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        with torch.no_grad():
            for m in modules:
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                else:
                    for p in m.parameters(recurse=False):
                        p.normal_(0.0, 0.05)
    return clone


def _layers(modules: Any) -> list[torch.nn.Module]:
    """Modules that own parameters (or re-initialise themselves), in definition order."""
    out = []
    for m in modules:
        if not isinstance(m, torch.nn.Module):
            continue
        if any(True for _ in m.parameters(recurse=False)):
            out.append(m)
    return out


def _floor(x: np.ndarray, atol: float) -> np.ndarray:
    return np.where(np.abs(x) < atol, 0.0, x)


def _modules_of(obj: Any) -> list[torch.nn.Module]:
    model = getattr(obj, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            "'classifier' of randomisation_sanity must be an nn.Module or an adapter with a "
            f"'model' module; got {type(obj).__name__}"
        )
    return list(model.modules())


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Spearman of two (N, V) arrays; NaN where a row is constant (no ranking)."""
    rho = [
        spearmanr(u, v)[0] if np.ptp(u) > 0 and np.ptp(v) > 0 else np.nan
        for u, v in zip(a, b, strict=True)
    ]
    return np.asarray(rho, dtype=np.float64)


def _mean0(rho: np.ndarray) -> float:
    # A constant importance vector carries no ranking, hence no agreement: counted as 0.
    return float(np.where(np.isfinite(rho), rho, 0.0).mean()) if rho.size else float("nan")


def _complexity(imp: np.ndarray) -> float:
    """Mean over images of the entropy of the normalised |importance| vector (nats; 0 when one
    node carries everything, log V when all are equal); images with no importance are skipped."""
    a = np.abs(imp)
    total = a.sum(axis=1, keepdims=True)
    ok = total[:, 0] > 0
    if not ok.any():
        return float("nan")
    p = a[ok] / total[ok]
    return float(np.mean(-(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)))


def _partial_given_change(
    trained: np.ndarray, randomised: np.ndarray, change: np.ndarray | None
) -> dict[str, Any]:
    """:func:`partial_rank_correlation` given the image change; NaN without traversal images."""
    if change is None:
        n, v = trained.shape
        nan = float("nan")
        return {"pooled": nan, "pooled_ci95": [nan, nan], "per_image_mean": nan,
                "n_undefined": n, "n_images": n, "n_nodes": v, "df": 0}  # fmt: skip
    return partial_rank_correlation(trained, randomised, change)


def _image_change(exp: LocalExplanation) -> np.ndarray | None:
    """RMS change of the rendered image per image and node, mean over the non-zero shifts."""
    if exp.traversal_images is None or exp.reconstructions is None:
        return None
    nz = exp.deltas != 0
    t = exp.traversal_images[:, :, nz].astype(np.float32) / 255.0  # [N, V, G', C, H, W]
    r = exp.reconstructions.astype(np.float32)[:, None, None] / 255.0
    rms = np.sqrt(((t - r) ** 2).reshape(*t.shape[:3], -1).mean(-1))
    return rms.mean(2)


_NO_RESIDUAL = 1e-9  # squared norm of a rank residual below this: control explains the ranks


def partial_rank_correlation(
    reference: Any, other: Any, control: Any, *, n_bootstrap: int = 1000, random_state: int = 0
) -> dict[str, Any]:
    """Spearman partial correlation of ``reference`` and ``other`` given ``control``, by image.

    Within each image (row) the three vectors are rank-transformed over the nodes (ties get
    their average rank); the ranks of ``reference`` and of ``other`` are each regressed, by
    least squares with an intercept, on the ranks of ``control``; the residuals are what each
    ranks beyond ``control``, and their correlation is the partial correlation.

    One image has few nodes and its residuals only ``n_nodes - 2`` degrees of freedom (with 3
    nodes every image's partial correlation is ±1), so the residuals of all images are pooled
    and correlated once: the within-image partial correlation, each image keeping its own
    intercept and slope (as a repeated-measures correlation, Bakdash & Marusich 2017, does with
    its subjects), over ``n_images * (n_nodes - 2)`` degrees of freedom. Images weigh by how
    much their rankings depart from ``control``.

    The two sides are not symmetric where a residual vanishes. ``other`` with no residual (a
    constant vector, or one ``control`` ranks entirely) shares nothing of ``reference``'s own
    ranking: 0. ``reference`` with no residual leaves nothing to compare: NaN, which a sanity
    check must not read as a pass (an explainer that ranks the nodes by ``control`` alone,
    whatever the classifier, lands there).

    Parameters
    ----------
    reference, other
        Values of shape (n_images, n_nodes), e.g. the importances of a trained and of a
        randomised classifier.
    control
        The covariate, same shape, e.g. how much each node changes the image.
    n_bootstrap, random_state
        Resamples of the images (with replacement) for the interval of ``pooled`` (0: none),
        and their seed.

    Returns
    -------
    dict
        ``pooled``: the partial correlation in [-1, 1], over the images whose values are all
        finite; ``pooled_ci95``: its 95% percentile-bootstrap interval over images (the images
        are the independent units; the nodes of one image are not); ``per_image_mean``: the
        mean of the images' own partial correlations (noisy with few nodes, ±1 with 3);
        ``n_undefined``: images left out of that mean (no residual of ``reference``, or a value
        that is not finite); ``n_images``, ``n_nodes`` and ``df``, the pooled residual degrees
        of freedom.

    Raises
    ------
    ShapeError
        When the three arrays are not 2-D of one shape.
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (reference, other, control))
    if a.ndim != 2 or a.shape != b.shape or a.shape != c.shape:
        raise ShapeError(
            "'reference', 'other' and 'control' of partial_rank_correlation must share a shape "
            f"(n_images, n_nodes); got {a.shape}, {b.shape}, {c.shape}"
        )
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1) & np.isfinite(c).all(1)
    ranks_c = rankdata(c[finite], axis=1)
    res_a = _rank_residuals(rankdata(a[finite], axis=1), ranks_c)
    res_b = _rank_residuals(rankdata(b[finite], axis=1), ranks_c)
    ss_a, ss_b, cross = (res_a**2).sum(1), (res_b**2).sum(1), (res_a * res_b).sum(1)
    n, v = a.shape
    return {
        "pooled": _cosine(cross.sum(), ss_a.sum(), ss_b.sum()),
        "pooled_ci95": _bootstrap_ci(cross, ss_a, ss_b, n_bootstrap, random_state),
        "per_image_mean": _nanmean(
            [_cosine(x, y, z) for x, y, z in zip(cross, ss_a, ss_b, strict=True)]
        ),
        "n_undefined": int(n - (ss_a > _NO_RESIDUAL).sum()),
        "n_images": int(n),
        "n_nodes": int(v),
        "df": int(finite.sum() * max(v - 2, 0)),
    }


def _cosine(cross: float, ss_ref: float, ss_other: float) -> float:
    """Correlation of two centred residuals: NaN without a reference residual, 0 without the
    other's."""
    if ss_ref <= _NO_RESIDUAL:
        return float("nan")
    if ss_other <= _NO_RESIDUAL:
        return 0.0
    return float(np.clip(cross / np.sqrt(ss_ref * ss_other), -1.0, 1.0))


def _bootstrap_ci(
    cross: np.ndarray, ss_ref: np.ndarray, ss_other: np.ndarray, n_boot: int, seed: int
) -> list[float]:
    """95% percentile interval of the pooled correlation over images resampled with
    replacement; NaNs when there is nothing to resample or a resample is undefined."""
    if n_boot < 1 or cross.size == 0:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, cross.size, (n_boot, cross.size))
    sums = (cross[idx].sum(1), ss_ref[idx].sum(1), ss_other[idx].sum(1))
    vals = np.array([_cosine(*t) for t in zip(*sums, strict=True)])
    if not np.isfinite(vals).all():
        return [float("nan"), float("nan")]
    return np.percentile(vals, [2.5, 97.5]).tolist()


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr[np.isfinite(arr)].mean()) if np.isfinite(arr).any() else float("nan")


def _rank_residuals(ranks: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Per row, ``ranks`` minus its least-squares line on ``control`` (intercept included)."""
    r = ranks - ranks.mean(1, keepdims=True)
    c = control - control.mean(1, keepdims=True)
    var = (c**2).sum(1, keepdims=True)
    slope = np.divide((r * c).sum(1, keepdims=True), var, out=np.zeros_like(var), where=var > 0)
    return r - slope * c


def magnitude_ratio(trained: Any, randomised: Any) -> float:
    """Mean |importance| of the randomised classifier over that of the trained one.

    0 when randomising the weights silenced the explanation, 1 when it left it as large; NaN
    when every trained importance is zero (nothing to compare with).
    """
    num = float(np.mean(np.abs(np.asarray(randomised, dtype=np.float64))))
    den = float(np.mean(np.abs(np.asarray(trained, dtype=np.float64))))
    return num / den if den > 0 else float("nan")


@torch.no_grad()
def randomisation_sanity(
    model: Any,
    images: torch.Tensor,
    classifier: Any = None,
    *,
    deltas: Sequence[float] = (-1.0, 1.0),
    random_state: int = 0,
    atol: float = 1e-6,
    cascade: bool = False,
) -> dict[str, Any]:
    """Model-parameter randomisation: importances of the trained vs a re-initialised classifier.

    The concept encoder and generator stay as fitted; only the classifier judging the generated
    images is randomised, so the test asks whether the importances depend on the classifier.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    classifier
        The classifier to randomise: an ``nn.Module`` or an adapter with ``.model`` and
        ``.logits``; default: the fitted model's ``adapter_``.
    deltas, random_state
        Importance shifts; seed of the re-initialisation.
    atol
        Importances below this are zero: float32 probabilities cannot resolve smaller changes,
        so ranking them would rank rounding noise.
    cascade
        Also randomise the layers cumulatively from the output down (Adebayo et al.'s cascading
        test) and report the mean Spearman and the partial Spearman after each layer
        (``cascade`` list).

    Returns
    -------
    dict
        The two figures that separate a trained from a random classifier:
        ``partial_spearman``, the rank correlation of the two importance vectors over the nodes
        once each node's image change is controlled for (:func:`partial_rank_correlation`,
        pooled within images; its other figures in ``partial_spearman_stats``), and
        ``magnitude_ratio`` (:func:`magnitude_ratio`, randomised over trained). An
        interventional importance of *any* classifier grows with how much a node changes the
        image, so where the nodes' image changes differ widely a random classifier shares that
        part of the ranking whatever the explainer; the partial correlation takes it out.

        The plain rank comparison, kept as a diagnostic: ``mean_spearman`` over images, where
        an image whose trained or randomised vector is constant (no ranking) counts as 0;
        ``mean_spearman_defined`` over the other images only; ``n_undefined``; ``per_image``
        values (NaN = undefined) and the mean importances of both. Other diagnostics:
        ``top1_agreement`` (same top node), ``complexity_trained`` / ``complexity_randomised``
        (entropy of the normalised importances) and their ``complexity_ratio`` (eMPRT, Hedström
        et al. 2023: above 1 when the randomised model's explanation is more spread out),
        ``image_change`` (RMS change of the rendered image per node) and the Spearman of each
        importance vector with it (``spearman_trained_vs_image_change``,
        ``spearman_randomised_vs_image_change``).
    """
    twin = _twin(model)
    clf = classifier if classifier is not None else getattr(model, "adapter_", None)
    if clf is None:
        raise ConfigError("'classifier' of randomisation_sanity is required for a Twin")

    def importance_with(rand: Any) -> np.ndarray:
        call = rand.logits if hasattr(rand, "logits") else rand
        if isinstance(rand, torch.nn.Module):
            rand.eval()
        twin_r = dataclasses.replace(twin, classify=call)
        exp_r = InterventionalImportance(twin_r, keep_images=False).explain(
            images, target=imp.target, deltas=deltas
        )
        return _floor(exp_r.importance, atol)

    imp = InterventionalImportance(twin, keep_images=True).explain(images, deltas=deltas)
    trained = _floor(imp.importance, atol)
    randomised = importance_with(randomised_copy(clf, random_state))
    arr = _spearman_rows(trained, randomised)
    defined = np.isfinite(arr)
    change = _image_change(imp)
    out: dict[str, Any] = {
        "mean_spearman": _mean0(arr),
        "mean_spearman_defined": float(arr[defined].mean()) if defined.any() else float("nan"),
        "per_image": arr.tolist(),
        "n_undefined": int((~np.isfinite(arr)).sum()),
        "mean_importance_trained": imp.importance.mean(0).tolist(),
        "mean_importance_randomised": randomised.mean(0).tolist(),
        "magnitude_ratio": magnitude_ratio(trained, randomised),
        "top1_agreement": float(np.mean(trained.argmax(1) == randomised.argmax(1))),
        "complexity_trained": _complexity(trained),
        "complexity_randomised": _complexity(randomised),
        "nodes": list(twin.nodes),
    }
    # eMPRT (Hedström et al. 2023): an explanation of a randomised model should be more complex
    # (spread more evenly over the nodes); > 1 means it is.
    out["complexity_ratio"] = out["complexity_randomised"] / max(out["complexity_trained"], 1e-12)
    partial = _partial_given_change(trained, randomised, change)
    out["partial_spearman"] = partial["pooled"]
    out["partial_spearman_stats"] = partial
    if change is not None:
        out["image_change"] = change.mean(0).tolist()
        out["spearman_trained_vs_image_change"] = _mean0(_spearman_rows(trained, change))
        out["spearman_randomised_vs_image_change"] = _mean0(_spearman_rows(randomised, change))
    if cascade:
        layers = _layers(clf.modules() if isinstance(clf, torch.nn.Module) else _modules_of(clf))
        curve = []
        for k in range(1, len(layers) + 1):
            imp_k = importance_with(randomised_copy(clf, random_state, top_layers=k))
            curve.append(
                {
                    "layers_randomised": k,
                    "layer": type(layers[len(layers) - k]).__name__,
                    "mean_spearman": _mean0(_spearman_rows(trained, imp_k)),
                    "partial_spearman": _partial_given_change(trained, imp_k, change)["pooled"],
                }
            )
        out["cascade"] = curve
    return out


_CONCEPT_NOTE = (
    "Deletions are of concepts (a node set to its baseline and the image re-rendered by the "
    "twin), not of pixels, so the pixel-level baselines of RELIABILITY c.6 (a Sobel edge-map "
    "ranking, ROAD's noisy-linear imputation) do not apply; the control is random concept orders."
)
_TIE = 1e-12  # AUC differences below this are float noise (equal curves), counted as ties


@torch.no_grad()
def deletion_insertion(
    model: Any,
    images: torch.Tensor,
    explanation: LocalExplanation | None = None,
    *,
    n_random_orders: int = 10,
    random_state: int = 0,
    direct: bool = True,
) -> dict[str, Any]:
    """Concept-level deletion / insertion faithfulness of the importance ranking (c.6).

    For each image the nodes are ordered by their importance. *Deletion* sets the top-1,
    top-2, ..., all nodes to a baseline and re-renders ``G(z')``; *insertion* starts from every
    node at the baseline and restores the nodes in the same order. The *real* classifier's
    ``p(target)`` on each image gives two curves of ``n_nodes + 1`` points (deletion starts at
    the reconstruction ``G(E(x))`` and ends at the all-baseline image; insertion the reverse).
    Each curve is summarised by its AUC (trapezoid over the fraction of nodes, ``[0, 1]``) and
    compared with ``n_random_orders`` random orders of the same image. A faithful ranking gives
    a lower deletion AUC and a higher insertion AUC than random orders.

    The baseline of a node is the mean of ``twin.encode`` over ``images``: the :class:`Twin`
    does not store a population mean of ``z``, so pass a representative set of images (the
    held-out split), not a handful of similar ones.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    explanation
        A :class:`~glance.explain.LocalExplanation` of these ``images`` (same order); its
        ``target`` is the class tracked. ``None``: computed with
        :class:`~glance.explain.InterventionalImportance` (target = the predicted class).
    n_random_orders
        Random orders per image (the control), at least 1.
    random_state
        Seed of the random orders.
    direct
        ``True``: deleted nodes are set without propagation (direct interventions), and nodes
        are ranked by ``direct_importance`` when the explanation has it. ``False``: the twin's
        SCM propagates each deletion to the descendants that are not themselves deleted
        (``twin.intervene(..., total=True)``), and nodes are ranked by the total ``importance``.

    Returns
    -------
    dict
        ``deletion_auc`` and ``insertion_auc``: ``{"ours", "random"}`` means over images;
        ``deletion_below_random`` / ``insertion_above_random``: share of images whose AUC beats
        the mean of its random orders, ``both_beat_random`` both at once; ``wilcoxon_p``:
        one-sided paired Wilcoxon p-values ``{"deletion", "insertion"}`` (1.0 when every
        difference is zero); ``per_image`` AUCs and curves (ours and the random mean);
        ``fractions`` (x axis), ``target`` and ``target_classes`` per image, ``baseline``,
        ``ranking``, counts, and ``note`` on the pixel-level baselines.

    Raises
    ------
    ConfigError
        Bad ``n_random_orders``, or an ``explanation`` that does not match ``images``/``model``.

    References
    ----------
    Petsiuk, Das & Saenko (2018), "RISE: Randomized input sampling for explanation of black-box
    models" (deletion and insertion metrics).
    """
    twin = _twin(model)
    if isinstance(n_random_orders, bool) or not isinstance(n_random_orders, (int, np.integer)):
        raise ConfigError(
            f"'n_random_orders' of deletion_insertion must be a positive int; got "
            f"{n_random_orders!r}"
        )
    if n_random_orders < 1:
        raise ConfigError(
            f"'n_random_orders' of deletion_insertion must be >= 1; got {n_random_orders}"
        )
    x = _check_images(images, "deletion_insertion")
    exp = _matching_explanation(twin, x, explanation)
    imp, ranking = _ranking_importance(exp, direct)
    n, d = imp.shape
    z = torch.cat([twin.encode(x[s : s + 256]).float() for s in range(0, n, 256)])
    base = z.mean(0)
    rng = np.random.default_rng(random_state)
    ours = np.argsort(-imp, axis=1, kind="stable")[:, None]
    orders = np.concatenate([ours, rng.random((n, int(n_random_orders), d)).argsort(-1)], 1)
    renderer = Renderer(twin, batch_size=512, keep_images=False)
    curves = _deletion_insertion_curves(renderer, z, base, orders, exp.target, total=not direct)
    auc = (curves[..., :-1] + curves[..., 1:]).sum(-1) / (2.0 * d)  # [N, 1 + R, 2]
    summary = _compare_aucs(auc)
    per_image = summary.pop("per_image")
    target = np.asarray(exp.target, dtype=np.int64)
    return {
        **summary,
        "per_image": {
            **per_image,
            "deletion_curve": curves[:, 0, 0].tolist(),
            "insertion_curve": curves[:, 0, 1].tolist(),
            "random_deletion_curve": curves[:, 1:, 0].mean(1).tolist(),
            "random_insertion_curve": curves[:, 1:, 1].mean(1).tolist(),
        },
        "fractions": (np.arange(d + 1) / d).tolist(),
        "target": target.tolist(),
        "target_classes": [twin.classes[t] for t in target],
        "baseline": {
            "source": "mean of twin.encode over the given images",
            "values": dict(zip(twin.nodes, base.double().tolist(), strict=True)),
        },
        "ranking": ranking,
        "direct": bool(direct),
        "n_images": int(n),
        "n_nodes": int(d),
        "n_random_orders": int(n_random_orders),
        "random_state": random_state,
        "n_rendered": renderer.n_rendered,
        "note": _CONCEPT_NOTE,
    }


def _check_images(images: Any, caller: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"'images' of {caller} must be a tensor (N, C, H, W), N >= 1; got {got}")
    return images.detach().float()


def _matching_explanation(
    twin: Twin, x: torch.Tensor, explanation: LocalExplanation | None
) -> LocalExplanation:
    """The given explanation after checking it matches; else one computed on ``x``."""
    if explanation is None:
        return InterventionalImportance(twin, keep_images=False).explain(x)
    if not isinstance(explanation, LocalExplanation):
        raise ConfigError(
            "'explanation' of deletion_insertion must be a LocalExplanation; got "
            f"{type(explanation).__name__}"
        )
    if len(explanation) != x.shape[0] or tuple(explanation.nodes) != twin.nodes:
        raise ConfigError(
            f"'explanation' of deletion_insertion covers {len(explanation)} images over nodes "
            f"{list(explanation.nodes)}; expected {x.shape[0]} images over {list(twin.nodes)} "
            "(explain the same images with the same model)"
        )
    return explanation


def _ranking_importance(exp: LocalExplanation, direct: bool) -> tuple[np.ndarray, str]:
    """Direct importances for direct deletions when the explanation has them, else total."""
    if direct and np.all(np.isfinite(exp.direct_importance)):
        return np.asarray(exp.direct_importance, dtype=np.float64), "direct"
    return np.nan_to_num(np.asarray(exp.importance, dtype=np.float64)), "total"


def _deletion_insertion_curves(
    renderer: Renderer,
    z: torch.Tensor,
    base: torch.Tensor,
    orders: np.ndarray,
    target: np.ndarray,
    *,
    total: bool,
) -> np.ndarray:
    """``p(target)`` along every curve, shape (N, n_orders, 2 [deletion, insertion], d + 1).

    Every ``z'`` of every image, order and step is built first; identical ones (the shared
    endpoints, coinciding prefixes) are rendered once, in one chunked generator pass.
    """
    n, n_orders, d = orders.shape
    pos = np.argsort(orders, axis=-1)  # rank of each node in each order
    steps = np.arange(d + 1)[:, None]
    first_k = pos[:, :, None, :] < steps  # [N, O, d + 1, d]: the first k nodes of the order
    # Deletion: the first k nodes at the baseline; insertion: the first k back, the rest at it.
    masks = np.stack([first_k, ~first_k], axis=2)  # [N, O, 2, d + 1, d]: True = at baseline
    img = np.broadcast_to(np.arange(n)[:, None, None, None], masks.shape[:-1]).reshape(-1)
    flat = masks.reshape(-1, d)
    keys, inverse = np.unique(np.column_stack([img, flat]), axis=0, return_inverse=True)
    rows, row_masks = keys[:, 0], keys[:, 1:].astype(bool)
    zp = _baseline_rows(renderer.twin, z[rows], base, row_masks, total)
    probs, _ = renderer(zp, "deletion_insertion")
    p = probs[np.arange(len(rows)), np.asarray(target)[rows]]
    return p[inverse.reshape(-1)].reshape(masks.shape[:-1])


def _baseline_rows(
    twin: Twin, z: torch.Tensor, base: torch.Tensor, mask: np.ndarray, total: bool
) -> torch.Tensor:
    """``z`` with the masked nodes at the baseline; with ``total`` the SCM moves the rest."""
    at_base = torch.as_tensor(mask)
    out = torch.where(at_base, base, z)
    if not total or twin.scm is None:
        return out
    has_desc = np.array([bool(twin.descendants(j)) for j in range(twin.n_nodes)])
    # Rows whose deleted nodes with descendants agree share one SCM call; deleted nodes
    # without descendants change nothing else, so they are set afterwards.
    keys, group = np.unique(mask & has_desc, axis=0, return_inverse=True)
    group = group.reshape(-1)
    for g, key in enumerate(keys):
        if not key.any():
            continue
        rows = np.flatnonzero(group == g)
        ivs = {int(j): base[j].expand(len(rows)) for j in np.flatnonzero(key)}
        zp = twin.intervene(z[rows], ivs, total=True)
        out[rows] = torch.where(at_base[rows], base, zp)
    return out


def _compare_aucs(auc: np.ndarray) -> dict[str, Any]:
    """Means, win rates and one-sided paired Wilcoxon tests of ours vs the random mean."""
    ours_del, rand_del = auc[:, 0, 0], auc[:, 1:, 0].mean(1)
    ours_ins, rand_ins = auc[:, 0, 1], auc[:, 1:, 1].mean(1)
    del_win = ours_del < rand_del - _TIE
    ins_win = ours_ins > rand_ins + _TIE
    return {
        "deletion_auc": {"ours": float(ours_del.mean()), "random": float(rand_del.mean())},
        "insertion_auc": {"ours": float(ours_ins.mean()), "random": float(rand_ins.mean())},
        "deletion_below_random": float(del_win.mean()),
        "insertion_above_random": float(ins_win.mean()),
        "both_beat_random": float((del_win & ins_win).mean()),
        "wilcoxon_p": {
            "deletion": _wilcoxon_p(ours_del - rand_del, "less"),
            "insertion": _wilcoxon_p(ours_ins - rand_ins, "greater"),
        },
        "per_image": {
            "deletion_auc": {"ours": ours_del.tolist(), "random": rand_del.tolist()},
            "insertion_auc": {"ours": ours_ins.tolist(), "random": rand_ins.tolist()},
        },
    }


def _wilcoxon_p(diff: np.ndarray, alternative: str) -> float:
    """One-sided paired Wilcoxon signed-rank p-value; 1.0 when every difference is zero."""
    diff = np.where(np.abs(diff) < _TIE, 0.0, diff)
    if not np.any(diff):
        return 1.0  # no evidence either way (scipy would divide by zero)
    return float(wilcoxon(diff, alternative=alternative).pvalue)
