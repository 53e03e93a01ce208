"""Data parallelism through ``torchrun`` + :class:`~torch.nn.parallel.DistributedDataParallel`.

glance does no home-made distribution: ``torchrun --nproc_per_node=K -m glance.cli.main fit ...``
starts K processes; each builds the same models from the same seed, wraps the trained task modules
in DDP (gloo on CPU, NCCL on GPU), takes its share of every global batch and lets DDP average the
gradients. Only rank 0 writes files; every check that can fail mid-training (a non-finite loss)
is decided collectively, so all ranks roll back or stop together and none waits forever in a
collective. If a rank dies, torchrun tears the others down; a collective timeout bounds the rest.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DistContext"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process (``world_size == 1``: no distribution)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu", timeout_s: float = 120.0) -> DistContext:
        """Join the process group that ``torchrun`` describes in the environment, if any.

        With ``WORLD_SIZE`` unset or 1 this returns a single-process context and touches nothing.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = torch.device(device)
        if world <= 1:
            return cls(0, 1, device)
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
        logger.info("distributed: rank %d of %d on %s", rank, dist.get_world_size(), device)
        return cls(rank, dist.get_world_size(), device)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped in DDP when distributed, else unchanged."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Element-wise OR of boolean ``flags`` over all ranks (every rank gets the same)."""
        if not self.enabled:
            return flags
        import torch.distributed as dist

        buf = flags.to(torch.int32).to(self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        return buf.cpu().bool()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        buf = torch.tensor([value], dtype=torch.int64)
        if self.device.type == "cuda":
            buf = buf.to(self.device)
        dist.broadcast(buf, src=0)
        return int(buf.item())

    def barrier(self) -> None:
        """Wait for every rank (no-op without distribution)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def check_divisible(self, batch: int, name: str) -> None:
        """Raise :class:`ConfigError` unless the global ``batch`` splits evenly over the ranks."""
        from glance.exceptions import ConfigError

        if batch % self.world_size:
            raise ConfigError(
                f"train.{name}={batch} must be divisible by the number of processes "
                f"({self.world_size}) so every rank gets an equal share"
            )
