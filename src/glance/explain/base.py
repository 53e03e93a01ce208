"""The explainer contract: ``Explainer(model).explain(inputs, target=None, **options)``.

Shared work lives here (input checks, target formatting, mini-batching, no-grad, timings); each
method implements only ``_explain_batch``. Every explainer returns a
:class:`~glance.explain.LocalExplanation`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from glance.exceptions import ConfigError, ShapeError
from glance.explain._engine import Batch, Renderer
from glance.explain._twin import Twin
from glance.explain.calibration import partly_drawn
from glance.explain.explanation import LocalExplanation
from glance.registry import Registry

__all__ = ["Explainer", "EXPLAINERS", "TargetType"]

TargetType = int | Sequence[int] | np.ndarray | torch.Tensor | None


class Explainer:
    """Base of glance's local explainers.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` (after ``fit``, or from ``glance.load``) or a
        :class:`~glance.explain.Twin`.
    batch_size
        Images explained together; their interventions share the generator passes.
    render_batch_size
        Rows per generator + classifier call.
    keep_images
        Keep every generated image (uint8) in the explanation, for pictures.
    fidelity_floor
        Smallest share of images whose reconstruction ``G(E(x))`` the real classifier puts in
        the same class as ``x``. Below it the explanation is stamped ``meta["low_fidelity"]``
        and a warning is issued: the twin does not reproduce the decision well enough for its
        interventions to be trusted (RELIABILITY c.8).
    """

    #: Whether the method needs the SCM for what it reports (capability flag).
    uses_scm: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 16,
        render_batch_size: int = 512,
        keep_images: bool = True,
        fidelity_floor: float = 0.9,
    ) -> None:
        self.twin = model if isinstance(model, Twin) else Twin.from_glance(model)
        for name, value in (("batch_size", batch_size), ("render_batch_size", render_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{type(self).__name__}: {name!r} must be a positive int; got {value!r}"
                )
        self.batch_size = batch_size
        self.render_batch_size = render_batch_size
        self.keep_images = bool(keep_images)
        if not 0.0 <= fidelity_floor <= 1.0:
            raise ConfigError(
                f"{type(self).__name__}: 'fidelity_floor' must lie in [0, 1]; "
                f"got {fidelity_floor!r}"
            )
        self.fidelity_floor = float(fidelity_floor)

    def explain(
        self, inputs: torch.Tensor, target: TargetType = None, **options: Any
    ) -> LocalExplanation:
        """Explain ``inputs``.

        Parameters
        ----------
        inputs
            Float images in ``[0, 1]`` of shape (N, C, H, W).
        target
            Class (one int for all images, or one per image). Importances track the probability
            of this class and the counterfactual flips the decision to it. ``None``: importances
            track the predicted class and counterfactuals go to the second most likely class.
        **options
            Method options (see the subclass).

        Returns
        -------
        LocalExplanation
        """
        x = self._check_inputs(inputs)
        tgt = self._format_target(target, x.shape[0])
        self._check_options(options)
        parts = []
        t0 = time.perf_counter()
        renderer = Renderer(self.twin, self.render_batch_size, self.keep_images)
        with torch.no_grad():
            for s in range(0, x.shape[0], self.batch_size):
                batch = Batch.prepare(renderer, x[s : s + self.batch_size])
                t = None if tgt is None else tgt[s : s + self.batch_size]
                parts.append(self._explain_batch(batch, t, renderer, **options))
        out = LocalExplanation.concatenate(parts)
        meta = dict(out.meta)
        meta.update(
            method=type(self).__name__,
            n_images=int(x.shape[0]),
            n_generated=renderer.n_rendered,
            seconds={"total": time.perf_counter() - t0, **renderer.seconds},
            # drawn through Twin.node_render (glance.explain.calibration), not the default
            calibrated_interventions=self.twin.node_render is not None,
        )
        if self.twin.node_drawn is not None:  # what the fit measured its generator to draw
            meta["drawn"] = {
                n: float(v)
                for n, v in zip(self.twin.nodes, self.twin.node_drawn, strict=True)
                if np.isfinite(v)
            }
            # The verdict travels with the explanation (like low_fidelity), so that whatever
            # shows it (plots, the CLI, the report) need not know the band.
            meta["partly_drawn"] = {n: v for n, v in meta["drawn"].items() if partly_drawn(v)}
        agreement = float(np.mean(out.prediction == out.reconstruction_prediction))
        meta["reconstruction_agreement"] = agreement
        meta["low_fidelity"] = agreement < self.fidelity_floor
        if meta["low_fidelity"]:
            warnings.warn(
                f"LOW FIDELITY: the real classifier agrees with itself on x and G(E(x)) for only "
                f"{agreement:.0%} of the images (floor {self.fidelity_floor:.0%}); the "
                "explanation describes the twin more than the classifier",
                stacklevel=2,
            )
        object.__setattr__(out, "meta", meta)
        return out

    def _explain_batch(
        self, batch: Batch, target: np.ndarray | None, renderer: Renderer, **options: Any
    ) -> LocalExplanation:
        raise NotImplementedError

    def _check_options(self, options: dict[str, Any]) -> None:
        """Hook for subclasses: reject bad options before any work is done."""

    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        name = f"'inputs' of {type(self).__name__}.explain"
        if not isinstance(inputs, torch.Tensor):
            raise ShapeError(f"{name} must be a torch.Tensor; got {type(inputs).__name__}")
        if inputs.ndim != 4 or inputs.shape[0] == 0:
            raise ShapeError(
                f"{name} must have shape (N, C, H, W) with N >= 1; got {tuple(inputs.shape)}"
            )
        x = inputs.detach().float()
        if not torch.isfinite(x).all():
            raise ShapeError(f"{name} contains NaN or inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise ShapeError(f"{name} must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
        return x

    def _format_target(self, target: TargetType, n: int) -> np.ndarray | None:
        if target is None:
            return None
        k = len(self.twin.classes)
        arr = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
        if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
            arr = np.full(n, int(arr))
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(
                f"'target' of {type(self).__name__}.explain must be an int or {n} ints; got "
                f"{arr.dtype} of shape {arr.shape}"
            )
        if arr.min() < 0 or arr.max() >= k:
            raise ConfigError(
                f"'target' of {type(self).__name__}.explain must be a class index in [0, {k}); "
                f"got {arr.min()}..{arr.max()}"
            )
        return arr.astype(np.int64)


#: Registered explainers, by name (``EXPLAINERS.get("local")(model).explain(images)``).
#:
#: Every entry is a drop-in explainer of a whole fitted model: constructed from a fitted
#: :class:`glance.Glance` or a :class:`~glance.explain.Twin` alone, it explains any images and
#: returns a :class:`~glance.explain.LocalExplanation`. The entries differ only in the options
#: their ``explain`` accepts. Callers offer exactly these names: :func:`glance.explain.explain`
#: and :meth:`glance.Glance.explain` (``explainer=``) and ``glance explain --method``. Register
#: nothing else here (a part that needs more than the model, such as a node or a precomputed
#: effect, is a function, not an entry).
EXPLAINERS: Registry[type[Explainer]] = Registry("explainer", base=Explainer)
