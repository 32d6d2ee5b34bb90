"""A study's runs: every arm x seed (and the stage-1 runs two-stage and warm-start share), their
settings, state on disk, and the command that trains each."""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats import run_layout
from formats.run_layout import STUDY_STAGE1
from training.presets import STUDY_DEMO, overrides
from training.settings import parse_overrides, set_by_study, with_preset
from training.stages import ARMS, STAGE1, STAGE2, WARM_START, Stage
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]  # where the training scripts are


@dataclass
class StudyRun:
    """One training run of the study: an arm (or the shared stage 1) for one seed."""

    arm: str  # an ARMS name, or STUDY_STAGE1
    seed: int
    folder: Path  # the run's out_root
    settings: dict[str, Any]  # its script's full configuration
    overrides: list[str]  # the --key=value given to its script
    stage1: "StudyRun | None" = None

    @property
    def stage(self) -> Stage:
        return STAGE1 if self.arm == STUDY_STAGE1 else ARMS[self.arm]

    @property
    def name(self) -> str:
        return f"{self.arm}:{self.seed}"

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]

    @property
    def work(self) -> int:
        """Epochs to train, stage 1 counting both modalities."""
        return self.epochs * len(self.stage.jobs())

    def done(self) -> bool:
        """Every final-epoch checkpoint and loss file is there (whoever trained it: here, --gpus or Slurm)."""
        folder = self.stage.dir(self.folder)
        if self.stage is STAGE1:
            models = [run_layout.autoencoder_file(folder, m, self.epochs) for m in run_layout.MODALITIES]
        else:
            models = [self.stage.fusion_path(folder, self.epochs)]
        losses = [run_layout.loss_file(folder, job, self.epochs - 1) for job in self.stage.jobs()]
        return all(p.is_file() for p in models + losses)

    def started(self) -> bool:
        return any(run_layout.state_file(self.stage.dir(self.folder), job).is_file() for job in self.stage.jobs())

    def status(self) -> str:
        return "done" if self.done() else "resume" if self.started() else "to train"

    def command(self, nproc: int) -> list[str]:
        launcher = [sys.executable] if nproc <= 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                         f"--nproc_per_node={nproc}"]
        args = [f"--out_root={self.folder}", f"--seed={self.seed}", *self.overrides]
        if self.stage is STAGE2:
            args += [f"--{m}_encoder={self._stage1_file(m)}" for m in run_layout.MODALITIES]
        if self.stage is WARM_START:
            args.append(f"--init_from={self.stage1.folder}")
        if self.started():
            args.append("--resume")
        return [*launcher, str(ROOT / self.stage.script), *args]

    def _stage1_file(self, modality: str) -> Path:
        """Stage 1's final encoder (its expected name while stage 1 is still to be trained)."""
        return run_layout.autoencoder_file(STAGE1.dir(self.stage1.folder), modality, self.stage1.epochs)


def settings_for(stage: Stage, options: list[str], demo: bool) -> tuple[dict[str, Any], list[str]]:
    """A stage's configuration and the --key=value its script gets: the demo's, then the user's, where it has them."""
    config = with_preset(stage.args, options)
    given = [f"--{k}={v}" for k, v in overrides(STUDY_DEMO, stage.args).items()] if demo else []
    given += [o for o in options if o[2:].partition("=")[0].replace("-", "_") in config]
    return parse_overrides(config, given), given


def check_overrides(options: list[str]) -> None:
    known = {k for stage in (STAGE1, *ARMS.values()) for k in with_preset(stage.args, [])}
    for option in options:
        key = option[2:].partition("=")[0].replace("-", "_")
        if not option.startswith("--") or key not in known:
            raise CrossFuseError(f"{option}: not a study option nor a setting of any training script (see --help)")
        if key in set_by_study():
            raise CrossFuseError(f"{option}: study.py sets {key} itself for every run")


def plan(study: Path, arms: list[str], seeds: list[int], options: list[str], demo: bool) -> list[StudyRun]:
    """Every run in training order: each seed's stage 1 (when an arm needs it) before the arms."""
    runs = []
    for seed in seeds:
        stage1 = None
        if any(ARMS[a].needs_stage1 for a in arms):
            stage1 = StudyRun(STUDY_STAGE1, seed, run_layout.study_run(study, STUDY_STAGE1, seed),
                              *settings_for(STAGE1, options, demo))
            runs.append(stage1)
        for arm in arms:
            runs.append(StudyRun(arm, seed, run_layout.study_run(study, arm, seed),
                                 *settings_for(ARMS[arm], options, demo),
                                 stage1=stage1 if ARMS[arm].needs_stage1 else None))
    return runs


def select(runs: list[StudyRun], only: str | None) -> list[StudyRun]:
    """All runs, or the one --only ARM:SEED names plus the stage-1 run it starts from."""
    if only is None:
        return runs
    chosen = [r for r in runs if r.name == only]
    if not chosen:
        raise CrossFuseError(f"--only {only}: not a run of this study ({', '.join(r.name for r in runs)})")
    return [r for r in runs if r is chosen[0].stage1 or r is chosen[0]]
