"""The faithfulness thresholds the report colours each figure against: one table, in one place.

Values come from the capability issues (twin surrogate, issue 4): the ``fast`` preset must reach
the ``floor``; the ``default`` preset the ``target``. A figure at or above ``target`` is
``pass``, between ``floor`` and ``target`` is ``warn``, below ``floor`` is ``fail``. Metrics
without an agreed bar (MIG, DCI, FID, KID, time) are shown uncoloured (``info``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Threshold", "THRESHOLDS", "FIDELITY_FLOOR", "grade", "Grade"]

Grade = Literal["pass", "warn", "fail", "info", "missing"]


@dataclass(frozen=True)
class Threshold:
    """A metric's bar: figures must reach ``floor`` and ideally ``target``."""

    label: str
    floor: float | None
    target: float | None
    description: str
    higher_is_better: bool = True

    def describe(self) -> str:
        """Human-readable bar, e.g. ``"≥ 0.95 (≥ 0.97 default preset)"``."""
        if self.floor is None:
            return "no agreed threshold"
        op = "≥" if self.higher_is_better else "≤"
        text = f"{op} {self.floor:g}"
        if self.target is not None and self.target != self.floor:
            text += f" (target {op} {self.target:g})"
        return text


#: metrics.json key → threshold. Per-context maps (alignment) use the same bar for each context.
THRESHOLDS: dict[str, Threshold] = {
    "fidelity": Threshold(
        "Fidelity", 0.95, 0.97, "top-1 agreement of the surrogate S(E(h(x))) with f(x)"
    ),
    "reconstruction_fidelity": Threshold(
        "Reconstruction fidelity", 0.90, 0.90, "top-1 agreement of f(G(E(h(x)))) with f(x)"
    ),
    "sampled_fidelity": Threshold(
        "Sampled fidelity", 0.90, 0.90, "agreement of f(G(z)) with S(z), z from the mixture"
    ),
    "alignment_r2": Threshold(
        "Alignment R²", 0.80, 0.90, "R² of each aligned concept dim against its context"
    ),
    "generated_alignment": Threshold(
        "Generated alignment",
        0.80,
        0.80,
        "Spearman of the aligned dim against the context measured on G(z)",
    ),
    "mig": Threshold("MIG", None, None, "mutual information gap (disentanglement)"),
    "dci": Threshold("DCI", None, None, "disentanglement, completeness, informativeness"),
    "fid": Threshold("FID", None, None, "Fréchet distance on the classifier's features", False),
    "kid": Threshold(
        "KID", None, None, "kernel inception distance on the classifier's features", False
    ),
    "fit_seconds": Threshold("Fit time (s)", None, None, "wall time of glance fit", False),
    "counterfactual_effectiveness": Threshold(
        "Counterfactual effectiveness",
        0.80,
        0.80,
        "Spearman between an intervention on the aligned dim and the change of the context "
        "measured on the generated image",
    ),
    "counterfactual_composition": Threshold(
        "Null intervention, image change (L1)",
        None,
        None,
        "mean pixel change of G(z') against G(E(x)) when every node is set to its own value",
        False,
    ),
    "counterfactual_reversibility": Threshold(
        "Reversibility, class agreement",
        None,
        None,
        "real classifier agrees on G(E(x)) and the image after an intervention is undone",
    ),
}

#: Below this fidelity the report carries a "LOW FIDELITY" banner.
FIDELITY_FLOOR: float = THRESHOLDS["fidelity"].floor  # type: ignore[assignment]


def grade(metric: str, value: float | None) -> Grade:
    """Grade ``value`` of ``metric`` against :data:`THRESHOLDS`.

    Parameters
    ----------
    metric
        A ``metrics.json`` key (``"alignment_r2"`` grades each context's value).
    value
        The figure; ``None`` or NaN means "not computed".

    Returns
    -------
    str
        ``"pass"``, ``"warn"``, ``"fail"``, ``"info"`` (no threshold) or ``"missing"``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    bar = THRESHOLDS.get(metric)
    if bar is None or bar.floor is None:
        return "info"
    sign = 1.0 if bar.higher_is_better else -1.0
    target = bar.target if bar.target is not None else bar.floor
    if sign * value >= sign * target:
        return "pass"
    if sign * value >= sign * bar.floor:
        return "warn"
    return "fail"
