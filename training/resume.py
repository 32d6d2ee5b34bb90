"""The training-state checkpoint a run killed at any moment resumes from, step for step: the weights,
the optimiser, where the run is (Progress) and every RNG, with the settings a resume may not change.
"""
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from formats import run_layout
from formats.checkpoint import STATE_FORMAT
from training.job import Job
from training.settings import fixed_on_resume, upgrade
from utils.atomic import atomic_save
from utils.errors import CrossFuseError


def state_path(job: Job) -> Path:
    return run_layout.state_file(job.out_dir, job.name)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """Where one run is in its training (epoch, batch) and what it logged so far: what a training-state
    checkpoint holds besides the weights."""

    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # batches of it already done
    epoch_seconds: float = 0.0  # time spent in it so far (across resumes)
    history: dict[str, list[float]] = field(default_factory=dict)  # per step
    epoch_time: list[float] = field(default_factory=list)
    peak_memory: list[int] = field(default_factory=list)
    threads: int = 0  # torch CPU threads the run started with; a resumed run keeps them (same rounding)


def save_state(job: Job, optimizer: torch.optim.Optimizer, progress: Progress, record: dict[str, Any]) -> None:
    atomic_save({"format": STATE_FORMAT, "job": job.name, "model": job.model.state_dict(),
                 "optimizer": optimizer.state_dict(), "progress": vars(progress), "rng": rng_state(),
                 "config": record}, state_path(job))


# Settings a resumed run must share with the interrupted one (training.settings marks them `fixed`):
# they decide which batch comes next, or what the saved weights mean; so does the number of processes.
# Any other change (lr, epochs, logging...) is allowed with a warning.
RESUME_FIXED = fixed_on_resume() | {"world_size"}


def load_state(job: Job, optimizer: torch.optim.Optimizer, record: dict[str, Any]) -> Progress:
    """Restore a training state, refusing settings that would break the step-exact resume."""
    path = state_path(job)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CrossFuseError(f"{path}: cannot read the training state ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("job") != job.name:
        raise CrossFuseError(f"{path}: not a training state of {job.name}")
    saved = upgrade(state["config"])
    changed = {k: (saved.get(k), record.get(k)) for k in saved.keys() | record.keys()
               if k not in ("resume", "demo") and saved.get(k) != record.get(k)}
    fixed = [f"{k}={old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()) if k in RESUME_FIXED]
    if fixed:
        raise CrossFuseError(f"{path}: cannot resume with changed {', '.join(fixed)} (they decide the data order "
                             "or the model); resume with the saved settings or start afresh without --resume")
    for k, (old, new) in sorted(changed.items()):
        print(f"warning: resuming {job.name} with {k}={new!r} (was {old!r})", file=sys.stderr)
    job.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"])
