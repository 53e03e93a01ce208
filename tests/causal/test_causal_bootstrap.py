from __future__ import annotations

import numpy as np
import pytest
from causal_helpers import FIVE_NODE_WEIGHTS, linear_gaussian

from glance.causal import BackgroundKnowledge, bootstrap_discover
from glance.exceptions import ConfigError, DiscoveryError


def _same_seed_json(tmp_path, data, jobs):
    paths = []
    for k, n_jobs in enumerate(jobs):
        g = bootstrap_discover(data, list("abcde"), n_resamples=6, random_state=7, n_jobs=n_jobs)
        paths.append(tmp_path / f"g{k}.json")
        g.save_json(paths[-1])
    return [p.read_bytes() for p in paths]


def test_same_seed_gives_byte_identical_json(tmp_path, five_node_data):
    first, second = _same_seed_json(tmp_path, five_node_data, (1, 1))
    assert first == second
    other = bootstrap_discover(
        five_node_data, list("abcde"), n_resamples=6, random_state=8, n_jobs=1
    )
    assert other.meta["bootstrap"]["random_state"] == 8


@pytest.mark.slow  # starting joblib worker processes takes 5-20 s on a busy 2-core machine
def test_parallel_workers_give_the_same_bytes(tmp_path, five_node_data, monkeypatch):
    from glance.causal import bootstrap

    monkeypatch.setattr(bootstrap, "PARALLEL_MIN_SECONDS", 0.0)  # force the worker processes
    serial, parallel = _same_seed_json(tmp_path, five_node_data, (1, 2))
    assert serial == parallel


def test_frequencies_and_threshold():
    names = list("abcdef")
    # f is independent noise; with alpha = 0.2 spurious f-edges appear in some resamples
    x = linear_gaussian(names, FIVE_NODE_WEIGHTS, 1500, seed=4)
    g = bootstrap_discover(
        x, names, n_resamples=10, random_state=0, n_jobs=1, alpha=0.2, threshold=0.6
    )
    table = {(r["source"], r["target"]): r for r in g.meta["bootstrap"]["edge_frequencies"]}
    for a, b in FIVE_NODE_WEIGHTS:
        key = (a, b) if (a, b) in table else (b, a)
        assert table[key]["presence"] == 1.0
    assert g.edge("a", "c").directed and g.edge("a", "c").orientation_confidence >= 0.6
    for (s, t), row in table.items():
        e = g.edge(s, t)
        assert (e is not None) == (row["presence"] >= 0.6)
        if e is not None:
            assert e.confidence == pytest.approx(row["presence"])
    assert any(row["presence"] < 0.6 for row in table.values())  # something was filtered


def test_knowledge_applies_to_every_resample():
    rng = np.random.default_rng(0)
    t = rng.normal(size=800)
    i = t + rng.normal(size=800)
    bk = BackgroundKnowledge().order("thickness", "intensity")
    g = bootstrap_discover(
        np.c_[t, i], ["thickness", "intensity"], n_resamples=5, n_jobs=1, knowledge=bk
    )
    e = g.edge("thickness", "intensity")
    assert e.directed and e.source == "thickness" and e.orientation_confidence == 1.0
    assert g.meta["params"]["knowledge"]["tiers"] == [["thickness"], ["intensity"]]


def test_bad_arguments(five_node_data):
    with pytest.raises(ConfigError, match="'n_resamples'"):
        bootstrap_discover(five_node_data, n_resamples=1)
    with pytest.raises(ConfigError, match="'threshold'"):
        bootstrap_discover(five_node_data, threshold=0.0)
    with pytest.raises(DiscoveryError, match="constant"):
        bootstrap_discover(np.c_[five_node_data, np.ones(len(five_node_data))], n_jobs=1)
