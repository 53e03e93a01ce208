"""The choices of causal discovery and of the SCM, listed once, and :class:`DiscoveryOptions`.

Each choice is a ``Literal``; the tuples below are derived from it, and the signatures, the
validation (:func:`_check_params`) and the CLI's ``choices=`` (``glance graph``) all read them
from here, so adding a method or a CI test is one edit in this module (plus its backend).

:class:`DiscoveryOptions` holds the options of one search. :func:`glance.causal.discover`,
:func:`glance.causal.bootstrap_discover` and :func:`glance.causal.discover_from_glance` take it
as ``options=`` or its fields as keyword arguments (``discover(x, method="ges")``);
:meth:`DiscoveryOptions.resolve` merges the two and validates the result.

This module imports nothing from the rest of :mod:`glance.causal` (only the exceptions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

from glance.exceptions import ConfigError

__all__ = [
    "CI_TESTS",
    "DATA_CI_TESTS",
    "DISCOVERY_METHODS",
    "MECHANISMS",
    "ORIENTATIONS",
    "CITest",
    "DiscoveryMethod",
    "DiscoveryOptions",
    "Mechanism",
    "Orientation",
]

#: ``"pc"`` (constraint-based) or ``"ges"`` (score-based, BIC).
DiscoveryMethod = Literal["pc", "ges"]
#: PC's conditional-independence tests that run on data.
DataCITest = Literal["fisherz", "rank_fisherz", "kci"]
#: ... plus ``d_separation``, an oracle for tests: pass ``ci_kwargs={"true_dag": G}`` to
#: :func:`~glance.causal.discover` with a ``networkx.DiGraph`` over column indices.
CITest = Literal[DataCITest, "d_separation"]
#: PC's collider rule.
Orientation = Literal["conservative", "sepset"]
#: The mechanism of every node of the structural causal model.
Mechanism = Literal["linear", "mlp", "gbm"]

DISCOVERY_METHODS: tuple[str, ...] = get_args(DiscoveryMethod)
DATA_CI_TESTS: tuple[str, ...] = get_args(DataCITest)
CI_TESTS: tuple[str, ...] = get_args(CITest)
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
MECHANISMS: tuple[str, ...] = get_args(Mechanism)

#: Fewest rows KCI may be run on.
KCI_MIN_SUBSAMPLE = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscoveryOptions:
    """Options of one causal discovery (validated on construction).

    Parameters
    ----------
    method
        ``"pc"`` (constraint-based) or ``"ges"`` (score-based, BIC).
    ci_test
        PC's conditional-independence test: ``"fisherz"`` (linear-Gaussian),
        ``"rank_fisherz"`` (Fisher-z on each column's normal scores, the Gaussian-copula PC of
        Harris & Drton 2013: unchanged by any monotone transform of a node, such as a logit
        that saturates), ``"kci"`` (kernel, nonlinear; run on a random subsample of
        ``kci_subsample`` rows) or the ``"d_separation"`` oracle (tests only).
    alpha
        Significance level of the CI tests, in (0, 1). Smaller gives sparser graphs.
    orientation
        PC's collider rule: ``"conservative"`` orients only definite colliders (an ambiguous
        triple stays unoriented); ``"sepset"`` is the classic rule. Ignored by GES.
    max_k
        Largest conditioning set PC tries, or most parents GES gives a node (``None``: no
        limit).
    kci_subsample
        Rows used by KCI (its cost grows with the cube of the rows); at least 20.

    Raises
    ------
    ConfigError
        An unknown choice or an out-of-range number, naming the option.

    Examples
    --------
    >>> DiscoveryOptions(method="ges").params()
    {'method': 'ges', 'score': 'local_score_BIC', 'max_k': None}
    >>> DiscoveryOptions.resolve(None, {"alpha": 0.05}, "discover").alpha
    0.05
    """

    method: DiscoveryMethod = "pc"
    ci_test: CITest = "fisherz"
    alpha: float = 0.01
    orientation: Orientation = "conservative"
    max_k: int | None = None
    kci_subsample: int = 400

    def __post_init__(self) -> None:
        _check_params(self.to_dict(), "DiscoveryOptions")

    def to_dict(self) -> dict[str, Any]:
        """Every option, by name."""
        return dataclasses.asdict(self)

    def params(self) -> dict[str, Any]:
        """The options the method uses, as recorded in a graph's ``meta["params"]``."""
        out: dict[str, Any] = {"method": self.method}
        if self.method == "pc":
            out.update(alpha=float(self.alpha), ci_test=self.ci_test, orientation=self.orientation)
            if self.ci_test == "kci":
                out["kci_subsample"] = self.kci_subsample
        else:
            out["score"] = "local_score_BIC"
        out["max_k"] = self.max_k
        return out

    @classmethod
    def resolve(
        cls, options: DiscoveryOptions | None, overrides: Mapping[str, Any], caller: str
    ) -> DiscoveryOptions:
        """``options`` (default: the defaults) with the keyword arguments ``overrides`` applied.

        Raises
        ------
        ConfigError
            ``options`` is not a :class:`DiscoveryOptions`, ``overrides`` names something that
            is not an option, or a value is invalid; the message names ``caller``.
        """
        if options is not None and not isinstance(options, DiscoveryOptions):
            raise ConfigError(
                f"'options' of {caller} must be a DiscoveryOptions; got {type(options).__name__}"
            )
        base = options if options is not None else cls()
        if not overrides:
            return base
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(
                f"{caller} got unknown keyword argument(s) {unknown}; the discovery options "
                f"are {', '.join(names)}"
            )
        merged = {**base.to_dict(), **overrides}
        _check_params(merged, caller)
        return cls(**merged)


def _check_params(values: Mapping[str, Any], caller: str) -> None:
    """Raise :class:`ConfigError` naming ``caller`` for the first invalid discovery option."""
    method, ci_test, alpha = values["method"], values["ci_test"], values["alpha"]
    kci_subsample, orientation, max_k = (
        values["kci_subsample"],
        values["orientation"],
        values["max_k"],
    )
    if method not in DISCOVERY_METHODS:
        raise ConfigError(
            f"'method' of {caller} must be one of {list(DISCOVERY_METHODS)}; got {method!r}"
        )
    if ci_test not in CI_TESTS:
        raise ConfigError(f"'ci_test' of {caller} must be one of {list(CI_TESTS)}; got {ci_test!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"'alpha' of {caller} must be in (0, 1); got {alpha!r}")
    if (
        isinstance(kci_subsample, bool)
        or not isinstance(kci_subsample, int)
        or kci_subsample < KCI_MIN_SUBSAMPLE
    ):
        raise ConfigError(
            f"'kci_subsample' of {caller} must be an integer >= {KCI_MIN_SUBSAMPLE}; "
            f"got {kci_subsample!r}"
        )
    if orientation not in ORIENTATIONS:
        raise ConfigError(
            f"'orientation' of {caller} must be one of {list(ORIENTATIONS)}; got {orientation!r}"
        )
    if max_k is not None and (isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 0):
        raise ConfigError(f"'max_k' of {caller} must be None or an integer >= 0; got {max_k!r}")
