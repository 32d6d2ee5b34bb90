"""What a run records beside its weights: the settings in force and their history over every start and
resume (config_<name>.json, config_history_<name>.json), and each epoch's loss file.
"""
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from formats import run_layout
from training.job import Job
from training.resume import Progress
from training.settings import save_config
from utils.atomic import atomic_write
from utils.provenance import code_version, machine


def record_config(job: Job, record: dict[str, Any], progress: Progress, device: torch.device) -> None:
    """config_<name>.json: the settings now in force; config_history_<name>.json: every start and resume,
    each with its settings, the code's git commit ("no git" in a copy of the tree) and the machine.

    A history that a resume finds missing or damaged is set aside (renamed *.damaged, nothing deleted)
    and started anew from this resume, with a warning: it records the run, it does not steer it.
    """
    history_path = run_layout.config_history_file(job.out_dir, job.name)
    history = read_history(history_path) if progress.batch or progress.epoch else []
    history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epoch": progress.epoch + 1,
                    "batch": progress.batch, "config": record, "code": code_version(), "machine": machine(device)})
    save_config(record, run_layout.config_file(job.out_dir, job.name))
    atomic_write(history_path, lambda temp: temp.write_text(json.dumps(history, indent=2) + "\n"))


def read_history(path: Path) -> list:
    try:
        history = json.loads(path.read_text())
        if isinstance(history, list):
            return history
    except (OSError, ValueError):
        pass
    if path.exists():
        path.replace(path.with_name(path.name + ".damaged"))
    print(f"warning: {path} is missing or damaged; it starts again with this resume"
          + (f" (the old one is kept as {path.name}.damaged)" if path.with_name(path.name + ".damaged").exists()
             else ""), file=sys.stderr)
    return []


def write_losses(job: Job, progress: Progress, epoch: int, record: dict[str, Any], memory_kind: str) -> Path:
    """loss/loss_data_<name>_e<K>.mat: per-step total (`loss_data`, as the reference), terms, lr, temperature."""
    return run_layout.write_losses(run_layout.loss_file(job.out_dir, job.name, epoch), progress.history,
                                   progress.epoch_time, progress.peak_memory, memory_kind, record)
