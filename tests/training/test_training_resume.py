"""Resume parity: k steps + crash + resume + N - k steps == N uninterrupted steps, bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from glance.estimator import Glance
from glance.training.checkpoint import CheckpointManager
from glance.training.loop import Hooks, Trainer
from helpers import RESUME_CONFIG as CONFIG
from helpers import Crash, TinyCNN, make_dataset, torch_threads


def _fit(data, clf, out, *, resume=False, hooks=None, seen=None, monkeypatch=None):
    if seen is not None:
        original = Trainer.batch_indices

        def recording(self, stage, step, batch):
            idx = original(self, stage, step, batch)
            seen.append((step, idx.tolist()))
            return idx

        monkeypatch.setattr(Trainer, "batch_indices", recording)
    est = Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config=CONFIG,
        random_state=3,
        quiet=True,
    )
    est._hooks = hooks
    return est.fit(data, out=out, resume=resume)


def _states(est):
    return {
        name: getattr(est, f"{name}_").state_dict()
        for name in ("encoder", "head", "generator", "discriminator", "mixture")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.manual_seed(0)
    clf, data = TinyCNN().eval(), make_dataset()
    out = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("GLANCE_THREADS", "1")  # as the autouse fixture does for function-scoped tests
    seen: list = []
    with torch_threads(1):
        try:
            est = _fit(data, clf, out, seen=seen, monkeypatch=mp)
        finally:
            mp.undo()
    return clf, data, out, est, seen


@pytest.mark.parametrize(
    "crash_at",
    [pytest.param(3, marks=pytest.mark.slow), 6, 11],  # mid-encoder, stage boundary, mid-G
)
def test_resume_is_bit_identical(reference, tmp_path, monkeypatch, crash_at):
    clf, data, ref_out, ref, ref_seen = reference
    out = tmp_path / "run"

    def on_step(step):
        if step == crash_at:
            raise Crash

    with pytest.raises(Crash):
        _fit(data, clf, out, hooks=Hooks(on_step=on_step))
    seen: list = []
    resumed = _fit(data, clf, out, resume=True, seen=seen, monkeypatch=monkeypatch)

    expected_start = max(s for s in (0, 4, 6, 8, 12) if s <= crash_at)
    assert seen[0][0] == expected_start  # resumed from the last complete checkpoint
    # Data order after resume continues exactly as in the uninterrupted run.
    assert seen == [s for s in ref_seen if s[0] >= expected_start]
    for name, state in _states(ref).items():
        other = _states(resumed)[name]
        assert state.keys() == other.keys()
        for key in state:
            assert torch.equal(state[key], other[key]), f"{name}.{key} differs after resume"
    # Optimiser and RNG states of the final checkpoints are identical too.
    a = CheckpointManager(ref_out / "checkpoints").load(ref_out / "checkpoints" / "ckpt-000014")
    b = CheckpointManager(out / "checkpoints").load(out / "checkpoints" / "ckpt-000014")
    for name in a.optimizers:
        sa, sb = a.optimizers[name]["state"], b.optimizers[name]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), f"optimiser {name} state {i}.{k}"
    assert torch.equal(a.generators["sampling"], b.generators["sampling"])

    # The metrics log holds each logged step once, with the same losses.
    def losses(path):
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time"} for r in recs]

    assert losses(out / "metrics.jsonl") == losses(ref_out / "metrics.jsonl")


def test_resume_of_finished_run_does_nothing(reference, tmp_path, monkeypatch, caplog):
    import logging
    import shutil

    clf, data, ref_out, ref, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    seen: list = []
    with caplog.at_level(logging.INFO):
        est = _fit(data, clf, out, resume=True, seen=seen, monkeypatch=monkeypatch)
    assert seen == []  # no training step ran
    assert "already complete: step 14/14" in caplog.text
    for name, state in _states(ref).items():
        assert all(torch.equal(v, _states(est)[name][k]) for k, v in state.items())


def test_resume_with_changed_config_is_refused(reference, tmp_path):
    import shutil

    from glance.exceptions import CheckpointIncompatibleError

    clf, data, ref_out, _, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    est = Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config={**CONFIG, "loss": {"align": 9.0}},
        random_state=3,
        quiet=True,
    )
    with pytest.raises(CheckpointIncompatibleError, match=r"loss\.align: 4\.0 -> 9\.0"):
        est.fit(data, out=out, resume=True)


def test_resume_with_changed_data_is_refused(reference, tmp_path):
    import shutil

    from glance.exceptions import CheckpointIncompatibleError

    clf, data, ref_out, _, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    changed = data.subset(range(len(data)))
    changed.attributes[3, 0] += 1.0
    est = Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config=CONFIG,
        random_state=3,
        quiet=True,
    )
    with pytest.raises(CheckpointIncompatibleError, match="its data_fingerprint is"):
        est.fit(changed, out=out, resume=True)
