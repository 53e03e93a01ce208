"""The run directory: one owner for its layout, identity, manifest, lock and every write.

A run directory is the user's result (hours of fitting, the graph, the explanations, the report).
:class:`Run` is the only code that knows its file names; :class:`glance.Glance`, every command,
the report and the explorer read and write it through a :class:`Run`.

Layout (docs/architecture.md)::

    MANIFEST.json      sealed files with their sha256, written last by every command
    run.json           identity: data fingerprint, contexts (in order), classifier hash, seed,
                       config hash, feature layer, glance version
    config.yaml        the resolved configuration
    data.json          where the training data lives, its splits and their fingerprints
    state.json         names, context statistics, classes, geometry, versions
    classifier.safetensors + classifier.json   copy of a reference classifier
    model/             encoder, head, generator, discriminator, mixture (safetensors)
    metrics.jsonl      training log
    metrics.json       evaluation on the run's own held-out split (+ reconstructions.png,
                       samples.png)
    evaluations/NAME/  evaluations on other data, one folder per dataset measured
    graph/             causal graph, SCM, global importances
    atlas/             the concept atlas (atlas.json, traversal strips, class attributes)
    readers/           the context readers evaluate measures generated images with (a cache:
                       reader.json + reader.safetensors, refitted when the data change)
    explanations/      local explanations (any other sub-folder ``glance explain`` is told)
    report.html        the report
    checkpoints/       fit's working area (checkpoints, live log, ``features/``: the training
                       images' classifier features when too large for memory); never sealed
    .lock              the OS lock of writers; ``.txn-*/`` a write in progress

Writes are transactions: new or replaced artefacts are staged in ``.txn-<id>/`` (the run is
untouched), ``TXN.json`` is written (the commit point), the staged files are moved into place
and the manifest is rewritten. A crash before the commit point leaves the previous sealed state
(the next command discards the staging); a crash after it is rolled forward by the next command
that opens the run. So after any command, or a crash anywhere inside one, the run is in its
previous sealed state or in the new one.

Writers hold an exclusive ``flock`` on ``.lock`` for their lifetime (released by the OS when the
process dies: it cannot go stale); readers take a shared one while they load.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from glance._io import (
    FORMAT_VERSION,
    MANIFEST,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    sha256_file,
    to_jsonable,
    verify_manifest,
)
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    ConfigError,
    DataValidationError,
    RunBusyError,
)

__all__ = ["Run", "Transaction", "enclosing_run", "RUN_KIND"]

logger = logging.getLogger(__name__)

#: The marker a run's manifest and identity carry.
RUN_KIND = "glance-run"

# -- layout: the only place that names a run's files -------------------------------------------
IDENTITY = "run.json"
CONFIG = "config.yaml"
DATA = "data.json"
STATE = "state.json"
CLASSIFIER = "classifier.safetensors"
CLASSIFIER_META = "classifier.json"
MODEL = "model"
MODEL_PARTS = ("encoder", "head", "generator", "discriminator", "mixture")
TRAINING_LOG = "metrics.jsonl"
METRICS = "metrics.json"
GRIDS = {"reconstructions": "reconstructions.png", "samples": "samples.png"}
EVALUATIONS = "evaluations"
GRAPH = "graph"
ATLAS = "atlas"
READERS = "readers"
EXPLANATIONS = "explanations"
REPORT = "report.html"
CHECKPOINTS = "checkpoints"
FEATURE_CACHE = "features"
LOCK = ".lock"
_TXN_PREFIX = ".txn-"
_TXN_RECORD = "TXN.json"
#: Names a command may not write over with its own output (``--out RUN/<name>``).
RESERVED = (
    MANIFEST,
    IDENTITY,
    CONFIG,
    DATA,
    STATE,
    CLASSIFIER,
    CLASSIFIER_META,
    MODEL,
    TRAINING_LOG,
    METRICS,
    EVALUATIONS,
    GRAPH,
    ATLAS,
    READERS,
    REPORT,
    CHECKPOINTS,
    *GRIDS.values(),
)
#: Fields of the identity, in the order a mismatch is reported.
IDENTITY_FIELDS = (
    "data_fingerprint",
    "contexts",
    "classifier",
    "layer",
    "seed",
    "config_hash",
    "glance_version",
)
#: How long a command waits for another one's lock before it gives up.
LOCK_WAIT_SECONDS = 5.0


# -- locks ------------------------------------------------------------------------------------


class _LockTable:
    """Process-wide, re-entrant ``flock`` holder: one descriptor per run, counted per mode.

    ``flock`` locks belong to open file descriptions, so two independent opens in one process
    would block each other; nested users (``fit`` saving, the demo's steps) share one here.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, list[Any]] = {}  # key -> [fd, n_exclusive, n_shared]

    def acquire(self, path: Path, exclusive: bool, wait: float) -> None:
        key = str(path.resolve())
        with self._mutex:
            entry = self._held.get(key)
            if entry is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                entry = [fd, 0, 0]
                try:
                    self._flock(fd, path, exclusive, wait)
                except BaseException:
                    os.close(fd)
                    raise
                self._held[key] = entry
            elif exclusive and entry[1] == 0:
                self._flock(entry[0], path, True, wait)  # upgrade a shared hold
            entry[1 if exclusive else 2] += 1
            if exclusive and entry[1] == 1:
                _write_holder(entry[0])

    def release(self, path: Path, exclusive: bool) -> None:
        key = str(path.resolve())
        with self._mutex:
            entry = self._held.get(key)
            if entry is None:
                return
            entry[1 if exclusive else 2] -= 1
            if entry[1] == 0 and entry[2] == 0:
                with contextlib.suppress(OSError):
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
                del self._held[key]
            elif entry[1] == 0 and exclusive:
                with contextlib.suppress(OSError):  # back to the shared hold still in use
                    fcntl.flock(entry[0], fcntl.LOCK_SH)

    def holds(self, path: Path, exclusive: bool = True) -> bool:
        entry = self._held.get(str(path.resolve()))
        return entry is not None and (entry[1] > 0 if exclusive else entry[1] + entry[2] > 0)

    @staticmethod
    def _flock(fd: int, path: Path, exclusive: bool, wait: float) -> None:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, mode)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunBusyError(
                        f"{path.parent}: in use by another glance command ({_read_holder(path)}); "
                        "wait for it to finish, or use another run directory"
                    ) from None
                time.sleep(0.1)


