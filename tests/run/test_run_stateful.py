"""A stateful property test of run directories under faults (issue "Runs you can trust").

A seeded random walk drives sequences of ``fit``/``fit --resume``/``evaluate``/``graph``/
``explain``/``report`` on one tiny run, with injected faults: ``kill -9`` of a command's process
at a random moment, a full disk (the run lives on a small tmpfs that a filler file fills), and a
read-only file system (the tmpfs remounted read-only). After every step it checks that

- the run opens (an interrupted write is finished or discarded) and every sealed file verifies;
- once fitted, the run loads as a :class:`glance.Glance`;
- no artefact sealed before is lost (a later command may replace it, never drop it).

The disk-full and read-only faults need ``mount`` (root with CAP_SYS_ADMIN); without it they
are skipped and the run lives in a plain temporary folder. ``GLANCE_STATEFUL_STEPS`` sets the
number of steps (default 200: 10 sequences of 20); ``GLANCE_STATEFUL_SEED`` replays a failing
sequence (its seed is in the failure message).

Why not Hypothesis' ``RuleBasedStateMachine``: a step costs from a fraction of a second to
several (a fit, a killed process), so only ~10 sequences fit in the slow tier, and Hypothesis
spends its first examples on the simplest draws (no faults, the first command). A seeded walk
gives every sequence the full mix of commands and faults and stays replayable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from glance.cli.main import main
from glance.run import Run
from helpers import morpho_workspace

pytestmark = pytest.mark.slow

#: Artefact groups: once one is sealed, a later command may replace it but never lose it.
GROUPS = {
    "model": "model/generator.safetensors",
    "state": "state.json",
    "identity": "run.json",
    "metrics": "metrics.json",
    "graph": "graph/graph.json",
    "explanations": "explanations/explanations.json",
    "report": "report.html",
}
STEPS = int(os.environ.get("GLANCE_STATEFUL_STEPS", "200"))
COMMANDS = ("fit", "evaluate", "graph", "explain", "explain", "report")
#: What happens to a step's command; repeats weight the draw.
FAULTS = ("none", "none", "none", "kill -9", "kill -9", "kill -9", "disk full", "read-only")
PER_SEQUENCE = 20
TMPFS_BYTES = 48 << 20
RESULTS: dict[str, int] = {"steps": 0, "kills": 0, "disk_full": 0, "read_only": 0}


def _mount(path: Path) -> bool:
    """A small tmpfs at ``path``; False where the machine does not allow mounting."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(path)],
        capture_output=True,
    )
    return r.returncode == 0


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


