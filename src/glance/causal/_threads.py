"""Thread limits for the small dense algebra of discovery and SCMs.

On a busy machine, multi-threaded BLAS and OpenMP pools spin instead of working: a 10,000 x 30
correlation matrix took 1 s instead of 5 ms and a 2,000-row gradient-boosting fit 20 s instead of
0.3 s (measured on 2 shared cores). Our matrices are small, so one thread is the fast choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Limit BLAS and OpenMP pools to one thread for the duration of the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
