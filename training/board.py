"""Optional TensorBoard logging of a training run (`--tensorboard`): every loss term, the lr and the
temperature per step, and the preview grid per epoch, under the run folder's tensorboard/<job>/.

The scalars are written from the values the loop has already read from the device (training.trainer's
Pending.read), so logging adds no host synchronisation. The `tensorboard` package is optional; without
it --tensorboard stops before any work with one line saying how to get it.
"""
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import CrossFuseError

MISSING = ("--tensorboard needs the tensorboard package, which is not installed here: pip install tensorboard "
           "(or train without --tensorboard)")


def writer_class() -> type:
    """torch's SummaryWriter; the suite's one-line error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard imports the tensorboard package
        raise CrossFuseError(MISSING) from None
    return SummaryWriter


def board_dir(out_dir: Path, job: str) -> Path:
    return out_dir / "tensorboard" / job


class Board:
    """One job's event files; a resumed run hides the steps after its checkpoint that the killed run logged."""

    def __init__(self, folder: Path, steps_done: int):
        # steps count from 1: those after the `steps_done` a resumed run starts from are the killed run's
        self.writer: Any = writer_class()(log_dir=str(folder), purge_step=steps_done + 1 if steps_done else None)
        self.logged = steps_done

    def steps(self, history: dict[str, list[float]]) -> None:
        """The steps of `history` (the run's per-step record) not logged yet: loss terms, lr, temperature."""
        total = len(history.get("total", ()))
        for i in range(self.logged, total):
            for key, values in history.items():
                if key != "epoch":
                    self.writer.add_scalar(key if key in ("lr", "temperature") else f"loss/{key}", values[i], i + 1)
        self.logged = total

    def preview(self, grid: np.ndarray, epoch: int) -> None:
        """The epoch's preview grid (uint8, rows of inputs and output), flushed with the epoch's scalars."""
        self.writer.add_image("preview", grid, epoch, dataformats="HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
