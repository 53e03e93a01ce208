"""The Glance estimator: sklearn contract, fitted attributes, save/load, evaluate."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import glance
from glance.classifiers.architectures import ReferenceClassifier, build_classifier
from glance.estimator import Glance
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    ConfigError,
    DataValidationError,
    NotFittedError,
    ShapeError,
)
from helpers import TinyCNN, make_dataset, torch_threads

CONFIG = {
    "train": {
        "encoder_steps": 8,
        "generator_steps": 6,
        "encoder_batch": 16,
        "generator_batch": 8,
        "eval_images": 48,
    }
}


def _reference_classifier(size=16, channels=1, n_classes=3):
    torch.manual_seed(0)
    net = build_classifier("small-cnn", n_classes, channels, (size, size))
    return ReferenceClassifier(
        net,
        arch="small-cnn",
        classes=["s", "m", "l"][:n_classes],
        in_channels=channels,
        input_size=(size, size),
    ).eval()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    with torch_threads(1):  # as the autouse fixture does for function-scoped tests
        data = make_dataset(48)
        run = tmp_path_factory.mktemp("est") / "run"
        est = Glance(
            _reference_classifier(),
            contexts=["thickness", "intensity"],
            preset="tiny",
            config=CONFIG,
            random_state=0,
            quiet=True,
            n_threads=1,
        )
        assert est.fit(data, out=run) is est
    return est, data, run


def test_init_stores_parameters_unchanged():
    clf, ctx, cfg = object(), ["a"], {"train": {"encoder_steps": -5}}
    est = Glance(clf, contexts=ctx, config=cfg, random_state="not validated here")
    params = est.get_params()
    assert params["classifier"] is clf and params["contexts"] is ctx and params["config"] is cfg
    assert params["random_state"] == "not validated here"
    assert not [k for k in vars(est) if k.endswith("_")]


@pytest.mark.parametrize(
    "method", ["encode", "generate", "surrogate_logits", "classify", "save", "evaluate"]
)
def test_not_fitted_errors(method, tmp_path):
    est = Glance(_reference_classifier())
    arg = tmp_path if method == "save" else torch.zeros(1, 4)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(est, method)(arg)
    with pytest.raises(NotFittedError):
        est.sample_concepts(3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"contexts": ["thickness", "width"]},
            DataValidationError,
            r"no attribute column 'width'.*thickness, intensity",
        ),
        ({"contexts": "thickness"}, ConfigError, r"'contexts' of Glance"),
        ({"random_state": 1.5}, ConfigError, r"'random_state' of Glance must be an integer"),
        ({"config": {"train": {"encoder_steps": -1}}}, ConfigError, r"encoder_steps must be >= 0"),
        ({"preset": "fats"}, Exception, r"Did you mean 'fast'"),
    ],
)
def test_fit_validates_before_training(tiny_data, kwargs, error, message, tmp_path):
    est = Glance(_reference_classifier(), **{"contexts": ["thickness"], **kwargs})
    with pytest.raises(error, match=message):
        est.fit(tiny_data, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written before validation passed


def test_context_without_values_is_rejected(tiny_data):
    tiny_data.attributes[:, 1] = np.nan
    est = Glance(_reference_classifier(), contexts=["intensity"], preset="tiny")
    with pytest.raises(DataValidationError, match=r"context 'intensity' has 0 known value"):
        est.fit(tiny_data)


def test_fitted_attributes_and_shapes(fitted):
    est, data, _ = fitted
    d = 2 + est.config_.encoder.free_dims
    assert est.concept_names_ == ["thickness", "intensity", "concept_0", "concept_1"][:d]
    assert est.classes_ == ["s", "m", "l"]
    assert np.allclose(est.context_mean_[0], np.mean(data.attribute("thickness")))
    x = data.load_images(range(5))
    z = est.encode(x)
    assert z.shape == (5, d)
    imgs = est.generate(z)
    assert imgs.shape == (5, 1, 16, 16) and 0 <= imgs.min() and imgs.max() <= 1
    assert torch.equal(est.generate(z), imgs)  # deterministic with constant noise
    assert est.surrogate_logits(z).shape == (5, 3)
    assert torch.allclose(est.classify(x), est.adapter_.model(x))
    s1, s2 = est.sample_concepts(7, random_state=3), est.sample_concepts(7, random_state=3)
    assert s1.shape == (7, d) and torch.equal(s1, s2)
    with pytest.raises(ShapeError, match=rf"z must have shape \(N, {d}\)"):
        est.generate(torch.zeros(2, d + 1))
    assert est.history_ and est.history_[-1]["step"] == 14 and est.fit_seconds_ > 0


def test_run_directory_layout_and_refit_refused(fitted, tiny_data):
    est, _, run = fitted
    for rel in (
        "MANIFEST.json",
        "config.yaml",
        "state.json",
        "classifier.safetensors",
        "classifier.json",
        "metrics.jsonl",
        "model/generator.safetensors",
        "model/encoder.safetensors",
        "model/mixture.safetensors",
    ):
        assert (run / rel).is_file(), rel
    assert list((run / "checkpoints").glob("ckpt-*/MANIFEST.json"))
    with pytest.raises(CheckpointError, match="is not empty; pass --resume"):
        Glance(_reference_classifier(), contexts=["thickness"], preset="tiny").fit(
            tiny_data, out=run
        )


def test_context_scale_is_each_aligned_dims_slope_on_its_training_context(fitted):
    from glance.estimator import MIN_CONTEXT_SCALE
    from glance.metrics.fidelity import alignment_slope

    est, data, _ = fitted
    x = data.load_images(range(len(data)))
    raw = np.stack([data.attribute(c) for c in est.context_names_], 1)
    z = est.encode(x).numpy()[:, :2]
    slope = alignment_slope(z, (raw - est.context_mean_) / est.context_std_)
    assert est.context_scale_.shape == (2,)
    np.testing.assert_allclose(est.context_scale_, np.maximum(slope, MIN_CONTEXT_SCALE), atol=1e-4)


def test_calibration_is_measured_saved_and_loaded(fitted, tmp_path, monkeypatch):
    import glance.estimator as estimator

    est, data, run = fitted
    assert est.context_readback_ is None  # 48 images: too few to fit a context reader on
    assert glance.load(run).context_readback_ is None
    monkeypatch.setattr(estimator, "MIN_CALIBRATION_IMAGES", 10)
    loaded = glance.load(run)
    with torch_threads(1):
        assert loaded.calibrate_interventions(data, n_images=8) is loaded
    a = loaded.context_readback_
    assert a.shape == (2, 2) and loaded.context_tied_.shape == (2, 2)
    readable = np.isfinite(np.diag(a))
    assert np.isfinite(a[np.ix_(readable, readable)]).all()
    assert np.isnan(a[~readable]).all() and np.isnan(a[:, ~readable]).all()
    with pytest.raises(ConfigError, match="'reader' of calibrate_interventions"):
        loaded.calibrate_interventions(data, reader=SimpleNamespace(contexts=("intensity",)))
    again = glance.load(loaded.save(tmp_path / "calibrated"))
    np.testing.assert_array_equal(again.context_readback_, a)  # NaN where NaN
    np.testing.assert_array_equal(again.context_tied_, loaded.context_tied_)


def test_a_failed_calibration_loses_no_fit(tmp_path, monkeypatch, caplog):
    def broken(self, dataset, **_):
        raise ShapeError("no reader today")

    monkeypatch.setattr(Glance, "calibrate_interventions", broken)
    est = Glance(
        _reference_classifier(), contexts=["thickness"], preset="tiny", config=CONFIG, quiet=True
    )
    with caplog.at_level("WARNING", logger="glance"):
        est.fit(make_dataset(24), out=tmp_path / "run")
    assert "interventions not calibrated (ShapeError): no reader today" in caplog.text
    assert est.context_readback_ is None
    assert glance.load(tmp_path / "run").context_readback_ is None


def test_save_load_roundtrip(fitted, tmp_path):
    est, data, run = fitted
    loaded = glance.load(run)
    x = data.load_images(range(6))
    z = est.encode(x)
    assert torch.equal(loaded.encode(x), z)
    assert torch.equal(loaded.generate(z), est.generate(z))
    assert torch.equal(loaded.sample_concepts(5, 1), est.sample_concepts(5, 1))
    assert loaded.concept_names_ == est.concept_names_
    assert loaded.context_levels_ == est.context_levels_ == [None, None]  # both continuous
    np.testing.assert_array_equal(loaded.context_scale_, est.context_scale_)
    assert loaded.get_params()["contexts"] == ("thickness", "intensity")
    copy = est.save(tmp_path / "copy")  # a fresh directory works too
    assert torch.equal(glance.load(copy).generate(z), est.generate(z))


def test_load_refuses_tampered_or_newer(fitted, tmp_path):
    import shutil

    _, _, run = fitted
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    weights = bad / "model" / "generator.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointCorruptError, match=r"generator\.safetensors: sha256 mismatch"):
        glance.load(bad)
    newer = tmp_path / "newer"
    shutil.copytree(run, newer)
    manifest = json.loads((newer / "MANIFEST.json").read_text())
    manifest["format_version"] = 99
    (newer / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointIncompatibleError, match="format 99"):
        glance.load(newer)
    with pytest.raises(CheckpointError, match="not found"):
        glance.load(tmp_path / "absent")


def test_evaluate_reports_every_figure(fitted, tmp_path):
    est, data, _ = fitted
    m = est.evaluate(data, out=tmp_path)
    for key in ("fidelity", "reconstruction_fidelity", "sampled_fidelity"):
        assert 0.0 <= m[key] <= 1.0
    assert set(m["alignment_r2"]) == {"thickness", "intensity"}
    assert set(m["generated_alignment"]) == {"thickness", "intensity"}
    assert set(m["dci"]) == {"disentanglement", "completeness", "informativeness"}
    assert m["fid"] >= 0 and math.isfinite(m["kid"]) and m["fit_seconds"] > 0
    assert 0.0 <= m["mig"] <= 1.0 and 0.0 <= m["mig_reference"] <= 1.0
    for path in m["grids"].values():
        assert path.endswith(".png") and (tmp_path / path.split("/")[-1]).is_file()
    cs = m["counterfactual_soundness"]
    assert cs["composition"]["null_image_l1"] == pytest.approx(0.0, abs=1e-6)
    assert set(cs["reversibility"]["image_l1"]) == {"thickness", "intensity"}
    for name in ("thickness", "intensity"):  # read with the morphometrics
        assert m["readers"][name]["source"] == "morphometrics"
        eff = cs["effectiveness"][name]
        if not m["readers"][name]["readable"]:  # 48 blobs of 16 px: the reader may not be sure
            assert eff is None
            assert cs["effectiveness_unmeasured"][name] == m["readers"][name]["reason"]
            continue
        assert eff["node"] == name and eff["n_images"] + eff["n_unmeasurable"] > 0
        assert -1.0 <= eff["spearman"] <= 1.0 or math.isnan(eff["spearman"])
    json.dumps(m)  # JSON-serialisable as is


def test_tiny_preset_on_64px_rgb_end_to_end(tmp_path):
    data = make_dataset(24, size=64, channels=3)
    torch.manual_seed(0)
    clf = TinyCNN(channels=3, size=64).eval()
    cfg = {
        "train": {
            "encoder_steps": 4,
            "generator_steps": 3,
            "encoder_batch": 8,
            "generator_batch": 4,
            "eval_images": 12,
        }
    }
    est = Glance(clf, contexts=["intensity"], preset="tiny", config=cfg, quiet=True)
    est.fit(data, out=tmp_path / "run")
    z = est.encode(data.load_images(range(3)))
    assert z.shape == (3, 1 + est.config_.encoder.free_dims)
    assert est.generate(z).shape == (3, 3, 64, 64)
    m = est.evaluate(data, out=tmp_path / "run")
    assert m["generated_alignment"] == {"intensity": None}  # no measurement for RGB images
    assert m["counterfactual_soundness"]["effectiveness"] == {"intensity": None}
    assert (tmp_path / "run" / "samples.png").is_file()
    loaded = glance.load(tmp_path / "run", classifier=clf)
    assert torch.equal(loaded.generate(z), est.generate(z))


def test_load_keeps_an_adapters_input_transform(fitted):
    from glance.classifiers import ClassifierAdapter
    from glance.classifiers.adapter import Normalize

    est, data, run = fitted
    model = est.adapter_.model
    adapter = ClassifierAdapter(model, input_transform=Normalize([0.5], [0.5]))
    loaded = glance.load(run, classifier=adapter)
    assert loaded.adapter_.input_transform is adapter.input_transform
    assert loaded.adapter_.layer_name == est.adapter_.layer_name
    x = data.load_images(range(4))
    with torch.no_grad():
        expected = model((x - 0.5) / 0.5)
    assert torch.allclose(loaded.classify(x), expected, atol=1e-5)
    assert not torch.allclose(loaded.classify(x), est.classify(x), atol=1e-3)


def test_joint_fine_tune_stage(tiny_classifier, tiny_data):
    cfg = {
        "train": {
            "encoder_steps": 4,
            "generator_steps": 2,
            "joint_steps": 10,
            "encoder_batch": 16,
            "generator_batch": 8,
        }
    }
    est = Glance(tiny_classifier, contexts=["thickness"], preset="tiny", config=cfg, quiet=True)
    est.fit(tiny_data)
    joint = [r for r in est.history_ if r["stage"] == "joint"]
    assert joint and joint[-1]["step"] == 16
    assert {"distill", "align", "reconstruction", "d_logistic"} <= set(joint[-1])


def test_generator_warmup_stage_trains_on_reconstruction_alone(tiny_classifier, tiny_data):
    cfg = {
        "train": {
            "encoder_steps": 10,
            "generator_warmup_steps": 10,
            "generator_steps": 10,
            "encoder_batch": 16,
            "generator_batch": 8,
        }
    }
    est = Glance(tiny_classifier, contexts=["thickness"], preset="tiny", config=cfg, quiet=True)
    est.fit(tiny_data)
    # One record per 10 steps: the stages in order, the warm-up between encoder and generator.
    assert [(r["step"], r["stage"]) for r in est.history_] == [
        (10, "encoder"),
        (20, "warmup"),
        (30, "generator"),
    ]
    warm = [r for r in est.history_ if r["stage"] == "warmup"]
    # The warm-up's records carry the reconstruction loss and nothing of the full objective.
    assert "reconstruction" in warm[-1]
    assert not {"adversarial", "d_logistic", "distill_generated", "latent_cycle"} & set(warm[-1])
    assert "d_logistic" in est.history_[-1]


def test_generator_warmup_moves_only_the_generator(tiny_classifier, tiny_data):
    """Warm-up steps change G (and its EMA) and leave the discriminator as initialised."""

    def fit(warmup: int) -> Glance:
        cfg = {
            "train": {
                "encoder_steps": 2,
                "generator_warmup_steps": warmup,
                "generator_steps": 0,
                "encoder_batch": 16,
                "generator_batch": 8,
            }
        }
        est = Glance(tiny_classifier, contexts=["thickness"], preset="tiny", config=cfg, quiet=True)
        return est.fit(tiny_data)

    none, warm = fit(0), fit(5)
    same = lambda a, b: all(  # noqa: E731
        torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    assert same(none.discriminator_, warm.discriminator_)
    assert not same(none.generator_, warm.generator_)


def _warmup_own_optimiser_config(**train):
    return {
        "train": {
            "encoder_steps": 2,
            "generator_warmup_steps": 4,
            "generator_warmup_lr": 5e-3,
            "generator_warmup_betas": [0.9, 0.99],
            "generator_steps": 3,
            "encoder_batch": 16,
            "generator_batch": 8,
            "checkpoint_every": 3,
            "keep_checkpoints": 10,
            **train,
        }
    }


def test_generator_warmup_with_its_own_optimiser(tiny_classifier, tiny_data, tmp_path, monkeypatch):
    """A warm-up learning rate or betas give the warm-up its own Adam; the full stage's Adam
    then starts fresh, with the generator's own learning rate and betas."""
    from glance.training.checkpoint import CheckpointManager
    from glance.training.loop import Trainer

    used: list[tuple[str, tuple[str, ...]]] = []
    original = Trainer._optimise

    def recording(self, step, **outs):
        used.append((self.stage_at(step).name, tuple(outs)))
        return original(self, step, **outs)

    monkeypatch.setattr(Trainer, "_optimise", recording)
    run = tmp_path / "run"
    cfg = _warmup_own_optimiser_config()
    est = Glance(tiny_classifier, contexts=["thickness"], preset="tiny", config=cfg, quiet=True)
    est.fit(tiny_data, out=run)
    assert (
        used == [("warmup", ("warmup",))] * 4 + [("generator", ("generator", "discriminator"))] * 3
    )
    ckpt = CheckpointManager(run / "checkpoints").load(run / "checkpoints" / "ckpt-000009")
    warm, gen = ckpt.optimizers["warmup"], ckpt.optimizers["generator"]
    assert warm["param_groups"][0]["lr"] == pytest.approx(5e-3)
    assert tuple(warm["param_groups"][0]["betas"]) == (0.9, 0.99)
    assert tuple(gen["param_groups"][0]["betas"]) == tuple(est.config_.train.betas)
    steps = lambda opt: {float(s["step"]) for s in opt["state"].values()}  # noqa: E731
    assert steps(warm) == {4.0} and steps(gen) == {3.0}  # the full stage's Adam began afresh


