"""The terms against entanglement in training: intervention read-back (its reader, its
comparisons, its place in a fit) and the free dims' independence from the contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import glance
from glance.estimator import Glance
from glance.training.loop import Hooks
from glance.training.tasks import READBACK_SHIFT, ReadbackSpec

TRAIN = {"encoder_steps": 4, "generator_steps": 4, "checkpoint_every": 4, "generator_batch": 8}


class _Reader:
    """What ReadbackSpec reads from a fitted ContextReader."""

    def __init__(self, names, readable):
        self.cnn_contexts, self._readable = names, readable
        self.net = torch.nn.Linear(2, len(names))

    def readable(self, name):
        return self._readable[name]


def test_spec_links_correlated_contexts_and_skips_unreadable_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    values = np.stack([a, a + 0.3 * rng.normal(size=500), rng.normal(size=500)], 1)
    values[::7, 2] = np.nan  # unknown values do not break the correlation
    spec = ReadbackSpec.from_reader(
        _Reader(["a", "b", "c"], {"a": True, "b": True, "c": False}),
        ["a", "b", "c"],
        torch.as_tensor(values),
    )
    assert spec.linked.tolist() == [[False, True, False], [True, False, False], [False] * 3]
    assert spec.readable.tolist() == [True, True, False]
    assert not any(p.requires_grad for p in spec.reader.parameters())
    z = torch.tensor([[1.0, -2.0, 0.0, 0.5]] * 64)  # 3 aligned dims and one free dim
    moved, shift, w = spec.draw(z, torch.Generator().manual_seed(0))
    assert set(moved.tolist()) == {0, 1, 2, 3}
    lo, hi = READBACK_SHIFT
    assert ((shift.abs() >= lo) & (shift.abs() <= hi)).all()
    # every shift goes towards the centre of its dim
    toward = -torch.sign(z[torch.arange(64), moved])
    assert (torch.sign(shift)[toward != 0] == toward[toward != 0]).all()
    for i, m in enumerate(moved.tolist()):
        expect = [True, True, False]
        if m < 3:
            expect = [r and not spec.linked[m, c].item() for c, r in enumerate(expect)]
        assert w[i].bool().tolist() == expect


def _fit_recording(clf, data, out, loss):
    """A tiny fit with ``loss`` overrides; every loss term's values, by name."""
    seen: dict[str, list[float]] = {}

    def record(name: str, value: torch.Tensor) -> torch.Tensor:
        seen.setdefault(name, []).append(float(value.detach()))
        return value

    est = Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config={"train": TRAIN, "loss": loss},
        random_state=1,
        quiet=True,
    )
    est._hooks = Hooks(on_loss=record)
    est.fit(data, out=out)
    return est, seen


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_readback_term_only_when_weighted(tiny_classifier, tiny_data, tmp_path, weight):
    est, seen = _fit_recording(
        tiny_classifier, tiny_data, tmp_path / "run", {"readback": weight, "readback_interval": 2}
    )
    assert ("readback" in seen) == (weight > 0)
    if weight > 0:
        assert len(seen["readback"]) == 2  # every second of 4 generator steps
        assert all(np.isfinite(v) and v >= 0 for v in seen["readback"])
        # the lazy term is in the training log although it runs on other steps than logged ones
        assert any("readback" in rec for rec in est.history_ if rec["stage"] == "generator")


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_independence_term_only_when_weighted(tiny_classifier, tiny_data, tmp_path, weight):
    _, seen = _fit_recording(tiny_classifier, tiny_data, tmp_path / "run", {"independence": weight})
    assert ("independence" in seen) == (weight > 0)
    if weight > 0:
        assert len(seen["independence"]) == TRAIN["encoder_steps"]
        assert all(0.0 <= v <= 1.0 + 1e-6 for v in seen["independence"])


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_feature_reconstruction_term_only_when_weighted(
    tiny_classifier, tiny_data, tmp_path, weight
):
    est, seen = _fit_recording(
        tiny_classifier, tiny_data, tmp_path / "run", {"feature_reconstruction": weight}
    )
    assert ("feature_reconstruction" in seen) == (weight > 0)
    assert (est.encoder_.feature_decoder is not None) == (weight > 0)
    if weight > 0:
        assert len(seen["feature_reconstruction"]) == TRAIN["encoder_steps"]
        assert all(np.isfinite(v) and v >= 0 for v in seen["feature_reconstruction"])
        # the decoder is part of the encoder: saved with the run and loaded back
        loaded = glance.load(est.run_.path, classifier=tiny_classifier)
        assert loaded.encoder_.feature_decoder is not None
        z = torch.zeros(2, est.encoder_.z_dim)
        torch.testing.assert_close(
            loaded.encoder_.decode_features(z), est.encoder_.decode_features(z)
        )


def test_a_classifier_that_predicts_one_class_is_warned_about(tiny_classifier, tiny_data, tmp_path):
    """Every fidelity figure passes for a classifier without a decision; the fit says so."""
    import copy

    constant = copy.deepcopy(tiny_classifier)
    with torch.no_grad():
        last = constant.head[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # class 1 for every image
    with pytest.warns(UserWarning, match=r"predicts class '?1'? for 100\.0% of the"):
        _fit_recording(constant, tiny_data, tmp_path / "run", {})
    # a classifier with a decision: no warning (98% of one class is still a decision)
    import warnings

    from glance.estimator import _warn_if_one_class

    logits = torch.zeros(100, 2)
    logits[:2, 1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_one_class(logits, ["a", "b"])
    logits[1, 1] = 0.0
    with pytest.warns(UserWarning, match="predicts class 'a' for 99.0% of the 100"):
        _warn_if_one_class(logits, ["a", "b"])
