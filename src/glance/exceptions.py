"""Typed exceptions of glance.

Every error a user can cause derives from :class:`GlanceError`; the CLI catches it, prints one
line and exits with the error's ``exit_code`` (no traceback unless ``--debug``):

====  ============================================================================================
2     bad input: data, configuration, shapes, names, options out of range
3     a run, checkpoint or weights file that is missing, damaged, incompatible or unsafe
4     training diverged (non-finite values through the rollback budget)
5     the machine refused: disk full, read-only file system, no permission, port in use, no such
      device, a run in use by another command
130   interrupted (Ctrl-C); 143 stopped by SIGTERM (a fit saves a checkpoint first)
====  ============================================================================================
"""

from __future__ import annotations

__all__ = [
    "GlanceError",
    "DataValidationError",
    "ConfigError",
    "ShapeError",
    "UnknownNameError",
    "NotFittedError",
    "IncompatibleClassifierError",
    "CheckpointError",
    "CheckpointCorruptError",
    "CheckpointIncompatibleError",
    "UnsafeCheckpointError",
    "TrainingDivergedError",
    "DiscoveryError",
    "ResourceError",
    "RunBusyError",
]


class GlanceError(Exception):
    """Root of every error glance raises on purpose."""

    exit_code: int = 2


class DataValidationError(GlanceError, ValueError):
    """Bad input data: names the file, the field/row/index and what was expected."""

    exit_code = 2


class ConfigError(GlanceError, ValueError):
    """An unknown configuration key, a wrong type or an out-of-range value."""

    exit_code = 2


class ShapeError(GlanceError, ValueError):
    """A tensor has the wrong shape at a public boundary."""

    exit_code = 2


class UnknownNameError(GlanceError, ValueError, KeyError):
    """A registry lookup with a name that is not registered."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotFittedError(GlanceError, ValueError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``."""

    exit_code = 2


class IncompatibleClassifierError(GlanceError, TypeError):
    """The classifier cannot be explained as given (no feature map, wrong channels, ...)."""

    exit_code = 2


class CheckpointError(GlanceError):
    """A checkpoint or artefact could not be written or read."""

    exit_code = 3


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file is truncated, tampered with or not in the expected format."""


class CheckpointIncompatibleError(CheckpointError):
    """A checkpoint belongs to another architecture, config or newer format version."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the file would need unrestricted unpickling, which glance refuses."""


class TrainingDivergedError(GlanceError, RuntimeError):
    """Training produced non-finite values more often than the rollback budget allows."""

    exit_code = 4


class DiscoveryError(GlanceError, ValueError):
    """Causal discovery cannot run on the given data (constant or collinear columns, ...)."""

    exit_code = 2


class ResourceError(GlanceError):
    """The machine refused what glance needs: space, write access, a port, a device, a lock."""

    exit_code = 5


class RunBusyError(ResourceError):
    """Another glance command holds the run directory's lock."""
