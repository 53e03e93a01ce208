from __future__ import annotations

import json

import pytest

from glance.causal import BackgroundKnowledge
from glance.exceptions import ConfigError

NAMES = ["thickness", "intensity", "concept_0", "output_0", "output_1"]
KINDS = ["context", "context", "concept", "output", "output"]


def test_default_tiers():
    rk = BackgroundKnowledge().resolve(NAMES, KINDS)
    t, i, c, o0, o1 = range(5)
    assert rk.is_forbidden(c, t) and not rk.is_forbidden(t, c)  # concepts never cause contexts
    assert rk.is_forbidden(o0, c) and rk.is_forbidden(o0, o1)  # outputs are sinks
    assert not rk.is_forbidden(t, i) and not rk.is_forbidden(i, t)
    none = BackgroundKnowledge(default_tiers=False).resolve(NAMES, KINDS)
    assert not none.is_forbidden(o0, o1)


def test_builder_returns_self_and_rules():
    bk = BackgroundKnowledge()
    assert bk.order("thickness", "intensity") is bk
    assert bk.forbid("concept_0", "output_1") is bk and bk.require("thickness", "concept_0") is bk
    rk = bk.resolve(NAMES, KINDS)
    assert rk.is_forbidden(1, 0) and not rk.is_forbidden(0, 1)
    assert rk.is_forbidden(2, 4)
    assert rk.required == {(0, 2)}
    assert not rk.allowed(2, 0)


def test_to_causallearn_matches():
    from causallearn.graph.GraphNode import GraphNode

    rk = BackgroundKnowledge().order("thickness", "intensity").resolve(NAMES, KINDS)
    cl = rk.to_causallearn()
    nodes = [GraphNode(n) for n in NAMES]
    for a in range(5):
        for b in range(5):
            if a != b:
                assert cl.is_forbidden(nodes[a], nodes[b]) == rk.is_forbidden(a, b), (a, b)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    bk = BackgroundKnowledge().order("thickness", "intensity").forbid("concept_0", "output_1")
    bk.require("thickness", "output_0")
    path = tmp_path / f"knowledge{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(bk.to_dict()))
    else:
        path.write_text(
            "tiers:\n  - [thickness]\n  - [intensity]\n"
            "forbidden:\n  - [concept_0, output_1]\n"
            "required:\n  - [thickness, output_0]\n"
        )
    assert BackgroundKnowledge.from_file(path).to_dict() == bk.to_dict()


def test_file_errors(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text("tier:\n  - [thickness]\n")
    with pytest.raises(ConfigError, match="unknown key 'tier'.*did you mean 'tiers'"):
        BackgroundKnowledge.from_file(path)
    path.write_text("forbidden:\n  - [a, b, c]\n")
    with pytest.raises(ConfigError, match=r"forbidden\[0\] must be a \[source, target\] pair"):
        BackgroundKnowledge.from_file(path)
    with pytest.raises(ConfigError, match="not found"):
        BackgroundKnowledge.from_file(tmp_path / "missing.yaml")


def test_resolution_errors():
    with pytest.raises(ConfigError, match="'intensty', which is not a node.*'intensity'"):
        BackgroundKnowledge().forbid("intensty", "thickness").resolve(NAMES, KINDS)
    with pytest.raises(ConfigError, match="requires 'output_0' -> 'thickness'.*default tiers"):
        BackgroundKnowledge().require("output_0", "thickness").resolve(NAMES, KINDS)
    with pytest.raises(ConfigError, match="in tiers 0 and 1"):
        BackgroundKnowledge().order("thickness", "thickness").resolve(NAMES, KINDS)
    with pytest.raises(ConfigError, match="and the reverse"):
        (
            BackgroundKnowledge()
            .require("thickness", "intensity")
            .require("intensity", "thickness")
            .resolve(NAMES, KINDS)
        )
