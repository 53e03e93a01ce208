"""Driver for the kill tests: a tiny fit whose checkpoint save at ``STEP`` pauses forever.

Usage: ``python kill_driver.py RUN MARKER STEP [resume]``. Before committing the checkpoint of
``STEP`` it writes ``MARKER`` and sleeps, so the parent can SIGKILL it mid-save.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

from glance._io import save_safetensors  # noqa: E402
from glance.estimator import Glance  # noqa: E402
from glance.training.loop import Hooks  # noqa: E402
from helpers import TinyCNN, make_dataset  # noqa: E402

CONFIG = {
    "train": {
        "encoder_steps": 4,
        "generator_steps": 4,
        "checkpoint_every": 2,
        "encoder_batch": 16,
        "generator_batch": 8,
        "keep_checkpoints": 10,
    }
}


def main() -> None:
    torch.set_num_threads(1)
    os.environ["GLANCE_THREADS"] = "1"  # glance's own choice too: bit-identical runs
    run, marker, stall = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    resume = len(sys.argv) > 4
    torch.manual_seed(0)
    clf, data = TinyCNN().eval(), make_dataset(48)

    def before_commit(tmp: Path) -> None:
        if not resume and tmp.name.startswith(f"ckpt-{stall:06d}"):
            marker.write_text("saving")
            time.sleep(600)

    est = Glance(clf, contexts=["thickness"], preset="tiny", config=CONFIG, quiet=True)
    est._hooks = Hooks(on_before_commit=before_commit)
    est.fit(data, out=run, resume=resume)
    save_safetensors(
        Path(run).parent / f"params-{Path(run).name}.safetensors",
        {f"g.{k}": v for k, v in est.generator_.state_dict().items()},
    )


if __name__ == "__main__":
    main()
