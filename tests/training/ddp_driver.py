"""Driver for the distributed tests: one fit of the tiny preset, parameters dumped per rank.

Usage: ``python ddp_driver.py RUN_DIR DUMP_DIR [NAN_RANK NAN_STEP]`` (directly or via torchrun).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from glance._io import save_safetensors  # noqa: E402
from glance.estimator import Glance  # noqa: E402
from glance.training.loop import Hooks, Trainer  # noqa: E402
from helpers import TinyCNN, make_dataset  # noqa: E402

# Terms that are statistics of the whole batch (covariance penalty, minibatch-stddev groups,
# per-rank counts of known contexts) or per-rank noise differ between k shards and one batch by
# design, as BatchNorm does under DDP; they are switched off so the test can compare exactly the
# data-parallel mechanics (sharding, gradient averaging, shared randomness) with one process.
CONFIG = {
    "train": {
        "encoder_steps": 4,
        "generator_steps": 4,
        "encoder_batch": 16,
        "generator_batch": 8,
        "checkpoint_every": 2,
    },
    "loss": {"covariance": 0.0, "disentangle": 0.0},
    "generator": {"use_noise": False, "mbstd_group": 1},
}


def main() -> None:
    torch.set_num_threads(1)
    os.environ["GLANCE_THREADS"] = "1"  # glance's own choice too: bit-identical runs
    out, dump = sys.argv[1], sys.argv[2]
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    clf = TinyCNN().eval()
    data = make_dataset(64)
    data.attributes[np.isnan(data.attributes)] = 0.6  # every context known on every rank
    est = Glance(
        clf,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config=CONFIG,
        random_state=0,
        quiet=True,
    )
    if len(sys.argv) > 4:
        nan_rank, nan_step = int(sys.argv[3]), int(sys.argv[4])
        state = {"step": -1, "fired": False}
        original = Trainer.train_step

        def tracking(self, step):
            state["step"] = step
            return original(self, step)

        Trainer.train_step = tracking

        def on_loss(name, value):
            if rank == nan_rank and state["step"] == nan_step and not state["fired"]:
                state["fired"] = True
                return value * float("nan")
            return value

        est._hooks = Hooks(on_loss=on_loss)
    est.fit(data, out=out)
    tensors = {
        f"{name}.{k}": v
        for name in ("encoder", "head", "generator", "discriminator")
        for k, v in getattr(est, f"{name}_").state_dict().items()
    }
    os.makedirs(dump, exist_ok=True)
    save_safetensors(os.path.join(dump, f"params-rank{rank}.safetensors"), tensors)
    print(f"rank {rank} done rollbacks", flush=True)


if __name__ == "__main__":
    main()
