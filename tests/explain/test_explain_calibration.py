"""Calibrated interventions (glance.explain.calibration): one std asked, one drawn, nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_run import ToyRun

from glance.exceptions import ConfigError
from glance.explain import InterventionalImportance, Twin, toy
from glance.explain.calibration import (
    MAX_STEP_RATIO,
    intervention_basis,
    measure_readback,
)
from glance.training.tasks import tied_pairs

NONE_BELOW = lambda j: ()  # noqa: E731


def test_tied_pairs_are_the_strongly_correlated_contexts():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    c = np.stack([a, a + 0.1 * rng.normal(size=500), rng.normal(size=500), np.ones(500)], 1)
    c[:10, 2] = np.nan  # unknown values are left out pairwise
    tied = tied_pairs(c)
    assert tied[0, 1] and tied[1, 0]
    assert not tied[0, 2] and not tied[:, 3].any()  # a constant column is tied to nothing
    assert not tied.diagonal().any()


def _drawn(a: np.ndarray, step: np.ndarray, corr: np.ndarray, j: int) -> np.ndarray:
    """The read change of every context for one std of context ``j`` asked."""
    move = corr[j].copy()
    move[j] = step[j]
    return move @ a


def test_basis_draws_the_asked_context_alone():
    a = np.array(
        [
            [0.6, 0.2, -0.1],  # context 0: under-drawn and drags 1 and 2 with it
            [0.1, 0.9, 0.0],
            [0.0, 0.3, 0.8],
        ]
    )
    step, corr = intervention_basis(a, np.zeros((3, 3), bool), NONE_BELOW)
    for j in range(3):
        np.testing.assert_allclose(_drawn(a, step, corr, j), np.eye(3)[j], atol=1e-9)
    assert step[0] == pytest.approx(1 / 0.6, rel=0.1)  # about the inverse of what it draws
    assert np.all(np.diag(corr) == 0)


def test_descendants_and_tied_contexts_are_left_free():
    a = np.array([[0.7, 0.5, 0.4], [0.0, 0.9, 0.0], [0.3, 0.0, 0.8]])
    tied = np.zeros((3, 3), bool)
    tied[0, 2] = tied[2, 0] = True
    step, corr = intervention_basis(a, tied, lambda j: {1} if j == 0 else ())
    assert corr[0, 1] == 0 and corr[0, 2] == 0  # 1 follows through the SCM, 2 is tied
    assert step[0] == pytest.approx(1 / 0.7)
    drawn = _drawn(a, step, corr, 1)
    np.testing.assert_allclose(drawn, [0, 1, 0], atol=1e-9)


def test_unmeasured_weak_and_ill_conditioned_contexts_are_not_calibrated():
    a = np.array([[np.nan, np.nan, np.nan], [np.nan, 0.1, 0.2], [np.nan, 0.2, 0.9]])
    step, corr = intervention_basis(a, np.zeros((3, 3), bool), NONE_BELOW)
    assert step[0] == 1 and step[1] == 1  # unread; drawn at 10% only
    assert not corr[:, 0].any() and not corr[:, 1].any()  # neither moves to correct another
    assert step[2] == pytest.approx(1 / 0.9)
    near = np.array([[1.0, 0.99], [0.99, 1.0]])  # two contexts the generator draws as one
    step, corr = intervention_basis(near, np.zeros((2, 2), bool), NONE_BELOW)
    np.testing.assert_allclose(step, [1, 1])  # diagonal only
    assert not corr.any()
    step, _ = intervention_basis(np.array([[0.25]]), np.zeros((1, 1), bool), NONE_BELOW)
    assert step[0] == MAX_STEP_RATIO


MIX = torch.tensor([[0.5, 0.2], [-0.1, 1.0]])  # row j: what moving dim j draws
NODE_STD, READ_STD = np.array([2.0, 0.5]), np.array([1.0, 4.0])


def _linear_readback(**kwargs) -> np.ndarray:
    """:func:`measure_readback` of a linear generator read exactly."""
    return measure_readback(
        encode=lambda x: x.reshape(len(x), -1),
        generate=lambda z: (z @ MIX).reshape(len(z), 1, 1, 2),
        images=torch.randn(16, 1, 1, 2),
        read=lambda x: x.reshape(len(x), -1).numpy(),
        node_std=NODE_STD,
        discrete=[False, False],
        read_std=READ_STD,
        **kwargs,
    )


def test_measure_readback_recovers_a_linear_generator():
    want = MIX.numpy() * NODE_STD[:, None] / READ_STD[None, :]
    a = _linear_readback(readable=[True, True])
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
    b = _linear_readback(readable=[True, False])
    assert np.isfinite(b[0, 0]) and np.isnan(b[1]).all() and np.isnan(b[:, 1]).all()
    # context 1's measure calibrates its own step only
    c = _linear_readback(readable=[True, True], cross=[True, False])
    np.testing.assert_allclose(np.diag(c), np.diag(want), rtol=1e-5)
    assert np.isnan(c[0, 1]) and np.isnan(c[1, 0])


class LeakyRun(ToyRun):
    """The toy world with a generator that brightens what it enlarges (and draws size at 60%):
    the entanglement of a learned twin, made by hand."""

    def generate(self, z):
        z = z.clone()
        z[:, 1] = z[:, 1] + 0.4 * z[:, 0]
        z[:, 0] = 0.6 * z[:, 0]
        return toy.render(z)


def _calibrated(run: ToyRun, images: torch.Tensor) -> ToyRun:
    run.context_readback_ = measure_readback(
        run.encode,
        run.generate,
        images,
        lambda x: toy.measure(x)[:, :2].numpy(),
        np.ones(2),
        readable=[True, True],
        discrete=[False, False],
        read_std=np.ones(2),
    )
    run.context_tied_ = np.zeros((2, 2), bool)
    return run


@pytest.mark.filterwarnings("ignore:LOW FIDELITY")
def test_a_calibrated_twin_moves_the_asked_context_alone(toy_images):
    plain = Twin.from_glance(LeakyRun(toy.BrightnessClassifier()))
    run = _calibrated(LeakyRun(toy.BrightnessClassifier()), toy_images)
    twin = Twin.from_glance(run, calibrated=True)
    assert twin.node_render[0, 0] > 1.4  # size is drawn further: it is under-drawn
    assert twin.node_render[0, 1] < -0.3  # brightness dim moves against the leak
    np.testing.assert_allclose(twin.node_std, plain.node_std)  # the nodes' own units stay
    z = twin.encode(toy_images)
    for tw, moves in ((plain, True), (twin, False)):
        zp = tw.intervene(z, {0: tw.shift(0, z[:, 0], torch.ones(len(z)))}, total=False)
        read = toy.measure(tw.generate(zp)) - toy.measure(tw.generate(z))
        if moves:  # uncalibrated: 0.6 of the asked size, and brightness follows
            assert read[:, 0].mean() < 0.7 and read[:, 1].mean() > 0.3
        else:
            np.testing.assert_allclose(read[:, 0].mean(), 1.0, atol=0.1)
            assert read[:, 1].abs().mean() < 0.1
    # A brightness classifier: size has no direct effect on it; the leak made it look like one.
    imp_plain = InterventionalImportance(plain).explain(toy_images).importance
    imp = InterventionalImportance(twin).explain(toy_images).importance
    assert imp[:, 0].mean() < 0.25 * imp_plain[:, 0].mean()
    assert imp[:, 1].mean() > 0.5 * imp_plain[:, 1].mean()
    uncal = Twin.from_glance(run)  # the default: uncalibrated
    assert uncal.node_render is None
    np.testing.assert_allclose(uncal.node_std[:2], plain.node_std[:2])


def test_the_scm_works_in_the_nodes_units_and_only_the_intervened_change_is_calibrated(
    toy_images,
):
    """The intervened node's own change is drawn through its row of the map; a descendant
    that follows through the SCM is drawn as the twin draws it (neither the intervened node's
    calibrated step pushed through the SCM nor the descendant's own calibration)."""
    render = np.array([[1.5, -0.4, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    scm = toy.LinearSCM(3, {(0, 1): 0.8})
    twin = toy.make_twin(toy.BrightnessClassifier())
    plain = Twin(twin.encode, twin.generate, twin.classify, twin.nodes, twin.classes, scm=scm)
    drawn = Twin(
        twin.encode, twin.generate, twin.classify, twin.nodes, twin.classes, scm=scm,
        node_render=render,
    )  # fmt: skip
    z = twin.encode(toy_images)
    asked = {0: z[:, 0] + 0.3}
    before = plain.intervene(z, asked)  # size +0.3, brightness +0.24 through the SCM
    np.testing.assert_allclose((before - z)[:, 1].numpy(), 0.24, atol=1e-5)
    after = drawn.intervene(z, asked)
    np.testing.assert_allclose((after - z)[:, 0].numpy(), 0.3 * 1.5, atol=1e-5)
    np.testing.assert_allclose((after - z)[:, 1].numpy(), 0.3 * -0.4 + 0.24, atol=1e-5)
    np.testing.assert_allclose((after - z)[:, 2].numpy(), 0.0, atol=1e-6)
    assert drawn.moves(0, z[:, 0], asked[0]).all()  # judged in the node's own units
    # intervened on directly, brightness is drawn by its own row
    direct = drawn.intervene(z, {1: z[:, 1] + 0.3})
    np.testing.assert_allclose((direct - z)[:, 1].numpy(), 0.3 * 2.0, atol=1e-5)
    np.testing.assert_allclose((direct - z)[:, 0].numpy(), 0.0, atol=1e-6)


def test_a_render_map_is_validated(toy_images):
    twin = Twin.from_glance(_calibrated(LeakyRun(toy.BrightnessClassifier()), toy_images))
    with pytest.raises(ConfigError, match="node_render"):
        Twin(
            encode=twin.encode,
            generate=twin.generate,
            classify=twin.classify,
            nodes=twin.nodes,
            classes=twin.classes,
            node_render=np.zeros((2, 2)),
        )
    run = LeakyRun(context_readback_=np.ones((3, 3)), context_tied_=np.zeros((3, 3), bool))
    with pytest.raises(ConfigError, match="context_readback_"):
        Twin.from_glance(run, calibrated=True)


@pytest.mark.filterwarnings("ignore:LOW FIDELITY")
def test_explanations_say_how_much_of_each_change_the_twin_draws(toy_images):
    from glance.explain._plot import node_label

    run = _calibrated(LeakyRun(toy.BrightnessClassifier()), toy_images)
    plain, calibrated = Twin.from_glance(run), Twin.from_glance(run, calibrated=True)
    # the leaky generator draws 60% of an asked size change and all of a brightness change
    np.testing.assert_allclose(plain.node_drawn[:2], [0.6, 1.0], atol=0.05)
    np.testing.assert_allclose(calibrated.node_drawn[:2], [1.0, 1.0], atol=0.05)
    assert np.isnan(plain.node_drawn[2:]).all()  # free concepts are not measured
    exp = InterventionalImportance(plain).explain(toy_images[:4])
    assert set(exp.meta["drawn"]) == {"size", "brightness"}
    assert exp.meta["drawn"]["size"] == pytest.approx(0.6, abs=0.05)
    assert set(exp.meta["partly_drawn"]) == {"size"}  # outside DRAWN_FAITHFUL
    assert node_label(exp, "size") == f"size (drawn {exp.meta['drawn']['size']:.0%})"
    assert node_label(exp, "brightness") == "brightness"  # drawn as asked: no note
    saved = json.loads(json.dumps(exp.to_dict()))  # kept in explanations.json, strict JSON
    assert saved["meta"]["drawn"] == exp.meta["drawn"]
    assert saved["meta"]["partly_drawn"] == exp.meta["partly_drawn"]
    cal = InterventionalImportance(calibrated).explain(toy_images[:4])
    assert node_label(cal, "size") == "size"
    # a run that measured nothing: no figure, no note
    unmeasured = InterventionalImportance(Twin.from_glance(LeakyRun())).explain(toy_images[:4])
    assert "drawn" not in unmeasured.meta and node_label(unmeasured, "size") == "size"
    with pytest.raises(ConfigError, match="node_drawn"):
        Twin(plain.encode, plain.generate, plain.classify, plain.nodes, plain.classes,
             node_drawn=np.ones(2))  # fmt: skip
