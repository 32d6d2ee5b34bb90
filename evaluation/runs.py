"""Finding trained runs for the comparison: a study's ARM/seed_K folders, any run folder, or the paper's
released model; each with its checkpoints, loss history and, where its encoders came from stage 1, the
stage-1 loss files (whose time counts in its training cost)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats import run_layout
from formats.checkpoint import find_reference, load_crossfuse, read_checkpoint
from formats.run_layout import STUDY_REPORT, STUDY_STAGE1, LossLog
from net.config import ModelConfig
from net.model import CrossFuse
from training.settings import upgrade
from training.stages import ARMS, ENCODER_WIDTHS, END_TO_END, FUSION_STAGES, MODALITIES, STAGE1, STAGE2, Stage
from utils.errors import CrossFuseError

REFERENCE = "reference"


@dataclass
class Run:
    """One trained model of an approach: its folder, checkpoints by epoch, the chosen one and its history."""

    approach: str
    label: str
    folder: Path
    checkpoints: dict[int, Path]
    epoch: int
    log: LossLog | None  # None for the paper's released model
    config: ModelConfig
    stage: Stage = STAGE2  # whose files it holds
    encoder_files: tuple[Path, ...] = ()  # only for reference-layout fusion files
    stage1: dict[str, LossLog] = field(default_factory=dict)
    from_stage1: bool = False  # its encoders came from stage 1 (two-stage, warm start)
    cache: bool = True

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints[self.epoch]

    def load(self, epoch: int | None = None) -> CrossFuse:
        return load_crossfuse(self.checkpoints[epoch or self.epoch], *self.encoder_files)


def job_folder(path: Path) -> tuple[Path, Stage] | None:
    """The training-job folder at or directly under `path` and the stage whose files it holds."""
    found = {folder: stage for folder in (path, *(s.dir(path) for s in FUSION_STAGES))
             for stage in (STAGE2, END_TO_END) if stage.checkpoints(folder)}
    if len(found) > 1:
        raise CrossFuseError(f"{path}: holds several runs ({', '.join(map(str, found))}); name one")
    return next(iter(found.items()), None)


def check_config(cfg: ModelConfig, config: dict[str, Any], checkpoint: Path, log_path: Path, hint: str,
                 keys: tuple[str, ...] | None = None) -> None:
    """Fail when a checkpoint was built with other widths than the run that wrote the loss file."""
    model = cfg.to_dict()
    differ = [f"{k} {config[k]!r} vs {model[k]!r}" for k in (keys or model) if k in config and config[k] != model[k]]
    if differ:
        raise CrossFuseError(f"{checkpoint} was built with another configuration than {log_path} says "
                             f"({', '.join(differ)}): files of different runs are mixed; {hint}")


def stage1_logs(folder: Path, meta: dict[str, Any], stage: Stage, cfg: ModelConfig, checkpoint: Path) -> dict:
    """Stage-1 loss files of a run that started from stage-1 encoders: where its checkpoint says they came
    from, else the `autoencoder/` beside a two-stage run."""
    sources = meta.get("encoders") or meta.get("encoders_from") or []
    candidates = [Path(sources[0]).parent] if sources else []
    if sources and folder.parent.name.startswith("seed_"):  # a study moved or read from another folder
        candidates.append(STAGE1.dir(folder.parents[2] / STUDY_STAGE1 / folder.parent.name))
    if stage is STAGE2:
        candidates.append(STAGE1.dir(folder.parent))
    logs = {}
    for stage1 in candidates:
        for modality, job in zip(MODALITIES, STAGE1.jobs(), strict=True):
            if modality not in logs and run_layout.loss_files(stage1, job):
                log = run_layout.latest_losses(stage1, job, "run train_autoencoder.py again")
                check_config(cfg, log.config, checkpoint, log.path, "train again on these encoders", ENCODER_WIDTHS)
                logs[modality] = log
    return logs


def load_run(approach: str, label: str, folder: Path, epoch: int | None) -> Run:
    """Checkpoints and loss history of one run, with a message saying what to run when absent."""
    stage = ARMS.get(approach, END_TO_END)
    hint = stage.hint
    if not folder.is_dir():
        raise CrossFuseError(f"no {approach} run in {folder}: {hint}")
    found = job_folder(folder)
    folder, stage = found if found else (folder, stage)
    checkpoints = stage.checkpoints(folder)
    if not checkpoints:
        stem = stage.fusion_file.format(epoch="N")
        raise CrossFuseError(f"no {approach} checkpoint ({stem}) in {folder}: {hint}")
    if epoch is None:
        epoch = max(checkpoints)
    elif epoch not in checkpoints:
        raise CrossFuseError(f"{folder}: no {approach} checkpoint for epoch {epoch} "
                             f"(epochs saved: {', '.join(map(str, sorted(checkpoints)))})")
    log = run_layout.latest_losses(folder, stage.job, hint)
    log.config = upgrade(log.config)
    ckpt = read_checkpoint(checkpoints[epoch])
    if ckpt.kind != "crossfuse":
        raise CrossFuseError(f"{ckpt.path}: expected a fusion checkpoint of this suite, found {ckpt.kind}")
    check_config(ckpt.config, log.config, ckpt.path, log.path, hint)
    return Run(approach, label, folder, checkpoints, epoch, log, ckpt.config, stage,
               stage1=stage1_logs(folder, ckpt.meta, stage, ckpt.config, ckpt.path),
               from_stage1=stage is STAGE2 or bool(ckpt.meta.get("encoders_from")))


def runs_in(approach: str, path: Path, epoch: int | None) -> list[Run]:
    """One run per seed_*/ folder of a study arm, or the single run at `path`."""
    seeds = sorted((p for p in path.glob("seed_*") if p.is_dir()), key=lambda p: (len(p.name), p.name))
    if seeds:
        return [load_run(approach, p.name, p, epoch) for p in seeds]
    return [load_run(approach, path.name, path, epoch)]


def study_arms(study: Path) -> dict[str, Path]:
    """The arm folders of a study.py study, known arms first."""
    if not study.is_dir():
        raise CrossFuseError(f"--study {study}: folder not found")
    arms = {p.name: p for p in study.iterdir() if p.is_dir() and any(p.glob("seed_*"))
            and p.name not in (STUDY_STAGE1, STUDY_REPORT)}
    if not arms:
        raise CrossFuseError(f"--study {study}: no ARM/seed_K run folders (run study.py first)")
    known = list(ARMS)
    return {a: arms[a] for a in sorted(arms, key=lambda a: (a not in known, known.index(a) if a in known else 0, a))}


def reference_run(folder: Path) -> Run:
    """The paper's released model as one more approach (no history; nothing cached in its folder)."""
    ir, vi, fusion = find_reference(folder)
    cfg = load_crossfuse(fusion, ir, vi).cfg
    return Run(REFERENCE, "released", folder, {0: fusion}, 0, None, cfg, encoder_files=(ir, vi), cache=False)
