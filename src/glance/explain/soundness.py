"""Soundness of counterfactuals and a sanity check of the importances (plain functions → dicts).

Counterfactual soundness follows Monteiro et al. (2023, "Measuring axiomatic soundness of
counterfactual image models"):

- :func:`effectiveness` — intervening on an aligned context changes the context *measured on the
  generated image* the right way (on Morpho-MNIST, with :mod:`glance.data.morphometrics`);
- :func:`composition` — the null intervention reproduces the reconstruction (and re-encoding the
  reconstruction comes back to it);
- :func:`reversibility` — undoing an intervention comes back to the reconstruction.

:func:`randomisation_sanity` is the model-parameter randomisation test (Adebayo et al. 2018):
re-initialise the classifier's weights and compare the importances; they must not correlate.
Every function returns a JSON-ready dict for ``metrics.json``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from glance.exceptions import ConfigError
from glance.explain._twin import Twin
from glance.explain.importance import InterventionalImportance

__all__ = ["effectiveness", "composition", "reversibility", "randomisation_sanity"]


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


@torch.no_grad()
def effectiveness(
    model: Any,
    images: torch.Tensor,
    node: str | int,
    measure: Callable[[torch.Tensor], np.ndarray],
    *,
    deltas: Sequence[float] = (-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0),
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
        ``images -> values (N,)``: the attribute measured on images (e.g. morphometric thickness).
    deltas
        Shifts in node std units.
    unit
        Attribute units per node std (``context_std_`` of the node) for the calibration slope.

    Returns
    -------
    dict
        ``spearman`` between the intended shift and the measured change (all images and shifts
        pooled), ``per_image_spearman`` (mean), ``slope`` of change on intended change (1 is
        perfect calibration), ``mean_abs_error`` of the change in attribute units, counts.
    """
    twin = _twin(model)
    j = _node(twin, node, "effectiveness")
    z = twin.encode(images).float()
    base = np.asarray(measure(twin.generate(z)), dtype=np.float64)
    rows, changes = [], []
    for dl in deltas:
        zp = twin.intervene(z, {j: z[:, j] + float(dl) * float(twin.node_std[j])})
        m = np.asarray(measure(twin.generate(zp)), dtype=np.float64)
        rows.append(np.full(len(m), float(dl) * float(twin.node_std[j]) * unit))
        changes.append(m - base)
    intended, change = np.stack(rows, 1), np.stack(changes, 1)  # [N, G]
    ok = np.isfinite(change).all(1)
    per = [spearmanr(intended[i], change[i])[0] for i in np.flatnonzero(ok)]
    per = [r for r in per if np.isfinite(r)]
    x, y = intended[ok].ravel(), change[ok].ravel()
    slope = float(np.polyfit(x, y, 1)[0]) if x.size > 1 else float("nan")
    return {
        "node": twin.nodes[j],
        "deltas": [float(d) for d in deltas],
        "spearman": float(spearmanr(x, y)[0]) if x.size > 1 else float("nan"),
        "per_image_spearman": float(np.mean(per)) if per else float("nan"),
        "slope": slope,
        "mean_abs_error": float(np.mean(np.abs(y - x))) if x.size else float("nan"),
        "n_images": int(ok.sum()),
        "n_unmeasurable": int((~ok).sum()),
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
        zp = twin.intervene(z, {j: z[:, j] + float(delta) * float(twin.node_std[j])})
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


def randomised_copy(classifier: Any, random_state: int = 0) -> Any:
    """A deep copy of ``classifier`` with every parameter re-initialised (the original is kept).

    Modules with ``reset_parameters`` use their own initialisation; other parameters get
    ``N(0, 0.05²)``. The global RNG state is restored afterwards.
    """
    clone = copy.deepcopy(classifier)
    modules = clone.modules() if isinstance(clone, torch.nn.Module) else _modules_of(clone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        with torch.no_grad():
            for m in modules:
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                elif isinstance(m, torch.nn.Module):
                    for p in m.parameters(recurse=False):
                        p.normal_(0.0, 0.05)
    return clone


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


@torch.no_grad()
def randomisation_sanity(
    model: Any,
    images: torch.Tensor,
    classifier: Any = None,
    *,
    deltas: Sequence[float] = (-1.0, 1.0),
    random_state: int = 0,
    atol: float = 1e-6,
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

    Returns
    -------
    dict
        ``mean_spearman`` over images of the rank correlation between the two importance
        vectors, where an image whose trained or randomised vector is constant (no ranking)
        counts as 0; ``mean_spearman_defined`` over the other images only; ``n_undefined``;
        ``per_image`` values (NaN = undefined) and the mean importances of both.
    """
    twin = _twin(model)
    clf = classifier if classifier is not None else getattr(model, "adapter_", None)
    if clf is None:
        raise ConfigError("'classifier' of randomisation_sanity is required for a Twin")
    rand = randomised_copy(clf, random_state)
    call = rand.logits if hasattr(rand, "logits") else rand
    if isinstance(rand, torch.nn.Module):
        rand.eval()
    twin_r = dataclasses.replace(twin, classify=call)
    imp = InterventionalImportance(twin, keep_images=False).explain(images, deltas=deltas)
    imp_r = InterventionalImportance(twin_r, keep_images=False).explain(
        images, target=imp.target, deltas=deltas
    )
    rho = []
    for a, b in zip(_floor(imp.importance, atol), _floor(imp_r.importance, atol), strict=True):
        r = spearmanr(a, b)[0] if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan
        rho.append(float(r))
    arr = np.asarray(rho)
    defined = np.isfinite(arr)
    return {
        # A constant importance vector carries no ranking, hence no agreement: counted as 0.
        "mean_spearman": float(np.where(defined, arr, 0.0).mean()),
        "mean_spearman_defined": float(arr[defined].mean()) if defined.any() else float("nan"),
        "per_image": arr.tolist(),
        "n_undefined": int((~np.isfinite(arr)).sum()),
        "mean_importance_trained": imp.importance.mean(0).tolist(),
        "mean_importance_randomised": imp_r.importance.mean(0).tolist(),
        "nodes": list(twin.nodes),
    }
