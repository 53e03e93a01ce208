"""How many CPU threads glance computes with, chosen from what the machine offers *now*.

PyTorch's intra-op threads meet at a barrier after every parallel region, and wait for each
other spinning. When another process keeps one of their cores busy, every region waits for the
thread that shares its core, and the spinning takes CPU from both: measured on this project's
2-core machine with one core kept busy by ``python -c 'while True: pass'``, generator training
ran at 0.34 steps/s with 2 threads and 1.95 steps/s with 1 (2.0 on an idle machine), while on an
idle machine 2 threads ran at 3.4 steps/s. So glance uses the cores nobody else is using:

- :class:`ThreadPolicy` counts the cores this process may run on (CPU affinity and a cgroup
  quota), measures how much of them other processes use (``/proc/stat`` minus this process's
  own CPU time and its children's, over the last interval) and sets
  ``torch.set_num_threads`` to the free ones;
- it re-checks every few seconds at step boundaries (:meth:`ThreadPolicy.tick`), so a long fit
  follows the load as it changes: down to one thread when another job starts, back up when it
  ends;
- an explicit choice wins: ``threads=`` (``--threads N`` on the command line), else the
  ``GLANCE_THREADS`` environment variable, else ``OMP_NUM_THREADS`` (as PyTorch users expect),
  else the automatic rule. Where ``/proc/stat`` does not exist (macOS, Windows) the automatic
  rule uses every allowed core. Nested :func:`compute` blocks share the outer block's policy.

Floating-point sums depend on the thread count, so results are bit-identical from run to run (and
a resumed fit equals an uninterrupted one) only with a fixed count: give one when that matters.

:func:`compute` also flushes denormal floats to zero for its duration: trained generator weights
and their activations underflow into the denormal range, where x86 arithmetic is many times
slower (one fitted ``fast`` generator trained 1.3x faster at 1 thread and 1.7x at 2 with them
flushed; values below 1e-38 change nothing a figure can show).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from glance.exceptions import ConfigError

__all__ = ["ThreadPolicy", "compute", "allowed_cores", "fixed_threads", "torch_threads"]

logger = logging.getLogger(__name__)

#: Seconds between two load checks during long work.
CHECK_INTERVAL = 5.0
#: Another process using more than this many cores makes glance give one up...
BUSY_ABOVE = 0.5
#: ...and glance takes a core back only when others use less than this (hysteresis).
FREE_BELOW = 0.35
#: A load sample younger than this (seconds) starts the next decision without a probe.
RECENT = 10.0
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: The last (monotonic time, process CPU time, busy jiffies) any policy sampled.
_LAST: tuple[float, float, int | None] | None = None


def allowed_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def fixed_threads(threads: int | None = None) -> int | None:
    """The thread count the user fixed (argument, ``GLANCE_THREADS``, ``OMP_NUM_THREADS``), or
    ``None`` for the automatic rule."""
    if threads is not None:
        return int(threads)
    for var in ("GLANCE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                logger.warning("ignoring %s=%r (not an integer)", var, value)
    return None


def _busy_ticks(cpus: set[int] | None) -> int | None:
    """Busy jiffies (everything but idle and iowait) of ``cpus`` from ``/proc/stat``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values) - values[3] - values[4]
    return total


def _descendants(pid: int) -> list[int]:
    """Live descendant processes of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children, live (``/proc``) or reaped.

    Worker processes a program started itself (e.g. joblib's for data generation) are its own
    work, not other processes' load: counting them once made a demo's fit start on one thread.
    """
    total = time.process_time()
    times = os.times()
    total += times.children_user + times.children_system
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    return total


