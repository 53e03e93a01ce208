"""The ``machine`` record every benchmark's JSON carries (one place for what is recorded)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def machine_info() -> dict[str, Any]:
    """Platform, cores, torch build and threads, Python, and the load average at the end."""
    import torch

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_at_end": list(os.getloadavg()),
        "python": sys.version.split()[0],
    }
