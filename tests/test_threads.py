"""glance.threads: the thread count follows what other processes leave free."""

from __future__ import annotations

import pytest
import torch

from glance import threads
from glance.threads import ThreadPolicy, compute, fixed_threads


class FakeMachine:
    """``/proc/stat`` and the clocks of a 2-core machine whose other processes use ``other``
    cores while this process uses ``own`` cores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, other: float = 0.0, own: float = 0.0):
        self.t, self.cpu, self.ticks = 0.0, 0.0, 0
        self.other, self.own = other, own
        monkeypatch.setattr(threads, "allowed_cores", lambda: 2)
        monkeypatch.setattr(threads, "_busy_ticks", lambda cpus: self.ticks)
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(threads, "_own_cpu_seconds", lambda: self.cpu)
        monkeypatch.setattr(threads.time, "sleep", self.advance)
        for var in ("GLANCE_THREADS", "OMP_NUM_THREADS"):
            monkeypatch.delenv(var, raising=False)
        torch.set_num_threads(2)  # torch's default on 2 cores (restored by restore_threads)
        monkeypatch.setattr(threads, "_LAST", None)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.cpu += self.own * seconds
        self.ticks += round((self.own + self.other) * seconds * threads._CLK_TCK)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_idle_machine_is_used_whole(monkeypatch, restore_threads):
    FakeMachine(monkeypatch, other=0.0)
    policy = ThreadPolicy()
    assert policy.start() == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize(("other", "expected"), [(1.0, 1), (0.67, 1), (0.4, 2), (1.9, 1)])
def test_cores_used_by_others_are_left_to_them(monkeypatch, restore_threads, other, expected):
    FakeMachine(monkeypatch, other=other)
    assert ThreadPolicy().start() == expected


def test_a_recent_sample_spares_the_probe(monkeypatch, restore_threads):
    m = FakeMachine(monkeypatch, other=1.0)
    ThreadPolicy().start()
    slept = []
    monkeypatch.setattr(threads.time, "sleep", lambda s: slept.append(s) or m.advance(s))
    m.advance(2.0)  # the process worked (say, loaded data) since that sample
    assert ThreadPolicy().start() == 1 and slept == []
    m.advance(30.0)  # too old to trust: measure afresh
    ThreadPolicy().start()
    assert slept == [0.1]


def test_the_choice_follows_the_load_between_steps(monkeypatch, restore_threads):
    m = FakeMachine(monkeypatch, other=0.0)
    policy = ThreadPolicy(interval=5.0)
    assert policy.start() == 2
    # a CPU-bound job starts: it gets 2/3 of the cores while our two threads share them
    m.other, m.own = 0.67, 1.33
    m.advance(3.0)
    assert policy.tick() == 2  # not re-checked before the interval
    m.advance(3.0)
    assert policy.tick() == 1 and torch.get_num_threads() == 1
    m.other, m.own = 1.0, 1.0  # one thread each: stays
    m.advance(6.0)
    assert policy.tick() == 1
    m.other, m.own = 0.4, 1.0  # between the thresholds: no flapping
    m.advance(6.0)
    assert policy.tick() == 1
    m.other = 0.05  # the job ended
    m.advance(6.0)
    assert policy.tick() == 2
    assert [h[2] for h in policy.history_] == [2, 1, 2]


def test_an_explicit_choice_wins(monkeypatch, restore_threads):
    FakeMachine(monkeypatch, other=1.0)
    assert ThreadPolicy(2).start() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fixed_threads() == 2 and ThreadPolicy().start() == 2
    monkeypatch.setenv("GLANCE_THREADS", "1")
    assert fixed_threads() == 1  # glance's own variable before OpenMP's
    assert fixed_threads(3) == 3
    monkeypatch.setenv("GLANCE_THREADS", "many")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fixed_threads() is None  # ignored with a warning


def test_nested_blocks_share_the_outer_policy(monkeypatch, restore_threads):
    m = FakeMachine(monkeypatch, other=1.0)
    with compute() as outer:
        assert outer.threads_ == 1
        m.other = 0.0
        with compute() as inner:  # the demo's fit inside the demo: no second decision
            assert inner is outer
        with compute(2) as fixed:
            assert fixed is not outer and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1


def test_without_proc_stat_every_allowed_core_is_used(monkeypatch, restore_threads):
    FakeMachine(monkeypatch)
    monkeypatch.setattr(threads, "_busy_ticks", lambda cpus: None)
    assert ThreadPolicy().start() == 2


def test_compute_restores_threads_and_denormals(monkeypatch, restore_threads):
    FakeMachine(monkeypatch, other=1.0)
    torch.set_num_threads(2)
    with compute() as policy:
        assert torch.get_num_threads() == policy.threads_ == 1
        tiny = torch.tensor([1e-39]) * torch.tensor([1.0])
        assert tiny.item() == 0.0  # flushed inside
    assert torch.get_num_threads() == 2
    assert (torch.tensor([1e-39]) * torch.tensor([1.0])).item() != 0.0


def test_bad_thread_counts_are_refused():
    from glance.exceptions import ConfigError
    from glance.threads import torch_threads

    with pytest.raises(ConfigError, match="positive integer"):
        with torch_threads(0):
            pass


def _burn_then_wait(seconds: float, done, release) -> None:
    import time

    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    done.set()
    release.wait(30)


@pytest.mark.skipif(not threads.Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_own_worker_processes_are_not_other_load():
    """CPU time of this process's own live children counts as its own, not as another
    process's load (a demo's data-generation workers once made its fit start on one thread)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    done, release = ctx.Event(), ctx.Event()
    before = threads._own_cpu_seconds()
    child = ctx.Process(target=_burn_then_wait, args=(0.5, done, release))
    child.start()
    try:
        assert done.wait(30)
        assert threads._own_cpu_seconds() - before >= 0.4  # the live child's 0.5 CPU-s
    finally:
        release.set()
        child.join(30)
