"""DiscoveryOptions: one validated set of discovery options, and the choices listed once."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from glance.causal import DiscoveryOptions, bootstrap_discover, discover
from glance.causal import options as opts
from glance.exceptions import ConfigError


def test_choices_are_derived_from_the_literals():
    assert opts.DISCOVERY_METHODS == ("pc", "ges")
    assert opts.DATA_CI_TESTS == ("fisherz", "rank_fisherz", "kci")
    assert opts.CI_TESTS == ("fisherz", "rank_fisherz", "kci", "d_separation")
    assert opts.ORIENTATIONS == ("conservative", "sepset")
    assert opts.MECHANISMS == ("linear", "mlp", "gbm")
    hints = typing.get_type_hints(DiscoveryOptions)
    assert typing.get_args(hints["method"]) == opts.DISCOVERY_METHODS
    assert typing.get_args(hints["ci_test"]) == opts.CI_TESTS
    assert typing.get_args(hints["orientation"]) == opts.ORIENTATIONS


def test_the_old_module_names_are_the_same_objects():
    from glance.causal import discovery, scm

    assert discovery.DISCOVERY_METHODS is opts.DISCOVERY_METHODS
    assert discovery.CI_TESTS is opts.CI_TESTS
    assert scm.MECHANISMS is opts.MECHANISMS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "lingam"),
        ("ci_test", "chisq"),
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("alpha", True),
        ("alpha", "0.05"),
        ("orientation", "guess"),
        ("max_k", -1),
        ("max_k", 1.5),
        ("max_k", True),
        ("kci_subsample", 19),
        ("kci_subsample", 100.0),
    ],
)
def test_invalid_options_are_named(field, value):
    with pytest.raises(ConfigError, match=f"'{field}' of DiscoveryOptions"):
        DiscoveryOptions(**{field: value})
    with pytest.raises(ConfigError, match=f"'{field}' of discover"):
        DiscoveryOptions.resolve(None, {field: value}, "discover")


def test_options_are_frozen_keyword_only_and_comparable():
    o = DiscoveryOptions(method="ges", max_k=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.method = "pc"  # type: ignore[misc]
    with pytest.raises(TypeError):
        DiscoveryOptions("pc")  # type: ignore[misc]
    assert o == DiscoveryOptions(max_k=2, method="ges")
    assert o.to_dict() == {
        "method": "ges",
        "ci_test": "fisherz",
        "alpha": 0.01,
        "orientation": "conservative",
        "max_k": 2,
        "kci_subsample": 400,
    }


def test_params_record_what_the_method_uses():
    assert DiscoveryOptions().params() == {
        "method": "pc",
        "alpha": 0.01,
        "ci_test": "fisherz",
        "orientation": "conservative",
        "max_k": None,
    }
    assert DiscoveryOptions(ci_test="kci", kci_subsample=50).params()["kci_subsample"] == 50
    assert DiscoveryOptions(method="ges", max_k=3).params() == {
        "method": "ges",
        "score": "local_score_BIC",
        "max_k": 3,
    }


def test_resolve_merges_keywords_into_the_options():
    base = DiscoveryOptions(method="ges", alpha=0.05)
    assert DiscoveryOptions.resolve(base, {}, "f") is base
    assert DiscoveryOptions.resolve(None, {}, "f") == DiscoveryOptions()
    merged = DiscoveryOptions.resolve(base, {"max_k": 1}, "f")
    assert merged == DiscoveryOptions(method="ges", alpha=0.05, max_k=1)
    with pytest.raises(ConfigError, match=r"f got unknown keyword argument\(s\) \['n_resample'\]"):
        DiscoveryOptions.resolve(None, {"n_resample": 3}, "f")
    with pytest.raises(ConfigError, match="'options' of f must be a DiscoveryOptions"):
        DiscoveryOptions.resolve({"method": "ges"}, {}, "f")  # type: ignore[arg-type]


def test_discover_takes_the_options_or_their_fields(five_node_data):
    by_options = discover(five_node_data, list("abcde"), options=DiscoveryOptions(method="ges"))
    by_keyword = discover(five_node_data, list("abcde"), method="ges")
    assert by_options.meta["params"] == by_keyword.meta["params"]
    assert by_options.edges() == by_keyword.edges()
    with pytest.raises(ConfigError, match="unknown keyword argument"):
        discover(five_node_data, methd="ges")


def test_bootstrap_takes_the_options(five_node_data):
    o = DiscoveryOptions(alpha=0.05, max_k=1)
    g = bootstrap_discover(five_node_data, list("abcde"), options=o, n_resamples=2, n_jobs=1)
    assert g.meta["params"]["alpha"] == 0.05 and g.meta["params"]["max_k"] == 1
    with pytest.raises(ConfigError, match="'alpha' of bootstrap_discover"):
        bootstrap_discover(five_node_data, alpha=2.0)


def test_max_k_limits_the_conditioning_sets():
    # a -> b -> c: only a conditioning set of size 1 ({b}) separates a and c
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    b = a + rng.normal(size=2000)
    c = b + rng.normal(size=2000)
    x = np.c_[a, b, c]
    assert discover(x, list("abc")).edge("a", "c") is None
    assert discover(x, list("abc"), max_k=0).edge("a", "c") is not None
