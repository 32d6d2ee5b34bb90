"""The run layout: which file lands where, and reading it back; one home for writer and reader.

An output root (`models/`, or one run folder of a study) holds a folder per training stage with the
reference's file names inside (training/stages.py names each stage's folder and files):

    autoencoder/auto_encoder_epoch_N_{ir,vi}.model   loss/loss_data_autoencoder_{ir,vi}_eK.mat   (stage 1)
    transfuse/fusetrans_epoch_N.model                loss/loss_data_trans_eK.mat                 (stage 2)
    end_to_end/end_to_end_fusion_epoch_N.model       loss/loss_data_end_to_end_eK.mat            (end-to-end)
    end_to_end_warm/  the same names as end_to_end                                               (warm start)

beside training_state_<job>.pt, config_<job>.json and config_history_<job>.json. N counts epochs from 1;
the loss file of epoch N is `_e{N-1}` (the reference's naming) and holds every step so far.

A study (study.py) puts run (ARM, K) in STUDY/ARM/seed_K/ and the stage-1 run that two-stage and
warm-start of seed K share in STUDY/stage-1/seed_K/; its report goes to STUDY/report/.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from utils.atomic import atomic_write
from utils.errors import CrossFuseError

MODALITIES = ("ir", "vi")
STUDY_STAGE1 = "stage-1"  # a study's folder of stage-1 runs
STUDY_REPORT = "report"


def study_run(study: Path, arm: str, seed: int) -> Path:
    """The out_root of one run of a study (arm STUDY_STAGE1 for the shared stage-1 runs)."""
    return study / arm / f"seed_{seed}"


def encoder_file(folder: Path, modality: str, epoch: int) -> Path:
    """An end-to-end (or warm-start) run's encoder of one modality."""
    return folder / f"end_to_end_{modality}_encoder_epoch_{epoch}.model"


def autoencoder_file(folder: Path, modality: str, epoch: int) -> Path:
    return folder / f"auto_encoder_epoch_{epoch}_{modality}.model"


def loss_file(folder: Path, job: str, epoch: int) -> Path:
    """The loss file written after 0-based `epoch` (cumulative: it holds every step so far)."""
    return folder / "loss" / f"loss_data_{job}_e{epoch}.mat"


def state_file(folder: Path, job: str) -> Path:
    return folder / f"training_state_{job}.pt"


def config_file(folder: Path, job: str) -> Path:
    """The settings in force for a job (rewritten at every start and resume)."""
    return folder / f"config_{job}.json"


def config_history_file(folder: Path, job: str) -> Path:
    """Every start and resume of a job, with the settings of each."""
    return folder / f"config_history_{job}.json"


def by_epoch(folder: Path, pattern: str) -> dict[int, Path]:
    """Files of `folder` whose name fully matches `pattern` (a regex with one number group), by number."""
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name))}


def epoch_regex(template: str) -> str:
    """A file-name template with {epoch} as a regex whose one group is the epoch."""
    return re.escape(template).replace(re.escape("{epoch}"), r"(\d+)")


def encoders(folder: Path, modality: str) -> dict[int, Path]:
    """An end-to-end (or warm-start) run's saved encoders of one modality, by epoch."""
    return by_epoch(folder, rf"end_to_end_{modality}_encoder_epoch_(\d+)\.model")


def autoencoders(folder: Path, modality: str) -> dict[int, Path]:
    return by_epoch(folder, rf"auto_encoder_epoch_(\d+)_{modality}\.model")


def loss_files(folder: Path, job: str) -> dict[int, Path]:
    """A run's loss files by 0-based epoch."""
    return by_epoch(folder / "loss", rf"loss_data_{re.escape(job)}_e(\d+)\.mat")


# ------------------------------------------------------------------------------------- loss files

@dataclass
class LossLog:
    """One .mat loss file: per-step series (all of length `steps`), per-epoch cost and the run config."""

    path: Path
    series: dict[str, np.ndarray]
    epoch_time: np.ndarray
    peak_memory: np.ndarray
    memory_kind: str
    config: dict[str, Any]

    @property
    def loss(self) -> np.ndarray:
        return self.series["loss_data"]

    @property
    def terms(self) -> list[str]:
        return [k for k in self.series if k.startswith("loss_") and k != "loss_data"]


def write_losses(path: Path, history: dict[str, list[float]], epoch_time: list[float], peak_memory: list[int],
                 memory_kind: str, config: dict[str, Any]) -> Path:
    """Per-step total as `loss_data` (as the reference), `loss_<term>`, lr, temperature, epoch; per-epoch cost."""
    data = {"loss_data": np.array(history["total"], dtype=np.float64)[None]}
    for key, values in history.items():
        if key != "total":
            data[key if key in ("lr", "temperature", "epoch") else f"loss_{key}"] = np.array(values, np.float64)[None]
    data.update(epoch_time=np.array(epoch_time)[None], peak_memory=np.array(peak_memory)[None],
                memory_kind=memory_kind, config=json.dumps(config))
    return atomic_write(path, lambda temp: scipy.io.savemat(temp, data))


def _text(value: np.ndarray) -> str:
    """A string variable as loadmat returns it (a 1-element array of str)."""
    return str(np.atleast_1d(value)[0]) if np.size(value) else ""


def read_losses(path: Path, hint: str) -> LossLog:
    """Load and check one loss file; `hint` tells the user what to run when it is unusable."""
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many types for truncated or foreign files
        raise CrossFuseError(f"{path}: not a readable .mat loss file ({type(e).__name__}); {hint}") from None
    loss = np.asarray(data.get("loss_data", []), dtype=np.float64).ravel()
    if loss.size == 0:
        raise CrossFuseError(f"{path}: holds no loss values (training stopped before its first step?); {hint}")
    series = {}
    for name, value in data.items():
        if name == "loss_data" or name.startswith("loss_") or name in ("lr", "temperature", "epoch"):
            values = np.asarray(value, dtype=np.float64).ravel()
            if values.size != loss.size:
                raise CrossFuseError(f"{path}: {name} has {values.size} values but loss_data has {loss.size} "
                                     f"(a damaged or mixed loss file); {hint}")
            series[name] = values
    try:
        config = json.loads(_text(data["config"])) if "config" in data else {}
    except ValueError:
        raise CrossFuseError(f"{path}: its config is not valid JSON; {hint}") from None
    return LossLog(path, series, np.asarray(data.get("epoch_time", []), dtype=np.float64).ravel(),
                   np.asarray(data.get("peak_memory", []), dtype=np.float64).ravel(),
                   _text(data.get("memory_kind", np.array([]))) or "unknown", config)


def latest_losses(folder: Path, job: str, hint: str) -> LossLog:
    """The last loss file of a run folder (cumulative, so it holds every step)."""
    files = loss_files(folder, job)
    if not files:
        raise CrossFuseError(f"{folder / 'loss'}: no loss_data_{job}_eK.mat loss file; {hint}")
    return read_losses(files[max(files)], hint)
