from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from causal_helpers import FIVE_NODE_EDGES, FIVE_NODE_WEIGHTS, linear_gaussian

from glance.causal import BackgroundKnowledge, discover
from glance.exceptions import ConfigError, DiscoveryError
from glance.metrics.graph import structural_hamming_distance, true_cpdag


def _marks(g):
    return {
        (e.source, e.target, e.directed) if e.directed else (*sorted((e.source, e.target)), False)
        for e in g.edges()
    }


def _random_dag(n, p, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    return [
        (int(perm[i]), int(perm[j])) for i in range(n) for j in range(i + 1, n) if rng.random() < p
    ]


@pytest.mark.parametrize("seed", range(6))
def test_oracle_pc_recovers_the_exact_cpdag(seed):
    n = 9
    edges = _random_dag(n, 0.3, seed)
    names = [f"x{i}" for i in range(n)]
    dag = nx.DiGraph(edges)
    dag.add_nodes_from(range(n))
    placeholder = np.random.default_rng(0).normal(size=(50, n))  # the oracle ignores the data
    g = discover(placeholder, names, ci_test="d_separation", ci_kwargs={"true_dag": dag})
    truth = true_cpdag([(names[a], names[b]) for a, b in edges], names=names)
    assert _marks(g) == _marks(truth)


def test_pc_recovers_the_exact_cpdag_from_2000_samples(five_node_data):
    g = discover(five_node_data, list("abcde"))
    assert _marks(g) == _marks(true_cpdag(FIVE_NODE_EDGES, names=list("abcde")))
    # a -> c with weight 0.8: standardised effect = 0.8 * std(a) / std(c)
    sd = five_node_data.std(0)
    assert g.edge("a", "c").effect == pytest.approx(0.8 * sd[0] / sd[2], abs=0.05)
    assert g.meta["algorithm"] == "pc" and g.meta["n_samples"] == 2000


def test_pc_shd_at_most_one_over_ten_seeds():
    shds = [
        structural_hamming_distance(
            discover(
                linear_gaussian(list("abcde"), FIVE_NODE_WEIGHTS, 2000, seed=s), list("abcde")
            ),
            FIVE_NODE_EDGES,
        )
        for s in range(10)
    ]
    assert max(shds) <= 1, shds


def test_ges_recovers_the_cpdag(five_node_data):
    g = discover(five_node_data, list("abcde"), method="ges")
    assert structural_hamming_distance(g, FIVE_NODE_EDGES) <= 1
    assert g.meta["algorithm"] == "ges"


def test_two_variables_stay_undirected():
    rng = np.random.default_rng(1)
    t = 0.5 + rng.gamma(10, 1 / 5, 3000)
    i = 64 + 191 / (1 + np.exp(-(2 * (t - 2.5) + 0.5 * rng.normal(size=3000))))
    g = discover(np.c_[t, i], ["thickness", "intensity"])
    (e,) = g.edges()
    assert not e.directed and e.orientation_confidence == 0.0 and e.effect > 0.5
    g = discover(
        np.c_[t, i],
        ["thickness", "intensity"],
        knowledge=BackgroundKnowledge().order("thickness", "intensity"),
    )
    assert g.parents("intensity") == ["thickness"]


def test_default_tiers_make_outputs_sinks():
    # output depends on a context; without tiers PC could not orient a lone edge
    rng = np.random.default_rng(2)
    c = rng.normal(size=1500)
    out = 2 * c + rng.normal(size=1500)
    out2 = -c + rng.normal(size=1500)
    g = discover(np.c_[out, c, out2], ["output_a", "size", "output_b"])
    assert g.parents("output_a") == ["size"] and g.parents("output_b") == ["size"]
    assert g.edge("output_a", "output_b") is None  # outputs never cause each other
    g = discover(
        np.c_[out, c], ["output_a", "size"], knowledge=BackgroundKnowledge(default_tiers=False)
    )
    assert not g.edges()[0].directed


def test_knowledge_forbidden_and_required(five_node_data):
    bk = BackgroundKnowledge().forbid("c", "d").forbid("d", "c").require("b", "e")
    g = discover(five_node_data, list("abcde"), knowledge=bk)
    assert g.edge("c", "d") is None
    assert "b" in g.parents("e")
    assert any("added required edge b -> e" in n for n in g.meta["knowledge_conflicts"])
    # knowledge that contradicts a v-structure in GES output is applied and reported
    bk = BackgroundKnowledge().forbid("a", "c")
    g = discover(five_node_data, list("abcde"), method="ges", knowledge=bk)
    assert g.parents("a") == ["c"]
    assert any("reversed" in n for n in g.meta["knowledge_conflicts"])


def test_kci_finds_a_nonlinear_dependence():
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, 600)
    y = x**2 + 0.3 * rng.normal(size=600)  # zero correlation, strong dependence
    z = rng.normal(size=600)
    g_lin = discover(np.c_[x, y, z], list("xyz"))
    g_kci = discover(np.c_[x, y, z], list("xyz"), ci_test="kci", kci_subsample=150)
    assert g_lin.edge("x", "y") is None
    assert g_kci.edge("x", "y") is not None and g_kci.edge("x", "z") is None
    assert g_kci.meta["params"]["kci_subsample"] == 150