def test_generator_warmup_shares_the_generator_optimiser_by_default(
    tiny_classifier, tiny_data, tmp_path
):
    from glance.training.checkpoint import CheckpointManager

    run = tmp_path / "run"
    cfg = _warmup_own_optimiser_config(generator_warmup_lr=None, generator_warmup_betas=None)
    Glance(tiny_classifier, contexts=["thickness"], preset="tiny", config=cfg, quiet=True).fit(
        tiny_data, out=run
    )
    ckpt = CheckpointManager(run / "checkpoints").load(run / "checkpoints" / "ckpt-000009")
    assert "warmup" not in ckpt.optimizers
    assert {float(s["step"]) for s in ckpt.optimizers["generator"]["state"].values()} == {7.0}


def test_resume_inside_a_warmup_with_its_own_optimiser_is_exact(
    tiny_classifier, tiny_data, tmp_path
):
    from glance.training.loop import Hooks
    from helpers import Crash

    cfg = _warmup_own_optimiser_config()

    def fit(out, **kw):
        est = Glance(
            tiny_classifier,
            contexts=["thickness"],
            preset="tiny",
            config=cfg,
            quiet=True,
            random_state=1,
        )
        est._hooks = kw.pop("hooks", None)
        return est.fit(tiny_data, out=out, **kw)

    ref = fit(tmp_path / "ref")

    def crash(step):
        if step == 4:  # after the warm-up's checkpoint at step 3
            raise Crash

    with pytest.raises(Crash):
        fit(tmp_path / "run", hooks=Hooks(on_step=crash))
    resumed = fit(tmp_path / "run", resume=True)
    ref_state, state = ref.generator_.state_dict(), resumed.generator_.state_dict()
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
