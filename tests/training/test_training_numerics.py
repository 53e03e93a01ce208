"""Non-finite losses: detected before any optimiser step, rolled back, bounded, then fatal."""

from __future__ import annotations

import logging

import pytest
import torch

from glance.estimator import Glance
from glance.exceptions import TrainingDivergedError
from glance.training import loop as loop_mod
from glance.training.loop import Hooks, Trainer

CONFIG = {
    "train": {
        "encoder_steps": 6,
        "generator_steps": 6,
        "checkpoint_every": 4,
        "encoder_batch": 16,
        "generator_batch": 8,
        "max_rollbacks": 3,
        "rollback_lr_factor": 0.5,
    },
}


def _estimator(clf, **train):
    cfg = {"train": {**CONFIG["train"], **train}}
    return Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config=cfg,
        random_state=1,
        quiet=True,
    )


class _Injector:
    """``on_loss`` hook: NaN into ``term`` at the given steps (counted by calls per step)."""

    def __init__(self, term: str, steps: set[int] | None):
        self.term, self.steps, self.step, self.fired = term, steps, -1, 0

    def on_loss(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name == self.term and (self.steps is None or self.step in self.steps):
            self.fired += 1
            if self.steps is not None:
                self.steps = self.steps - {self.step}  # once per listed step
            return value * float("nan")
        return value


def _track_steps(monkeypatch, injector, snapshots):
    """Record the step number for the injector and the weights around each failing step."""
    original = Trainer.train_step

    def wrapped(self, step):
        injector.step = step
        before = {k: v.clone() for k, v in self.parts.encoder.state_dict().items()}
        before_g = {k: v.clone() for k, v in self.parts.generator.state_dict().items()}
        try:
            return original(self, step)
        except loop_mod._NonFinite:
            after = self.parts.encoder.state_dict()
            after_g = self.parts.generator.state_dict()
            snapshots.append(
                all(torch.equal(before[k], after[k]) for k in before)
                and all(torch.equal(before_g[k], after_g[k]) for k in before_g)
            )
            raise

    monkeypatch.setattr(Trainer, "train_step", wrapped)


@pytest.mark.parametrize(("term", "step"), [("align", 5), ("reconstruction", 9)])
def test_single_nan_rolls_back_and_recovers(
    tiny_classifier, tiny_data, tmp_path, monkeypatch, caplog, term, step
):
    inj = _Injector(term, {step})
    unchanged: list[bool] = []
    _track_steps(monkeypatch, inj, unchanged)
    est = _estimator(tiny_classifier)
    est._hooks = Hooks(on_loss=inj.on_loss)
    with caplog.at_level(logging.WARNING):
        est.fit(tiny_data, out=tmp_path / "run")
    assert inj.fired == 1
    assert unchanged == [True]  # the bad step changed no weight (checked before any step)
    last_good = 4 if step == 5 else 8
    assert f"non-finite loss term '{term}'" in caplog.text
    assert f"ckpt-{last_good:06d}" in caplog.text and "x0.5" in caplog.text
    steps = [r["step"] for r in est.history_]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # finished, each step logged once
    for module in (est.encoder_, est.generator_, est.discriminator_):
        assert all(torch.isfinite(p).all() for p in module.state_dict().values())


def test_persistent_nan_raises_after_budget(tiny_classifier, tiny_data, tmp_path, monkeypatch):
    inj = _Injector("latent_cycle", None)  # every generator step
    unchanged: list[bool] = []
    _track_steps(monkeypatch, inj, unchanged)
    est = _estimator(tiny_classifier, max_rollbacks=2)
    est._hooks = Hooks(on_loss=inj.on_loss)
    with pytest.raises(TrainingDivergedError) as info:
        est.fit(tiny_data, out=tmp_path / "run")
    msg = str(info.value)
    assert "'latent_cycle'" in msg and "at step 6" in msg and "2 rollback(s)" in msg
    assert "ckpt-000006" in msg  # the last good checkpoint, named
    assert inj.fired == 3 and unchanged == [True, True, True]
    assert not hasattr(est, "encoder_")  # not fitted
    assert TrainingDivergedError.exit_code == 4


def test_mixed_precision_counts_skipped_steps():
    """GradScaler skips a step silently when it finds inf/NaN gradients; glance counts it."""

    class FakeScaler:
        def __init__(self):
            self.scale_value, self.calls = 1024.0, 0

        def get_scale(self):
            return self.scale_value

        def scale(self, loss):
            return loss

        def step(self, opt):
            self.calls += 1

        def update(self):
            if self.calls == 2:  # the second step had non-finite gradients: scale backs off
                self.scale_value /= 2

    prec = loop_mod._Precision(torch.device("cpu"), "off")
    prec.use_scaler = True
    prec.scalers["g"] = FakeScaler()
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        prec.step("g", opt, (w * 2).sum())
    assert prec.skipped == 1


def test_a_generator_that_draws_one_image_is_refused_after_the_warmup(
    tiny_classifier, tiny_data, tmp_path, monkeypatch
):
    """A saturated output sigmoid (black images whatever the concepts) is finite, so no
    rollback sees it; the fit must stop at the end of the warm-up instead of saving it."""
    original = Trainer.train_step
    reached: list[int] = []

    def saturated(z, noise_mode="const", generator=None):
        return torch.sigmoid(torch.full((len(z), *tiny_data.image_shape), -22.0))

    def wrapped(self, step):
        out = original(self, step)
        reached.append(step)
        if self.stage_at(step).name == "warmup":
            self.parts.generator_ema.forward = saturated
        return out

    monkeypatch.setattr(Trainer, "train_step", wrapped)
    est = _estimator(tiny_classifier, generator_warmup_steps=3)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="same image for every concept after step 9"):
        est.fit(tiny_data, out=run)
    assert max(reached) == 8  # the encoder's 6 steps and the warm-up's 3, no full step
    assert not (run / "model").exists()


