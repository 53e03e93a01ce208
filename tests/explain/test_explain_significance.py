"""Significance of node importances against random concepts (RELIABILITY c.13), on the toy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from toy_run import serve_toy_run

from glance.cli.main import main
from glance.exceptions import ConfigError
from glance.explain import InterventionalImportance, LocalExplainer, LocalExplanation, Twin, toy
from glance.explain._engine import Renderer
from glance.explain.importance import random_directions

R = 49
DELTAS = (-2.0, -1.0, 1.0, 2.0)


@pytest.fixture(scope="module")
def tested(size_twin, toy_images) -> LocalExplanation:
    return InterventionalImportance(size_twin).explain(toy_images, deltas=DELTAS, n_random=R)


def _wide_twin(n_extra: int = 7) -> Twin:
    """The toy with ``n_extra`` free concepts the generator ignores (a realistic width)."""
    base = toy.make_twin()

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([toy.measure(x), torch.zeros(len(x), n_extra)], 1)

    return Twin(
        encode,
        lambda z: toy.render(z[:, :3]),
        base.classify,
        nodes=(*toy.NODES, *[f"concept_{i}" for i in range(1, n_extra + 1)]),
        classes=base.classes,
    )


@pytest.mark.parametrize("explainer", [InterventionalImportance, LocalExplainer])
@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"n_random": -1}, "n_random"),
        ({"n_random": 5}, "n_random"),
        ({"n_random": 18}, "n_random"),
        ({"n_random": 20.0}, "n_random"),
        ({"n_random": True}, "n_random"),
        ({"n_random": 49, "alpha": 0.01}, "n_random"),  # needs >= 99 random concepts
        ({"n_random": 19, "alpha": 0.0}, "alpha"),
        ({"n_random": 19, "alpha": 1.5}, "alpha"),
        ({"n_random": 19, "alpha": "x"}, "alpha"),
        ({"n_random": 19, "random_state": -1}, "random_state"),
        ({"n_random": 19, "random_state": 1.5}, "random_state"),
    ],
)
def test_bad_options_are_named(size_twin, explainer, kwargs, word):
    with pytest.raises(ConfigError, match=word):
        explainer(size_twin).explain(torch.rand(2, 1, 16, 16), **kwargs)


def test_smallest_valid_number_of_random_concepts(size_twin, toy_images):
    exp = InterventionalImportance(size_twin).explain(toy_images[:2], n_random=19)
    assert exp.n_random == 19 and exp.significance.min() >= 1 / 20
    assert exp.significant().shape == (2, 3)


def test_directions_are_unit_and_seeded():
    u = random_directions(30, 5, 7)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0)
    np.testing.assert_array_equal(u, random_directions(30, 5, 7))
    assert not np.allclose(u, random_directions(30, 5, 8))


def test_deterministic_for_a_seed_and_batch_invariant(size_twin, toy_images, tested):
    again = InterventionalImportance(size_twin, batch_size=5).explain(
        toy_images, deltas=DELTAS, n_random=R
    )
    np.testing.assert_allclose(again.random_importance, tested.random_importance, atol=1e-9)
    np.testing.assert_array_equal(again.significance, tested.significance)
    other = InterventionalImportance(size_twin).explain(
        toy_images, deltas=DELTAS, n_random=R, random_state=1
    )
    assert not np.allclose(other.random_importance, tested.random_importance)
    assert tested.meta["significance"] == {"n_random": R, "alpha": 0.05, "random_state": 0}


def test_used_node_is_significant_and_unused_node_is_not(tested):
    sig = tested.significant()
    assert sig[:, 0].mean() > 0.5  # size: in 3 dims a random direction often is mostly size
    assert not sig[:, 1].any()  # brightness: the size classifier ignores it
    summary = tested.significance_summary()
    assert summary["size"]["significant"] and summary["size"]["direction"] == "above"
    assert summary["size"]["p_value"] < 0.05
    assert not summary["brightness"]["significant"]
    assert summary["brightness"]["direction"] == "below"  # two-sided: below random, not important
    assert summary["size"]["fraction_significant"] == pytest.approx(sig[:, 0].mean())
    assert summary["size"]["n_random"] == R and summary["size"]["n_images"] == len(tested)


def test_wide_concept_space_makes_the_used_node_significant_everywhere(toy_images):
    exp = InterventionalImportance(_wide_twin()).explain(toy_images, n_random=R)
    sig = exp.significant()
    assert sig[:, 0].all()
    assert not sig[:, 1:].any()


def test_p_values_are_on_the_permutation_grid(tested):
    p = tested.significance
    assert p.shape == (len(tested), 3) and tested.random_importance.shape == (len(tested), R)
    assert np.all(p >= 1 / (R + 1)) and np.all(p <= 1.0)
    np.testing.assert_allclose(p * (R + 1), np.round(p * (R + 1)), atol=1e-9)
    expected = (1 + (tested.random_importance[:, None] >= tested.importance[..., None]).sum(2)) / (
        R + 1
    )
    np.testing.assert_array_equal(p, expected)
    assert tested.significant(alpha=0.5).sum() >= tested.significant().sum()
    with pytest.raises(ConfigError, match="alpha"):
        tested.significant(alpha=2.0)


def test_random_concept_importance_is_a_direct_shift(size_twin, toy_images, tested):
    """Recompute the importance of one random direction by hand: z + δ·u·std, no SCM."""
    u = random_directions(R, 3, 0)[3] * size_twin.node_std
    z = toy.measure(toy_images)
    rows = np.arange(len(z))
    t = tested.target

    def p(zz: torch.Tensor) -> np.ndarray:
        return torch.softmax(size_twin.classify(toy.render(zz)), 1).double().numpy()[rows, t]

    p0 = p(z)
    by_hand = np.mean(
        [np.abs(p(z + torch.as_tensor(d * u, dtype=torch.float32)) - p0) for d in DELTAS], 0
    )
    np.testing.assert_allclose(tested.random_importance[:, 3], by_hand, atol=1e-6)


def test_to_dict_and_saved_json_carry_the_test(tested, tmp_path):
    path = tested.select([0, 5]).save(tmp_path / "exp", pngs=False)
    d = json.loads(path.read_text())
    assert d["n_random"] == R and d["alpha"] == 0.05
    assert set(d["significance_summary"]) == {"size", "brightness", "concept_0"}
    rec = d["explanations"][1]
    assert rec["significance"] == dict(
        zip(tested.nodes, tested.significance[5].tolist(), strict=True)
    )
    assert rec["significant"] == {n: p <= 0.05 for n, p in rec["significance"].items()}


def test_concatenate_and_select_carry_the_fields(tested):
    parts = [tested.select(range(0, 10)), tested.select(range(10, len(tested)))]
    joined = LocalExplanation.concatenate(parts)
    np.testing.assert_array_equal(joined.significance, tested.significance)
    np.testing.assert_array_equal(joined.random_importance, tested.random_importance)
    assert joined.alpha == 0.05
    sub = tested.select([4, 0])
    np.testing.assert_array_equal(sub.significance, tested.significance[[4, 0]])
    assert sub.n_random == R


def test_off_by_default_leaves_output_unchanged(size_twin, toy_images):
    x = toy_images[:6]
    off = LocalExplainer(size_twin).explain(x)
    zero = LocalExplainer(size_twin).explain(x, n_random=0)
    on = LocalExplainer(size_twin).explain(x, n_random=19)
    for exp in (off, zero):
        assert exp.random_importance is None and exp.significance is None and exp.alpha is None
        assert exp.n_random == 0 and "significance" not in exp.meta["seconds"]
    d_off, d_zero = off.to_dict(), zero.to_dict()
    for key in ("n_random", "alpha", "significance_summary"):
        assert key not in d_off
    assert "significance" not in d_off["explanations"][0]
    assert "significant" not in d_off["explanations"][0]
    d_off["meta"].pop("seconds"), d_zero["meta"].pop("seconds")
    assert d_off == d_zero
    # The test adds its own pass only: every other number is the same.
    np.testing.assert_array_equal(on.importance, off.importance)
    np.testing.assert_array_equal(on.counterfactual.valid, off.counterfactual.valid)
    assert on.meta["n_generated"] - off.meta["n_generated"] == 6 * 19 * 4
    with pytest.raises(ConfigError, match="n_random"):
        off.significant()


def test_one_batched_render_pass_without_images(size_twin, toy_images, monkeypatch):
    calls = []
    original = Renderer.__call__

    def spy(self, z, part="render", keep_images=None):
        calls.append((part, int(z.shape[0]), keep_images))
        return original(self, z, part, keep_images)

    monkeypatch.setattr(Renderer, "__call__", spy)
    n = len(toy_images)
    exp = LocalExplainer(size_twin, batch_size=n).explain(toy_images, n_random=R)
    sig_calls = [c for c in calls if c[0] == "significance"]
    assert sig_calls == [("significance", n * R * 4, False)]
    assert exp.meta["seconds"]["significance"] > 0


def test_summary_plot_marks_non_significant_nodes(tested):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = tested.plot(0)
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    plt.close(fig)
    assert any(f"not significant vs\n{R} random concepts" in t for t in texts)
    assert any("random concepts,\n95% quantile" in t for t in texts)


def test_cli_significance(monkeypatch, tmp_path, capsys):
    serve_toy_run(monkeypatch, tmp_path / "run")
    img = (toy.render(torch.tensor([[1.0, 0.0, 0.0]]))[0, 0].numpy() * 255).round()
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "a.png")
    argv = ["-q", "explain", str(tmp_path / "run"), str(tmp_path / "a.png"), "--no-pngs"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--significance", "19"]) == 0
    d = json.loads((tmp_path / "o" / "explanations.json").read_text())
    assert d["n_random"] == 19 and "significance" in d["explanations"][0]
    assert main([*argv, "--out", str(tmp_path / "o2"), "--significance", "5"]) == 2
    assert "n_random" in capsys.readouterr().err