class ThreadPolicy:
    """Sets torch's intra-op threads to the cores other processes leave free, and keeps it so.

    Parameters
    ----------
    threads : int, optional
        A fixed thread count (no measuring); ``None`` reads ``GLANCE_THREADS`` /
        ``OMP_NUM_THREADS``, else chooses automatically.
    interval : float
        Seconds between load checks in :meth:`tick`.

    Attributes
    ----------
    threads_ : int
        The thread count in use.
    history_ : list of (float, float, int)
        ``(time, other processes' load in cores, threads chosen)`` at every change.
    """

    def __init__(self, threads: int | None = None, *, interval: float = CHECK_INTERVAL) -> None:
        self.fixed = fixed_threads(threads)
        self.interval = interval
        self.cores = allowed_cores()
        try:
            self._cpus: set[int] | None = set(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = None
        self.threads_ = self.fixed or self.cores
        self.history_: list[tuple[float, float, int]] = []
        self._mark: tuple[float, float, int | None] | None = None

    @property
    def automatic(self) -> bool:
        """Whether the thread count follows the load (nothing fixed it)."""
        return self.fixed is None

    def _sample(self) -> tuple[float, float, int | None]:
        global _LAST
        _LAST = (time.monotonic(), _own_cpu_seconds(), _busy_ticks(self._cpus))
        return _LAST

    def other_load(self, since: tuple[float, float, int | None]) -> float | None:
        """Cores used by other processes since ``since`` (a ``_sample``), or ``None``."""
        t1, c1, b1 = self._sample()
        t0, c0, b0 = since
        if b0 is None or b1 is None or t1 - t0 <= 0:
            return None
        busy = (b1 - b0) / _CLK_TCK  # core-seconds busy, all processes
        return max(0.0, (busy - (c1 - c0)) / (t1 - t0))

    def start(self, probe: float = 0.1) -> int:
        """Choose the first thread count and apply it.

        The load is measured since the last sample any policy took (at most
        :data:`RECENT` seconds ago, at least ``probe`` long); without one, over ``probe``
        seconds of sleep.
        """
        if self.automatic:
            mark = _LAST
            age = time.monotonic() - mark[0] if mark is not None else None
            if age is None or age > RECENT:
                mark, age = self._sample(), 0.0
            if age < probe:
                time.sleep(probe - age)
            self._decide(self.other_load(mark), initial=True)
        self._apply()
        self._mark = self._sample()
        return self.threads_

    def tick(self) -> int:
        """At a step boundary: re-check the load if ``interval`` seconds passed; return the
        thread count in use."""
        if not self.automatic:
            return self.threads_
        if self._mark is None:
            return self.start()
        if time.monotonic() - self._mark[0] >= self.interval:
            self._decide(self.other_load(self._mark), initial=False)
            self._apply()
            self._mark = self._sample()
        return self.threads_

    def _decide(self, other: float | None, *, initial: bool) -> None:
        if other is None:
            return  # no measurement on this platform: keep every allowed core
        threads = self.threads_
        if initial or other > BUSY_ABOVE or other < FREE_BELOW:
            # free cores, rounding a partly used one to "used" above BUSY_ABOVE
            threads = max(1, min(self.cores, int(self.cores - other + (1 - BUSY_ABOVE))))
        if threads != self.threads_ or initial:
            logger.info(
                "%d torch thread(s): other processes use %.2f of %d core(s)",
                threads,
                other,
                self.cores,
            )
            self.history_.append((time.time(), round(other, 3), threads))
        self.threads_ = threads

    def _apply(self) -> None:
        if torch.get_num_threads() != self.threads_:
            torch.set_num_threads(self.threads_)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged); restore afterwards.

    On a busy machine two threads can be many times slower than one, so callers choose.
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_threads must be a positive integer or None; got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_ACTIVE = threading.local()


@contextlib.contextmanager
def compute(threads: int | None = None) -> Iterator[ThreadPolicy]:
    """The block computes with the free cores (a started :class:`ThreadPolicy`, yielded so the
    caller can :meth:`~ThreadPolicy.tick`) and denormals flushed; both are restored after.

    Inside another ``compute`` block of the same thread (the demo's fit), the outer policy is
    used unless ``threads`` fixes a count.
    """
    outer = getattr(_ACTIVE, "policy", None)
    if outer is not None and threads is None:
        yield outer
        return
    before = torch.get_num_threads()
    flushed = torch.set_flush_denormal(True)
    policy = ThreadPolicy(threads)
    policy.start()
    _ACTIVE.policy = policy
    try:
        yield policy
    finally:
        _ACTIVE.policy = outer
        torch.set_num_threads(before)
        if flushed:
            torch.set_flush_denormal(False)