def test_only_a_saturated_generator_that_ignores_the_concepts_is_refused():
    from types import SimpleNamespace

    z = torch.randn(64, 3)

    def fake(draw):
        parts = SimpleNamespace(generator_ema=draw)
        return SimpleNamespace(latents=lambda: z, device=torch.device("cpu"), parts=parts)

    varied = fake(lambda z, noise_mode: torch.sigmoid(z[:, :1, None, None].expand(-1, 1, 4, 4)))
    Trainer.check_generator_draws(varied, 5)  # no error
    # mid-grey whatever the concepts: not yet using them, but it can still learn
    Trainer.check_generator_draws(fake(lambda z, noise_mode: torch.full((len(z), 1, 4, 4), 0.5)), 5)
    white = fake(lambda z, noise_mode: torch.full((len(z), 1, 4, 4), 1.0 - 1e-6))
    with pytest.raises(TrainingDivergedError, match="largest per-pixel spread"):
        Trainer.check_generator_draws(white, 5)


@pytest.mark.slow
def test_fast_preset_warm_up_keeps_drawing_real_digits(tmp_path):
    """The `fast` preset's warm-up on real Morpho-MNIST digits ends with a generator that still
    draws them. With the L1 alone it drew every digit black and the fit was refused after the
    warm-up (3,000 and 9,000 digits of the demo's recipe, seed 0; docs/own-model.md): the
    preset's pixel cross-entropy is what keeps the demo's fit alive, and this is its guard."""
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset
    from glance.data.morpho_generate import generate_morphomnist

    data = generate_morphomnist(tmp_path / "morpho", n=3300, seed=0)
    train = load_dataset(data, "train")
    clf = train_classifier(train, "small-cnn", seed=0, epochs=2, quiet=True)
    est = Glance(
        clf,
        contexts=("thickness", "intensity"),
        preset="fast",
        random_state=0,
        quiet=True,
        n_threads=2,
        # the warm-up is what saturated; the full steps after it are not under test
        config={"train": {"generator_steps": 1, "eval_images": 64}},
    )
    est.fit(train)  # refuses a saturated generator (TrainingDivergedError) after the warm-up
    images = est.generate(est.encode(train.load_images(range(64))))
    assert float(images.std(0).max()) > 0.1  # the digits differ from each other
    assert 0.02 < float(images.mean()) < 0.5  # neither black nor white