def _write_holder(fd: int) -> None:
    """Record who holds the lock (pid and command line), for the busy message of others."""
    text = f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n".encode()
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


_LOCKS = _LockTable()


# -- transactions -------------------------------------------------------------------------------


class Transaction:
    """New or replaced artefacts of a run, staged until :meth:`commit` seals them at once.

    Obtain one from :meth:`Run.transaction`; write each artefact to the path :meth:`file` or
    :meth:`directory` returns (or with the ``write_*`` helpers). Nothing in the run changes until
    the commit.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.dir = Path(tempfile.mkdtemp(prefix=_TXN_PREFIX, dir=run.path))
        self._staged = self.dir / "staged"
        self._staged.mkdir()
        self._puts: list[str] = []
        self._removes: list[str] = []

    def _register(self, rel: str) -> Path:
        rel = _check_rel(rel)
        if any(rel == p or rel.startswith(p + "/") for p in self._puts):
            raise ValueError(f"{rel!r} is already staged in this transaction")
        self._puts.append(rel)
        return self._staged / rel

    def file(self, rel: str) -> Path:
        """The staging path of the file ``rel`` (its folder exists); it replaces ``RUN/rel``."""
        path = self._register(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def directory(self, rel: str) -> Path:
        """A staging folder for ``rel``: on commit it replaces ``RUN/rel`` as a whole."""
        path = self._register(rel)
        path.mkdir(parents=True)
        return path

    def remove(self, rel: str) -> None:
        """Delete ``RUN/rel`` (a file or folder) on commit."""
        self._removes.append(_check_rel(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        """Stage ``obj`` as JSON (sorted keys) at ``rel``."""
        atomic_write_json(self.file(rel), obj)

    def write_text(self, rel: str, text: str) -> None:
        """Stage ``text`` (UTF-8) at ``rel``."""
        atomic_write_text(self.file(rel), text)

    def copy(self, rel: str, source: str | os.PathLike[str]) -> None:
        """Stage a copy of the file ``source`` at ``rel``."""
        shutil.copyfile(source, self.file(rel))

    def commit(self) -> dict:
        """Seal the staged artefacts into the run; return the new manifest."""
        # Under the lock the manifest on disk is the truth: another Run object of the same
        # directory (another part of this process) may have sealed files since ours was read.
        self.run._manifest = None
        files = dict(self.run.manifest().get("files", {}))
        for rel in [*self._puts, *self._removes]:
            for key in [k for k in files if k == rel or k.startswith(rel + "/")]:
                del files[key]
        for rel in self._puts:
            staged = self._staged / rel
            if staged.is_dir():
                for p in sorted(staged.rglob("*")):
                    if p.is_file() and not p.name.startswith("."):
                        files[p.relative_to(self._staged).as_posix()] = sha256_file(p)
            elif staged.is_file():
                files[rel] = sha256_file(staged)
            else:
                raise CheckpointError(f"{self.run.path}: staged artefact {rel!r} was not written")
        manifest = _manifest(files)
        record = {"puts": self._puts, "removes": self._removes, "manifest": manifest}
        atomic_write_json(self.dir / _TXN_RECORD, record)  # the commit point
        _apply(self.run.path, self.dir)
        self.run._manifest = manifest
        return manifest

    def abort(self) -> None:
        """Discard everything staged; the run is untouched."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_rel(rel: str) -> str:
    rel = Path(rel).as_posix()
    if not rel or rel.startswith("/") or ".." in Path(rel).parts or rel in (".", MANIFEST):
        raise ConfigError(f"not a path inside the run for an artefact: {rel!r}")
    return rel