class RunMachine:
    """One run directory and the commands that write it."""

    def __init__(self, workspace: tuple) -> None:
        self.ws = workspace
        self.top = Path(tempfile.mkdtemp(prefix="stateful-"))
        self.mounted = _mount(self.top)
        self.run = self.top / "run"
        self.fitted = False
        self.sealed: set[str] = set()

    def teardown(self) -> None:
        if self.mounted:
            with contextlib.suppress(subprocess.CalledProcessError):
                _remount(self.top, "rw")
            subprocess.run(["umount", str(self.top)], check=False)
        shutil.rmtree(self.top, ignore_errors=True)

    # -- commands --------------------------------------------------------------------------

    def _argv(self, command: str, index: int = 0) -> list[str]:
        root, data, clf, cfg = self.ws
        if command == "fit":
            argv = ["fit", "--data", str(data), "--classifier", str(clf)]
            argv += ["--contexts", "thickness,intensity", "--preset", "tiny"]
            argv += ["--config", str(cfg), "--out", str(self.run), "--seed", "1"]
            return argv + (["--resume"] if Run.is_run(self.run) else [])
        if command == "evaluate":
            return ["evaluate", str(self.run), "--n-images", "12"]
        if command == "graph":
            return ["graph", str(self.run), "--bootstrap", "0", "--jobs", "1"]
        if command == "explain":
            span = f"{index}:{index + 2}"
            return ["explain", str(self.run), "--data", str(data), "--index", span]
        return ["report", str(self.run)]

    def _in_process(self, argv: list[str]) -> int:
        return main(["-q", *argv])

    def _killed(self, argv: list[str], delay: float) -> int:
        """Run ``argv`` in its own process and ``kill -9`` it after ``delay`` seconds."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "glance.cli.main", "-q", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        RESULTS["kills"] += 1
        return proc.wait()

    def _step(self, command: str, *, kill: float | None = None, index: int = 0) -> int:
        if command != "fit" and not self.fitted:
            command = "fit"
        argv = self._argv(command, index)
        rc = self._killed(argv, kill) if kill is not None else self._in_process(argv)
        if command == "fit" and rc == 0:
            self.fitted = True
        RESULTS["steps"] += 1
        return rc

    def random_step(self, rng: np.random.Generator) -> str:
        """Draw a command and a fault, run them; return what was done."""
        fault, command = str(rng.choice(FAULTS)), str(rng.choice(COMMANDS))
        delay, free_kb, index = rng.uniform(0.5, 6.0), int(rng.integers(1, 400)), rng.integers(11)
        self.step(fault, command, float(delay), free_kb, int(index))
        return f"{command} ({fault})"

    def step(self, fault: str, command: str, delay: float, free_kb: int, index: int) -> None:
        if fault == "kill -9":
            self._step(command, kill=delay, index=index)
        elif fault == "disk full" and self.mounted and command != "fit":
            self._disk_full(command, free_kb, index)
        elif fault == "read-only" and self.mounted and command != "fit":
            self._read_only(command, index)
        else:
            assert self._step(command, index=index) == 0

    def _disk_full(self, command: str, free_kb: int, index: int) -> None:
        filler = self.top / "filler"
        stat = os.statvfs(self.top)
        size = max(0, stat.f_bavail * stat.f_frsize - free_kb * 1024)
        with open(filler, "wb") as fh, contextlib.suppress(OSError):
            while size > 0:  # tmpfs allocates on write
                n = min(size, 1 << 20)
                fh.write(b"\0" * n)
                size -= n
        try:
            rc = self._step(command, index=index)
        finally:
            filler.unlink()
        assert rc in (0, 5), rc  # done, or one line "no space left on the device"
        RESULTS["disk_full"] += 1

    def _read_only(self, command: str, index: int) -> None:
        _remount(self.top, "ro")
        try:
            rc = self._step(command, index=index)
        finally:
            _remount(self.top, "rw")
        assert rc == 5, rc  # each of these writes into the run: refused before any work
        RESULTS["read_only"] += 1

    # -- what must hold after every step ----------------------------------------------------

    def check(self) -> None:
        """What must hold after every step."""
        if not Run.is_run(self.run):
            assert not self.sealed
            return
        run = Run.open(self.run)  # finishes or discards an interrupted write, then verifies
        now = {g for g, rel in GROUPS.items() if run.sealed(rel)}
        lost = self.sealed - now
        assert not lost, f"sealed artefacts lost: {sorted(lost)}"
        self.sealed = now
        if self.fitted:
            import glance

            glance.load(self.run)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return morpho_workspace(tmp_path_factory.mktemp("stateful"))


def test_runs_survive_random_commands_and_faults(workspace):
    seed0 = int(os.environ.get("GLANCE_STATEFUL_SEED", "0"))
    n_sequences = max(1, STEPS // PER_SEQUENCE)
    for seed in range(seed0, seed0 + n_sequences):
        rng = np.random.default_rng(seed)
        machine = RunMachine(workspace)
        done: list[str] = ["fit"]
        try:
            assert machine._step("fit") == 0
            machine.check()
            for _ in range(PER_SEQUENCE - 1):
                done.append(machine.random_step(rng))
                machine.check()
        except Exception as exc:
            raise AssertionError(
                f"sequence GLANCE_STATEFUL_SEED={seed} failed after {done}: {exc}"
            ) from exc
        finally:
            machine.teardown()
    print(f"\nstateful run test: {RESULTS}")  # reported in the closing note
    assert RESULTS["steps"] >= n_sequences * PER_SEQUENCE
