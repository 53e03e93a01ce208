"""Training features over the memory budget (issue 12): cached on disk, read back by rows.

With ``FEATURE_MEMORY_BUDGET`` patched to 0 every fit takes the cached path; it must give the
fit of the in-memory path (same seed), clean up after itself, and survive a kill + resume (the
cache is kept for the resume, verified before reuse and rebuilt when it does not check out).
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import pytest
import torch

from glance.classifiers import ClassifierAdapter
from glance.classifiers import features as features_mod
from glance.classifiers.features import classifier_outputs, feature_stats
from glance.estimator import Glance
from glance.training.loop import Hooks
from helpers import RESUME_CONFIG as CONFIG
from helpers import Crash, TinyCNN, make_dataset, torch_threads


def _classifier():
    torch.manual_seed(0)
    return TinyCNN().eval()


def _fit(data, out=None, *, resume=False, hooks=None):
    est = Glance(
        _classifier(),
        contexts=["thickness", "intensity"],
        preset="tiny",
        config=CONFIG,
        random_state=3,
        quiet=True,
    )
    est._hooks = hooks
    return est.fit(data, out=out, resume=resume)


def _same_fit(a, b, data):
    images = data.load_images(np.arange(len(data))).float()
    torch.testing.assert_close(a.encode(images), b.encode(images), rtol=1e-5, atol=1e-6)
    for name in ("encoder", "head", "generator", "discriminator", "mixture"):
        sa, sb = getattr(a, f"{name}_").state_dict(), getattr(b, f"{name}_").state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")


@pytest.fixture
def cached(monkeypatch):
    """Every fit caches its features; returns the cache directories built."""
    monkeypatch.setattr(features_mod, "FEATURE_MEMORY_BUDGET", 0)
    built = []
    original = features_mod.cache_features

    def spy(adapter, dataset, path, *args, **kwargs):
        built.append(path)
        return original(adapter, dataset, path, *args, **kwargs)

    monkeypatch.setattr(features_mod, "cache_features", spy)
    return built


@pytest.fixture(scope="module")
def in_memory():
    data = make_dataset()
    mp = pytest.MonkeyPatch()
    mp.setenv("GLANCE_THREADS", "1")  # as the autouse fixture does for function-scoped tests
    with torch_threads(1):
        try:
            est = _fit(data)
        finally:
            mp.undo()
    return data, est


def test_feature_stats_match_the_full_array():
    x = torch.randn(37, 5, 3, 4, dtype=torch.float64) * torch.arange(1, 6).view(1, 5, 1, 1) + 7
    flat = x.transpose(0, 1).reshape(5, -1)
    for batch in (1, 4, 37, 100):
        mean, std = feature_stats(x.float(), batch=batch)
        assert mean.dtype == std.dtype == torch.float64
        torch.testing.assert_close(mean, flat.mean(1), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(std, flat.std(1), rtol=1e-6, atol=1e-6)


def test_fit_over_the_budget_caches_and_matches_in_memory(in_memory, cached, monkeypatch, tmp_path):
    data, ref = in_memory
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the fit's temp dir goes
    est = _fit(data)
    assert len(cached) == 1 and cached[0].parent.parent == scratch  # in the fit's temp dir
    _same_fit(est, ref, data)
    assert list(scratch.iterdir()) == []  # temp dir, cache included, removed

    run = tmp_path / "run"
    est = _fit(data, run)
    assert cached[1] == run / "checkpoints" / "features"  # the run's working area
    _same_fit(est, ref, data)
    assert not cached[1].exists()  # spent once the fit is done
    assert (run / "checkpoints").is_dir()


def test_resume_verifies_the_cache_then_reuses_or_rebuilds(in_memory, cached, tmp_path, caplog):
    data, ref = in_memory
    run = tmp_path / "run"

    def crash_at(k):
        def on_step(step):
            if step == k:
                raise Crash

        return Hooks(on_step=on_step)

    with pytest.raises(Crash):
        _fit(data, run, hooks=crash_at(5))
    cache = run / "checkpoints" / "features"
    assert cached == [cache] and (cache / "MANIFEST.json").is_file()  # kept for the resume
    est = _fit(data, run, resume=True)
    assert cached == [cache]  # verified and reused, not rebuilt
    _same_fit(est, ref, data)
    assert not cache.exists()

    # A cache that does not check out is rebuilt: truncated, or rows that differ.
    def truncate(path):
        with open(path / "features.npy", "r+b") as fh:
            fh.truncate(fh.seek(0, 2) - 8)

    def overwrite_last_row(path):
        with open(path / "features.npy", "r+b") as fh:
            fh.seek(-8, 2)
            fh.write(np.full(2, 123.0, np.float32).tobytes())

    for k, damage, reason in ((9, truncate, "file size"), (11, overwrite_last_row, "differ")):
        run = tmp_path / f"run-{k}"
        with pytest.raises(Crash):
            _fit(data, run, hooks=crash_at(k))
        damage(run / "checkpoints" / "features")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="glance.classifiers.features"):
            est = _fit(data, run, resume=True)
        assert "rebuilding the feature cache" in caplog.text and reason in caplog.text
        assert cached[-2:] == [run / "checkpoints" / "features"] * 2
        _same_fit(est, ref, data)


def test_a_cache_of_other_inputs_is_rebuilt_and_leftovers_removed(
    cached, monkeypatch, tmp_path, caplog
):
    data = make_dataset(20)
    adapter = ClassifierAdapter(_classifier())
    path = tmp_path / "features"
    ident = {"data_fingerprint": "a", "classifier": "c", "layer": adapter.layer_name}
    cpu = torch.device("cpu")
    logits, rows = classifier_outputs(adapter, data, cpu, cache_dir=path, identity=ident)
    rows.close()
    leftover = tmp_path / "features.tmp-killed"
    leftover.mkdir()
    with caplog.at_level(logging.WARNING, logger="glance.classifiers.features"):
        _, again = classifier_outputs(
            adapter, data, cpu, cache_dir=path, identity={**ident, "data_fingerprint": "b"}
        )
    assert "computed from another data_fingerprint" in caplog.text
    assert len(cached) == 2 and not leftover.exists()
    monkeypatch.setattr(features_mod, "FEATURE_MEMORY_BUDGET", 1 << 30)  # in memory again
    lo_mem, fe_mem = classifier_outputs(adapter, data, cpu, cache_dir=path, identity=ident)
    assert isinstance(fe_mem, torch.Tensor) and len(cached) == 2
    assert torch.equal(again[:], fe_mem) and torch.equal(logits, lo_mem)
    again.close()