def _manifest(files: Mapping[str, str]) -> dict:
    from glance._version import __version__

    return {
        "format_version": FORMAT_VERSION,
        "glance_version": __version__,
        "kind": RUN_KIND,
        "files": dict(sorted(files.items())),
    }


def _apply(root: Path, txn_dir: Path) -> None:
    """Move a committed transaction's staged files into place and write its manifest.

    Idempotent: a staged file already moved is skipped, so a crash anywhere in here is finished
    by running it again (roll forward).
    """
    record = json.loads((txn_dir / _TXN_RECORD).read_text(encoding="utf-8"))
    staged, old = txn_dir / "staged", txn_dir / "old"
    for rel in record["puts"]:
        src, dst = staged / rel, root / rel
        if not (src.exists() or src.is_symlink()):
            continue  # moved by an earlier, interrupted apply
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            aside = old / rel
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst, aside)
        os.replace(src, dst)  # atomic for a file, a rename into a free name for a folder
    for rel in record["removes"]:
        dst = root / rel
        if dst.exists() or dst.is_symlink():
            aside = old / rel
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst, aside)
    fsync_dir(root)
    atomic_write_json(root / MANIFEST, record["manifest"])
    shutil.rmtree(txn_dir, ignore_errors=True)


# -- the run ----------------------------------------------------------------------------------


