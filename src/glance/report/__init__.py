"""Self-contained HTML report of a glance run (a pure function of its saved artefacts).

>>> from glance.report import write_report      # doctest: +SKIP
>>> write_report("runs/demo")                   # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from glance.report._artifacts import RunArtifacts, load_run_artifacts
from glance.report._html import render_report, write_report
from glance.report._thresholds import FIDELITY_FLOOR, THRESHOLDS, Threshold, grade

__all__ = [
    "render_report",
    "write_report",
    "load_run_artifacts",
    "RunArtifacts",
    "THRESHOLDS",
    "Threshold",
    "FIDELITY_FLOOR",
    "grade",
]
