"""The training log line's words beside the loss: the seed's fields, the pace (throughput, time left,
GPU peak memory) and, once per run, the hint that --cache would feed the steps faster.
"""
import sys
import time

import torch

from training.job import Job
from utils.device import peak_memory
from utils.tables import duration


def log_line(job: Job, epoch: int, epochs: int, batch: int, batches: int, lr: float,
             temperature: float | None, terms: dict[str, float], pace: str = "") -> str:
    """The seed's log line (prefix, time, epoch, batch, lr, temperature, loss terms), then the pace."""
    parts = [job.title, time.ctime(), f"Epoch {epoch}/{epochs}", f"Batch {batch}/{batches}", f"lr:{lr:.6f}"]
    if temperature is not None:
        parts.append(f"temp:{temperature:.4f}")
    parts += [f"{k}:{v:.4f}" for k, v in terms.items()]
    return " - ".join(parts + ([pace] if pace else []))


def pace(job: Job, items_per_step: int, step_seconds: float, steps_left: int, device: torch.device) -> str:
    """Throughput and time left at the pace of the last log interval, and on CUDA the epoch's peak GPU
    memory: host clocks and the allocator's own counters, so nothing waits for the device."""
    parts = [f"{items_per_step / step_seconds:.1f} {job.unit}/s", f"{duration(steps_left * step_seconds)} left"]
    if device.type == "cuda":
        parts.append(f"GPU peak {peak_memory(device) / 2**30:.2f} GiB")
    return " - ".join(parts)


def steps_left(job: Job, epoch: int, epochs: int, batch: int, batches: int) -> int:
    """Steps of the run still to train after this one: this epoch's, the later epochs', the later jobs'."""
    return batches - batch + (epochs - epoch - 1) * batches + job.later * epochs * batches


DATA_BOUND = 0.3  # share of the time spent waiting for batches above which --cache is suggested


def suggest_cache(data_share: float, suggested: bool) -> bool:
    """Once per run: when decoding keeps the step waiting (`data_share` of the time), say that --cache would help."""
    if not suggested and data_share > DATA_BOUND:
        print(f"note: {100 * data_share:.0f}% of the time went to waiting for decoded batches; --cache "
              "(decode once into a memory map) or more --workers would feed the steps faster", file=sys.stderr)
        return True
    return suggested