class Run:
    """A glance run directory.

    Use :meth:`create` for a new run, :meth:`open` for an existing one; both verify and repair
    (finish or discard an interrupted write) before anything is read. ``with run.writing():``
    holds the exclusive lock a writing command needs for its lifetime.

    Parameters
    ----------
    path
        The run directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._manifest: dict | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def is_run(cls, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a run directory glance made (its manifest or identity says so)."""
        path = Path(path)
        for name in (MANIFEST, IDENTITY):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json.loads((path / name).read_text(encoding="utf-8")).get("kind") == RUN_KIND:
                    return True
        return False

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> Run:
        """Open an existing run: finish or discard an interrupted write, then verify it.

        Raises
        ------
        CheckpointError
            ``path`` is not a directory or not a glance run.
        CheckpointCorruptError
            A sealed file is missing or changed.
        RunBusyError
            Another command holds the run's lock.
        """
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"run directory not found: {run.path}")
        if not (run.path / MANIFEST).is_file() and not (run.path / IDENTITY).is_file():
            raise CheckpointCorruptError(
                f"incomplete artefact {run.path}: {MANIFEST} missing (not a glance run, or a fit "
                "that never started)"
            )
        run.recover()
        with run.reading():
            if verify:
                run.verify()
            else:
                run.manifest()
        return run

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        identity: Mapping[str, Any],
        *,
        config_text: str | None = None,
    ) -> Run:
        """Make a new run at ``path`` (absent or an empty folder) with its identity sealed.

        A command that goes on writing should hold the lock from before this call:
        ``with Run(path).writing(): Run.create(path, ...)``, so that no second command can
        create the same run meanwhile. Raises :class:`CheckpointError` for a non-empty folder
        or a file.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise CheckpointError(f"run directory {run.path} exists and is not a directory")
        if run.path.is_dir() and any(p.name != LOCK for p in run.path.iterdir()):
            raise CheckpointError(
                f"run directory {run.path} is not empty; pass --resume (resume=True) to continue "
                "it or choose a new --out"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        run._manifest = _manifest({})
        with run.writing(), run.transaction() as txn:
            txn.write_json(IDENTITY, {"kind": RUN_KIND, **identity})
            if config_text is not None:
                txn.write_text(CONFIG, config_text)
        return run

    def recover(self) -> None:
        """Finish committed writes that were interrupted and discard uncommitted ones.

        Safe on a folder that is not (yet) a run, e.g. one whose creation was killed: only
        glance's own staging folders are touched there.
        """
        pending = [p for p in self.path.glob(_TXN_PREFIX + "*") if (p / "staged").is_dir()]
        stale_tmp = (
            [p for p in self.path.glob(".*.tmp") if p.is_file()] if self.is_run(self.path) else []
        )
        if not pending and not stale_tmp:
            return
        with self.writing():
            for txn in pending:
                if (txn / _TXN_RECORD).is_file():
                    logger.warning("%s: finishing an interrupted write (%s)", self.path, txn.name)
                    _apply(self.path, txn)
                else:
                    logger.info("%s: discarding an unfinished write (%s)", self.path, txn.name)
                    shutil.rmtree(txn, ignore_errors=True)
            for tmp in stale_tmp:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self._manifest = None

    def check_writable(self) -> None:
        """Prove the run can be written (before long work, not after it); raises the OSError
        (read-only file system, no permission, disk full) naming the run."""
        check_writable(self.path)

    # -- locks --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, wait: float | None = None) -> Iterator[Run]:
        """Hold the run's exclusive lock (re-entrant within a process); wait at most ``wait``
        seconds (default :data:`LOCK_WAIT_SECONDS`) for another command to release it."""
        _LOCKS.acquire(self.path / LOCK, True, LOCK_WAIT_SECONDS if wait is None else wait)
        self._manifest = None  # re-read: others may have sealed files before we got the lock
        try:
            yield self
        finally:
            _LOCKS.release(self.path / LOCK, True)

    @contextlib.contextmanager
    def reading(self, wait: float | None = None) -> Iterator[Run]:
        """Hold a shared lock while reading (no writer can change the run meanwhile).

        On a read-only file system, where no lock file can be made, the run is read unlocked.
        """
        try:
            _LOCKS.acquire(self.path / LOCK, False, LOCK_WAIT_SECONDS if wait is None else wait)
            self._manifest = None
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            yield self
            return
        try:
            yield self
        finally:
            _LOCKS.release(self.path / LOCK, False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage artefacts and seal them on success; discard them on any error."""
        if not _LOCKS.holds(self.path / LOCK):
            raise RuntimeError(f"{self.path}: a transaction needs `with run.writing():`")
        txn = Transaction(self)
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except BaseException:
            if not (txn.dir / _TXN_RECORD).is_file():
                txn.abort()  # not committed: the previous sealed state stands
            raise

    # -- manifest ------------------------------------------------------------------------------

    def manifest(self) -> dict:
        """The sealed manifest (read once; empty for a run whose first write is in progress)."""
        if self._manifest is None:
            path = self.path / MANIFEST
            if not path.is_file():
                self._manifest = _manifest({})
            else:
                try:
                    self._manifest = json.loads(path.read_text(encoding="utf-8"))
                    if not isinstance(self._manifest.get("files"), dict):
                        raise ValueError("no 'files' mapping")
                except (OSError, ValueError, AttributeError) as exc:
                    raise CheckpointCorruptError(f"{path}: unreadable manifest ({exc})") from None
        return self._manifest

    def verify(self) -> dict:
        """Check every sealed file's sha256 (and nested manifests); return the manifest."""
        self._manifest = verify_manifest(self.path)
        files = self._manifest["files"]
        for rel in [k for k in files if k.endswith("/" + MANIFEST)]:
            # a nested manifest (model/) must agree with the run's: a file re-sealed in one but
            # not the other was changed behind glance's back
            inner_dir = rel[: -len(MANIFEST) - 1]
            try:
                inner = json.loads((self.path / rel).read_text(encoding="utf-8"))["files"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointCorruptError(f"{self.path / rel}: unreadable ({exc})") from None
            for name, digest in inner.items():
                if files.get(f"{inner_dir}/{name}") != digest:
                    raise CheckpointCorruptError(
                        f"{self.path / inner_dir / name}: sha256 mismatch against {rel}"
                    )
        return self._manifest

    def sealed(self, rel: str) -> bool:
        """Whether ``rel`` (a file, or a folder with sealed files) is part of the sealed run."""
        files = self.manifest()["files"]
        return rel in files or any(k.startswith(rel.rstrip("/") + "/") for k in files)

    def file(self, rel: str) -> Path | None:
        """``RUN/rel`` if that file is sealed; ``None`` if absent. An unsealed file that exists
        (copied in by hand) is ignored with a warning: glance uses only what it sealed."""
        if rel in self.manifest()["files"]:
            return self.path / rel
        if (self.path / rel).exists():
            logger.warning(
                "%s is not sealed in %s; ignored (glance uses only the artefacts it wrote)",
                self.path / rel,
                MANIFEST,
            )
        return None

    def read_json(self, rel: str) -> Any:
        """The sealed JSON file ``rel``, or ``None`` if it is not part of the run."""
        path = self.file(rel)
        if path is None:
            return None
        try:
            return json.loads(
                path.read_text(encoding="utf-8"), parse_constant=lambda name: float("nan")
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointCorruptError(f"{path}: not valid JSON ({exc})") from None

    def read_text(self, rel: str) -> str | None:
        """The sealed text file ``rel``, or ``None``."""
        path = self.file(rel)
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointCorruptError(f"{path}: not UTF-8 text ({exc})") from None

    def sealed_under(self, rel: str) -> list[str]:
        """Sealed files below the folder ``rel`` (run-relative paths, sorted)."""
        prefix = rel.rstrip("/") + "/"
        return sorted(k for k in self.manifest()["files"] if k.startswith(prefix))

    # -- identity -----------------------------------------------------------------------------

    @property
    def identity(self) -> dict | None:
        """``run.json`` (what makes this run this run), ``None`` for a run made before it."""
        return self.read_json(IDENTITY)

    def check_identity(
        self, identity: Mapping[str, Any], config: Mapping[str, Any] | None = None
    ) -> None:
        """Refuse to continue this run with anything that would make it a different one.

        ``config`` (the resolved configuration as a nested mapping) lets a configuration
        mismatch name the keys that differ from the run's ``config.yaml``.

        Raises
        ------
        CheckpointIncompatibleError
            Naming the first field of :data:`IDENTITY_FIELDS` that differs.
        """
        mine = self.identity
        if mine is None:
            raise CheckpointIncompatibleError(
                f"{self.path} records no identity ({IDENTITY}); it was made by an older glance "
                "and cannot be resumed. Start a new run."
            )
        for key in IDENTITY_FIELDS:
            a, b = mine.get(key), to_jsonable(identity.get(key))
            if a != b:
                detail = self._config_diff(config) if key == "config_hash" and config else ""
                raise CheckpointIncompatibleError(
                    f"{self.path} is a different run: its {key} is {_short(a)}, now "
                    f"{_short(b)}{detail}. Resume only with the same data, contexts, classifier, "
                    "layer, seed, configuration and glance version, or start a new run."
                )

    def _config_diff(self, config: Mapping[str, Any]) -> str:
        import yaml

        try:
            old = yaml.safe_load(self.read_text(CONFIG) or "") or {}
        except yaml.YAMLError:
            return ""
        diffs = [
            f"{sec}.{k}: {old.get(sec, {}).get(k)!r} -> {v!r}"
            for sec, vals in config.items()
            if isinstance(vals, Mapping) and isinstance(old.get(sec, {}), Mapping)
            for k, v in vals.items()
            if old.get(sec, {}).get(k) != v
        ]
        return f" ({'; '.join(diffs[:8])})" if diffs else ""

    # -- working area (fit) ---------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        """Where fit keeps its checkpoints (working area, not sealed)."""
        return self.path / CHECKPOINTS

    @property
    def feature_cache_dir(self) -> Path:
        """Where fit caches the training images' classifier features when they are too large
        for memory (working area; a finished fit removes it)."""
        return self.path / CHECKPOINTS / FEATURE_CACHE

    @property
    def live_training_log(self) -> Path:
        """The training log while fit runs (sealed as ``metrics.jsonl`` when it ends)."""
        return self.path / CHECKPOINTS / TRAINING_LOG

    # -- the fitted model ------------------------------------------------------------------------

    def save_fitted(
        self,
        *,
        state: Mapping[str, Any],
        modules: Mapping[str, Mapping[str, Any]],
        config_text: str,
        data_record: Mapping[str, Any] | None,
        save_classifier: Callable[[Path], None] | None,
        training_log: str | os.PathLike[str] | None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        """Seal a fitted estimator: model weights, state, config, data record, classifier copy,
        training log (and identity, for a copy saved to a new run). One transaction."""
        from glance._io import save_safetensors

        with self.writing(), self.transaction() as txn:
            if identity is not None:
                txn.write_json(IDENTITY, {"kind": RUN_KIND, **identity})
            model = txn.directory(MODEL)
            for name in MODEL_PARTS:
                save_safetensors(model / f"{name}.safetensors", modules[name])
            txn.write_json(STATE, state)
            txn.write_text(CONFIG, config_text)
            if data_record is not None:
                txn.write_json(DATA, data_record)
            if save_classifier is not None:
                save_classifier(txn.file(CLASSIFIER))
                txn.file(CLASSIFIER_META)  # written next to the weights by save_classifier
            if training_log is not None and Path(training_log).is_file():
                txn.copy(TRAINING_LOG, training_log)

    def load_fitted(self) -> dict[str, Any]:
        """``state`` (dict), ``config`` (the YAML's text), ``modules`` (name → tensors),
        ``classifier`` (path of the copy or ``None``), ``history`` (training log records)."""
        from glance._io import load_safetensors

        state = self.read_json(STATE)
        config = self.read_text(CONFIG)
        if state is None or config is None:
            raise CheckpointCorruptError(
                f"{self.path} holds no fitted model ({STATE} or {CONFIG} missing): a fit that "
                "did not finish; continue it with --resume"
            )
        if int(state.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path} needs a newer glance (format {state['format_version']})"
            )
        modules = {}
        for name in MODEL_PARTS:
            path = self.file(f"{MODEL}/{name}.safetensors")
            if path is None:
                raise CheckpointCorruptError(f"{self.path}: {MODEL}/{name}.safetensors missing")
            modules[name] = load_safetensors(path)
        history = []
        log = self.read_text(TRAINING_LOG)
        for line in (log or "").splitlines():
            with contextlib.suppress(ValueError):
                history.append(json.loads(line))
        return {
            "state": state,
            "config": config,
            "modules": modules,
            "classifier": self.file(CLASSIFIER),
            "history": history,
        }

    # -- data ---------------------------------------------------------------------------------

    def data_record(self) -> dict | None:
        """``data.json``: the training data's path, splits and fingerprints (or ``None``)."""
        return self.read_json(DATA)

    def dataset(
        self,
        role: str,
        data: str | os.PathLike[str] | None = None,
        split: str | None = None,
    ) -> Any:
        """The dataset a command works on: ``data`` if given, else the run's own.

        ``role`` is ``"train"`` or ``"test"`` (the held-out split). The run's own data is
        checked against the fingerprint recorded at fit: data regenerated or edited at the same
        path is refused (pass it explicitly with ``--data`` to use it as it is now).
        """
        from glance.data import load_dataset, test_split
        from glance.training.checkpoint import dataset_fingerprint

        if data is not None:
            if split is None and role == "test":
                split = test_split(data)
            return load_dataset(data, split)
        record = self.data_record()
        if not isinstance(record, Mapping) or not isinstance(record.get("data"), str):
            raise DataValidationError(
                f"{self.path}: no record of its training data ({DATA}); pass --data DIR"
            )
        split = split or record.get(f"{role}_split")
        ds = load_dataset(record["data"], split)
        expected = (record.get("fingerprints") or {}).get(str(split))
        if expected is not None and dataset_fingerprint(ds) != expected:
            raise DataValidationError(
                f"{record['data']} (split {split}) changed since {self.path} was fitted "
                f"(fingerprint {dataset_fingerprint(ds)}, recorded {expected}); pass --data "
                f"{record['data']} to use it as it is now"
            )
        return ds

    def is_own_data(self, dataset: Any) -> bool:
        """Whether ``dataset`` is the run's own held-out data: its recorded held-out split,
        unchanged. A run fitted on data in memory records none; then any data is its own."""
        from glance.training.checkpoint import dataset_fingerprint

        record = self.data_record() or {}
        fp = (record.get("fingerprints") or {}).get(str(record.get("test_split")))
        return fp is None or dataset_fingerprint(dataset) == fp

    # -- artefacts ----------------------------------------------------------------------------

    def evaluation_folder(self, own: bool, name: str) -> str:
        """Run-relative prefix of an evaluation's files: ``""`` for the run's own (held-out
        split), ``"evaluations/<name>/"`` for other data."""
        return "" if own else f"{EVALUATIONS}/{_safe_name(name)}/"

    def save_evaluation(
        self,
        metrics: Mapping[str, Any],
        *,
        folder: str,
        write_grids: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> None:
        """Seal evaluation figures (and grids) under the prefix :meth:`evaluation_folder` gave.

        The run's own evaluation is ``metrics.json`` and the grids at the top; an evaluation on
        other data goes to ``evaluations/<name>/`` and never replaces it.
        """
        with self.writing(), self.transaction() as txn:
            if folder:
                d = txn.directory(folder.rstrip("/"))
                atomic_write_json(d / METRICS, metrics)
                grids = {k: d / v for k, v in GRIDS.items()}
            else:
                txn.write_json(METRICS, metrics)
                grids = {k: txn.file(v) for k, v in GRIDS.items()} if write_grids else {}
                if not write_grids:  # grids of an earlier evaluation would not match
                    for rel in GRIDS.values():
                        if self.sealed(rel):
                            txn.remove(rel)
            if write_grids is not None:
                write_grids(grids)

    def evaluations(self) -> dict[str, dict]:
        """Evaluations on other data: ``{name: metrics}``."""
        out = {}
        for rel in self.sealed_under(EVALUATIONS):
            parts = rel.split("/")
            if len(parts) == 3 and parts[2] == METRICS:
                out[parts[1]] = self.read_json(rel)
        return out

    def write_dir(self, rel: str, writer: Callable[[Path], Any]) -> Any:
        """Replace the folder ``RUN/rel`` by what ``writer(staging_folder)`` writes, sealed."""
        rel = _check_rel(rel)
        top = rel.split("/")[0]
        if top in RESERVED and top not in (GRAPH, ATLAS, READERS, EXPLANATIONS):
            raise ConfigError(f"{self.path / rel}: {top!r} is reserved for glance's own files")
        with self.writing(), self.transaction() as txn:
            return writer(txn.directory(rel))

    def write_file(self, rel: str, writer: Callable[[Path], Any]) -> Any:
        """Replace the file ``RUN/rel`` by what ``writer(staging_path)`` writes, sealed."""
        with self.writing(), self.transaction() as txn:
            return writer(txn.file(rel))

    @property
    def graph_dir(self) -> str:
        """Run-relative folder of the causal graph."""
        return GRAPH

    @property
    def atlas_dir(self) -> str:
        """Run-relative folder of the concept atlas."""
        return ATLAS

    @property
    def readers_dir(self) -> str:
        """Run-relative folder of the context readers (:mod:`glance.metrics.readers`)."""
        return READERS

    @property
    def explanations_dir(self) -> str:
        """Run-relative default folder of local explanations."""
        return EXPLANATIONS

    @property
    def report_file(self) -> str:
        """Run-relative path of the report."""
        return REPORT

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` relative to the run if it lies inside it, else ``None``."""
        root, p = self.path.resolve(), Path(path).resolve()
        if p == root or root not in p.parents:
            return None
        return p.relative_to(root).as_posix()


def enclosing_run(path: str | os.PathLike[str]) -> Run | None:
    """The run that ``path`` lies inside (at any depth), or ``None``."""
    p = Path(path).resolve()
    for parent in p.parents:
        if Run.is_run(parent):
            return Run(parent)
    return None


def check_writable(directory: str | os.PathLike[str]) -> None:
    """Make ``directory`` (and parents) and prove a file can be written there, before long work.

    Raises the ``OSError`` (read-only file system, permission, disk full) naming the folder.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".glance-probe-", dir=d)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(d)) from None
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(d)) from None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "data"
    return cleaned[:80]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