def _copula_chain(seed, n=2000):
    """x -> m -> y, jointly Gaussian underneath; m and y are seen through monotone, nonlinear
    transforms (y saturates, as a classifier's logit does)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    m = x + 0.5 * rng.normal(size=n)
    y = m + 0.3 * rng.normal(size=n)
    return np.c_[x, np.exp(m), 1 / (1 + np.exp(-2 * y))]


@pytest.mark.parametrize("seed", range(3))
def test_rank_fisherz_separates_through_a_monotone_mediator(seed):
    data, names = _copula_chain(seed), ["x", "m", "output_y"]
    linear = discover(data, names, ci_test="fisherz")
    ranks = discover(data, names, ci_test="rank_fisherz")
    # the linear test mistakes the curvature for a second path; the ranks do not
    assert linear.edge("x", "output_y") is not None
    assert ranks.edge("x", "output_y") is None
    assert ranks.edge("x", "m") is not None and ranks.edge("m", "output_y") is not None
    assert ranks.meta["params"]["ci_test"] == "rank_fisherz"


def test_normal_scores_ignore_monotone_transforms():
    from glance.causal._causallearn import normal_scores

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    scores = normal_scores(x)
    np.testing.assert_array_equal(scores, normal_scores(np.c_[np.exp(x[:, 0]), x[:, 1] ** 3]))
    assert np.argsort(scores[:, 0]).tolist() == np.argsort(x[:, 0]).tolist()
    assert abs(scores.mean()) < 1e-12 and 0.95 < scores.std() < 1.0
    assert np.all(np.isfinite(normal_scores(np.ones((10, 1)))))  # ties: no infinite score


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: np.c_[x, np.full(len(x), 3.0)], r"\['c3'\] are constant"),
        (lambda x: np.c_[x, 2 * x[:, 1] + 1], "duplicated columns: 'c1' = \\(affine\\) 'c3'"),
        (
            lambda x: np.c_[x, x[:, 0] - 0.5 * x[:, 2]],
            r"columns \['c0', 'c2', 'c3'\] are collinear",
        ),
        (
            lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x),
            r"NaN or infinite values in column\(s\) 'c1' \(1 rows\)",
        ),
        (lambda x: x[:4], "4 samples for 3 columns"),
    ],
)
def test_degenerate_data_is_reported_before_the_search(make, match):
    x = make(np.random.default_rng(0).normal(size=(200, 3)))
    names = [f"c{i}" for i in range(x.shape[1])]
    with pytest.raises(DiscoveryError, match=match):
        discover(x, names)


def test_bad_parameters():
    x = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ConfigError, match="'method' of discover"):
        discover(x, method="lingam")
    with pytest.raises(ConfigError, match="'alpha'"):
        discover(x, alpha=1.5)
    with pytest.raises(DiscoveryError, match="'names' has 2 entries"):
        discover(x, ["a", "b"])
    with pytest.raises(ConfigError, match="Did you mean 'thickness'"):
        discover(
            x,
            ["thickness", "intensity", "c"],
            knowledge=BackgroundKnowledge().order("thicknes", "intensity"),
        )


def test_near_copy_outputs_do_not_hide_their_parents():
    # Two logits of one classifier are near-deterministic copies of each other; conditioning
    # on one would "separate" the other from its true parents. Outputs are never conditioned on.
    rng = np.random.default_rng(5)
    x1, x2, x3 = rng.normal(size=(3, 2000))
    out_a = x1 - 0.7 * x2 + 0.05 * rng.normal(size=2000)
    out_b = -out_a + 0.3 * np.tanh(x1) + 0.01 * rng.normal(size=2000)
    g = discover(np.c_[x1, x2, x3, out_a, out_b], ["x1", "x2", "x3", "output_a", "output_b"])
    assert set(g.parents("output_a")) == {"x1", "x2"}
    assert set(g.parents("output_b")) == {"x1", "x2"}
    assert g.edge("x3", "output_a") is None and g.edge("output_a", "output_b") is None


@pytest.mark.parametrize("seed", range(4))
def test_oracle_with_output_sinks_recovers_the_knowledge_mpdag(seed):
    rng = np.random.default_rng(seed)
    n_ctx, n_out = 7, 3
    edges = _random_dag(n_ctx, 0.35, seed)
    for k in range(n_out):
        parents = rng.choice(n_ctx, size=2, replace=False)
        edges += [(int(p), n_ctx + k) for p in parents]
    names = [f"x{i}" for i in range(n_ctx)] + [f"output_{k}" for k in range(n_out)]
    dag = nx.DiGraph(edges)
    dag.add_nodes_from(range(len(names)))
    placeholder = np.random.default_rng(0).normal(size=(50, len(names)))
    g = discover(placeholder, names, ci_test="d_separation", ci_kwargs={"true_dag": dag})
    truth = true_cpdag(
        [(names[a], names[b]) for a, b in edges], names=names, knowledge=BackgroundKnowledge()
    )
    assert _marks(g) == _marks(truth)


def test_orientation_rules_are_both_available(five_node_data):
    cons = discover(five_node_data, list("abcde"))
    classic = discover(five_node_data, list("abcde"), orientation="sepset")
    assert cons.meta["params"]["orientation"] == "conservative"
    assert _marks(cons) == _marks(classic)  # clean data: both give the true CPDAG
    with pytest.raises(ConfigError, match="'orientation'"):
        discover(five_node_data, orientation="guess")


def test_fisherz_matches_causal_learn():
    import itertools

    from causallearn.utils.cit import CIT

    from glance.causal._causallearn import _fisherz_pvalue

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    x[:, 1] += 0.2 * x[:, 0]
    x[:, 2] += x[:, 1] - 0.1 * x[:, 3]
    reference, corr = CIT(x, "fisherz"), np.corrcoef(x.T)
    for a, b in itertools.combinations(range(5), 2):
        rest = [c for c in range(5) if c not in (a, b)]
        for k in range(4):
            for cond in itertools.combinations(rest, k):
                assert _fisherz_pvalue(corr, 300, a, b, list(cond)) == pytest.approx(
                    reference(a, b, list(cond)), abs=1e-12
                )


def test_conflicting_orientations_never_leave_a_cycle():
    from glance.causal._pdag import PDAG
    from glance.causal.discovery import apply_knowledge

    # a -> b -> c -> a (contradictory colliders from finite-sample tests), plus c -> output
    names = ["a", "b", "c", "output_y"]
    pdag = PDAG.from_edges(4, directed=[(0, 1), (1, 2), (2, 0), (2, 3)])
    kinds = ["context"] * 3 + ["output"]
    notes = apply_knowledge(pdag, BackgroundKnowledge().resolve(names, kinds))
    assert pdag.is_acyclic()
    assert pdag.directed_edges() == [(2, 3)]  # the knowledge-forced edge into the output stays
    assert pdag.undirected_edges() == [(0, 1), (0, 2), (1, 2)]
    assert "conflicting orientations on the cycle" in notes[0]
