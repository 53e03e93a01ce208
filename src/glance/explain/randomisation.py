"""The model-parameter randomisation sanity check of the importances (Adebayo et al. 2018).

:func:`randomisation_sanity` re-initialises the classifier's weights (:func:`randomised_copy`)
and compares the importances; they must not correlate beyond what both share through how much
each node changes the image (:func:`partial_rank_correlation`), and the randomised ones must be
small (:func:`magnitude_ratio`). The check returns a JSON-ready dict for ``metrics.json``
(:func:`magnitude_ratio` a float).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from glance.exceptions import ConfigError, ShapeError
from glance.explain._common import as_twin
from glance.explain.explanation import LocalExplanation
from glance.explain.importance import InterventionalImportance

__all__ = [
    "randomised_copy",
    "randomisation_sanity",
    "partial_rank_correlation",
    "magnitude_ratio",
]


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
    twin = as_twin(model)
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
