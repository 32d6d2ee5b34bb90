"""One command runs a whole experiment: every training approach (arm) x seed, then the comparison.

    python study.py --arms two-stage,end-to-end,warm-start --seeds 0,1,2 --test data/tno --epochs=4
    python study.py --demo                    # 3 arms x 2 seeds on synthetic data, narrow model, minutes on a CPU
    python study.py ... --dry-run             # what would be trained, and how
    python study.py ... --only warm-start:1   # one run (and the stage-1 run it needs), no comparison
    python study.py ... --gpus 0,1,2,3        # independent runs concurrently, one per GPU
    python study.py ... --nproc 4             # each run with torchrun (DDP) on 4 processes
    python study.py ... --slurm               # write a Slurm job array (one task per run) + a comparison job

`--key=value` settings apply to every arm whose args file has that key (args_two_stage.py,
args_end_to_end.py hold the arm-specific values). Run (ARM, K) lives in runs/NAME/ARM/seed_K/ with
the training scripts' usual files inside; two-stage and warm-start of one seed start from the same
stage-1 run, runs/NAME/stage-1/seed_K/, trained once. Re-running the same command skips finished
runs and resumes interrupted ones from their training state, so a study killed at any moment
continues where it stopped. The report lands in runs/NAME/report/.
"""
import argparse
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import compare_training_approaches
from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from cli.entry import DEMO, run_main
from dataio.demo_data import make_demo_dataset
from evaluation.metric_profiles import get_profile
from formats import run_layout
from formats.run_layout import END_TO_END, STAGE1, TWO_STAGE, WARM_START
from training.config import parse_overrides, with_preset
from utils.atomic import atomic_write, check_writable
from utils.errors import CrossFuseError
from utils.settings import defaults

ROOT = Path(__file__).resolve().parent
ARMS = (TWO_STAGE, END_TO_END, WARM_START)
SCRIPTS = {STAGE1: ("train_autoencoder.py", Stage1), TWO_STAGE: ("train_fusion.py", Stage2),
           END_TO_END: ("train_end_to_end.py", EndToEnd), WARM_START: ("train_end_to_end.py", EndToEnd)}
SET_BY_STUDY = ("out_root", "seed", "resume", "demo", "ir_encoder", "vi_encoder", "reference", "init_from",
                "init_ir_encoder", "init_vi_encoder", "init_reference")
# Demo scale: 48 synthetic 64 x 64 pairs, a narrow model, short schedules; 12 test pairs, enough for a
# signed-rank test to survive Holm's correction across the metrics.
DEMO_DATA, DEMO_TEST_PAIRS, DEMO_SIZE = Path("data/demo_study"), 12, 64
DEMO_SETTINGS = {k: v for k, v in DEMO.items() if k not in ("out_root", "test_dir", "dataset")}
DEMO_EPOCHS = {STAGE1: 4, TWO_STAGE: 12, END_TO_END: 12, WARM_START: 12}
DEMO_CURVE_IMAGES = 4


@dataclass
class Run:
    """One training run of the study: an arm (or the shared stage 1) for one seed."""

    arm: str
    seed: int
    folder: Path  # the run's out_root
    settings: dict[str, Any]  # its script's full configuration
    overrides: list[str]  # the --key=value given to its script
    stage1: "Run | None" = None

    @property
    def name(self) -> str:
        return f"{self.arm}:{self.seed}"

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]

    @property
    def work(self) -> int:
        """Epochs to train, stage 1 counting both modalities."""
        return self.epochs * (2 if self.arm == STAGE1 else 1)

    def _jobs(self) -> list[tuple[Path, str]]:
        folder = run_layout.run_dir(self.folder, self.arm)
        if self.arm == STAGE1:
            return [(folder, f"autoencoder_{m}") for m in run_layout.MODALITIES]
        return [(folder, run_layout.LAYOUTS[self.arm].job)]

    def done(self) -> bool:
        """Every final-epoch checkpoint and loss file is there (whoever trained it: here, --gpus or Slurm)."""
        folder = run_layout.run_dir(self.folder, self.arm)
        if self.arm == STAGE1:
            models = [run_layout.autoencoder_file(folder, m, self.epochs) for m in run_layout.MODALITIES]
        else:
            models = [run_layout.fusion_file(folder, self.arm, self.epochs)]
        losses = [run_layout.loss_file(f, job, self.epochs - 1) for f, job in self._jobs()]
        return all(p.is_file() for p in models + losses)

    def started(self) -> bool:
        return any(run_layout.state_file(f, job).is_file() for f, job in self._jobs())

    def status(self) -> str:
        return "done" if self.done() else "resume" if self.started() else "to train"

    def command(self, nproc: int) -> list[str]:
        script = SCRIPTS[self.arm][0]
        launcher = [sys.executable] if nproc <= 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                         f"--nproc_per_node={nproc}"]
        args = [f"--out_root={self.folder}", f"--seed={self.seed}", *self.overrides]
        if self.arm == TWO_STAGE:
            args += [f"--{m}_encoder={self._stage1_file(m)}" for m in run_layout.MODALITIES]
        if self.arm == WARM_START:
            args.append(f"--init_from={self.stage1.folder}")
        if self.started():
            args.append("--resume")
        return [*launcher, script, *args]

    def _stage1_file(self, modality: str) -> Path:
        """Stage 1's final encoder (its expected name while stage 1 is still to be trained)."""
        folder = run_layout.run_dir(self.stage1.folder, STAGE1)
        return run_layout.autoencoder_file(folder, modality, self.stage1.epochs)


# ---------------------------------------------------------------------------------------- planning

def settings_for(arm: str, overrides: list[str], demo: bool) -> tuple[dict[str, Any], list[str]]:
    """An arm's configuration and the --key=value its script gets: the demo's, then the user's, where it has them."""
    config = with_preset(SCRIPTS[arm][1], overrides)
    given = ([f"--dataset={DEMO_DATA / 'train'}", *(f"--{k}={v}" for k, v in DEMO_SETTINGS.items() if k in config),
              f"--epochs={DEMO_EPOCHS[arm]}"] if demo else [])
    given += [o for o in overrides if o[2:].partition("=")[0].replace("-", "_") in config]
    return parse_overrides(config, given), given


def check_overrides(overrides: list[str]) -> None:
    known = {k for _, cls in SCRIPTS.values() for k in defaults(cls)}
    for option in overrides:
        key = option[2:].partition("=")[0].replace("-", "_")
        if not option.startswith("--") or key not in known:
            raise CrossFuseError(f"{option}: not a study option nor a setting of any training script (see --help)")
        if key in SET_BY_STUDY:
            raise CrossFuseError(f"{option}: study.py sets {key} itself for every run")


def plan(study: Path, arms: list[str], seeds: list[int], overrides: list[str], demo: bool) -> list[Run]:
    """Every run in training order: each seed's stage 1 (when an arm needs it) before the arms."""
    runs = []
    for seed in seeds:
        stage1 = None
        if TWO_STAGE in arms or WARM_START in arms:
            stage1 = Run(STAGE1, seed, study / STAGE1 / f"seed_{seed}", *settings_for(STAGE1, overrides, demo))
            runs.append(stage1)
        for arm in arms:
            runs.append(Run(arm, seed, study / arm / f"seed_{seed}", *settings_for(arm, overrides, demo),
                            stage1=stage1 if arm in (TWO_STAGE, WARM_START) else None))
    return runs


def select(runs: list[Run], only: str | None) -> list[Run]:
    """All runs, or the one --only ARM:SEED names plus the stage-1 run it starts from."""
    if only is None:
        return runs
    chosen = [r for r in runs if r.name == only]
    if not chosen:
        raise CrossFuseError(f"--only {only}: not a run of this study ({', '.join(r.name for r in runs)})")
    return [r for r in runs if r is chosen[0].stage1 or r is chosen[0]]


# ---------------------------------------------------------------------------------------- running

@contextmanager
def run_lock(run: Run) -> Iterator[None]:
    """One process per run folder at a time: concurrent array tasks sharing a stage-1 run wait for each other."""
    run.folder.mkdir(parents=True, exist_ok=True)
    with open(run.folder / ".study.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class RunCountdown:
    """Runs done / total and the time left, from the seconds per epoch the finished runs took.

    Counts whole runs of the study; the trainer's Progress is the position inside one run.
    """

    def __init__(self, runs: list[Run]):
        self.total, self.done = len(runs), sum(r.done() for r in runs)
        self.left = sum(r.work for r in runs if not r.done())
        self.seconds, self.epochs = 0.0, 0

    def finished(self, run: Run, seconds: float) -> None:
        self.done += 1
        self.left -= run.work
        self.seconds += seconds
        self.epochs += run.work

    def line(self) -> str:
        if not self.left:
            return f"study: {self.done}/{self.total} runs done, nothing left to train"
        eta = (f"about {_duration(self.left * self.seconds / self.epochs)} left" if self.epochs
               else "time left known after the first run")
        return f"study: {self.done}/{self.total} runs done, {eta}"


def launch(run: Run, nproc: int, gpu: str | None, log: Path | None) -> subprocess.Popen:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if log is None:
        return subprocess.Popen(run.command(nproc), cwd=ROOT, env=env)
    with open(log, "a") as out:  # the child keeps its own copy of the handle
        return subprocess.Popen(run.command(nproc), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def train_all(runs: list[Run], nproc: int, gpus: list[str]) -> None:
    """Train every unfinished run, in order, or concurrently on --gpus (a run starts once its stage 1 is done)."""
    countdown = RunCountdown(runs)
    print(countdown.line(), flush=True)
    pending = [r for r in runs if not r.done()]
    slots: list[str | None] = list(gpus) or [None]
    active: dict[str, tuple[Run, subprocess.Popen, float]] = {}
    try:
        while pending or active:
            free = [s for s in slots if str(s) not in active]
            ready = [r for r in pending if r.stage1 is None or r.stage1.done()]
            for slot, run in zip(free, ready, strict=False):
                pending.remove(run)
                log = run.folder / "train.log" if gpus else None
                print(f"study: training {run.name} in {run.folder}" + (f" on GPU {slot}, log {log}" if gpus else ""),
                      flush=True)
                run.folder.mkdir(parents=True, exist_ok=True)
                active[str(slot)] = (run, launch(run, nproc, slot, log), time.perf_counter())
            if not active:
                raise CrossFuseError(f"{pending[0].name}: its stage-1 run did not finish")
            time.sleep(0.2 if gpus else 0)
            for slot, (run, proc, started) in list(active.items()):
                code = proc.poll() if gpus else proc.wait()
                if code is None:
                    continue
                del active[slot]
                if code != 0 or not run.done():
                    where = f"; see {run.folder / 'train.log'}" if gpus else ""
                    raise CrossFuseError(f"{run.name} failed with exit code {code}{where}; rerun the same study "
                                         "command to resume it")
                countdown.finished(run, time.perf_counter() - started)
                print(countdown.line(), flush=True)
    finally:
        for _, proc, _ in active.values():
            proc.terminate()
            proc.wait()


def train_locked(runs: list[Run], nproc: int) -> None:
    """--only: train the chosen run (and its stage 1) under per-folder locks, so array tasks never collide."""
    countdown = RunCountdown(runs)
    for run in runs:
        with run_lock(run):
            if run.done():
                print(f"study: {run.name} already done", flush=True)
                continue
            print(f"study: training {run.name} in {run.folder}", flush=True)
            started = time.perf_counter()
            code = launch(run, nproc, None, None).wait()
            if code != 0 or not run.done():
                raise CrossFuseError(f"{run.name} failed with exit code {code}; rerun the same command to resume")
            countdown.finished(run, time.perf_counter() - started)
            print(countdown.line(), flush=True)


# ------------------------------------------------------------------------------------------- slurm

def slurm_scripts(study: Path, runs: list[Run], argv: list[str], nproc: int) -> dict[str, str]:
    """A job array (one task per arm run, each `study.py ... --only ARM:SEED`), a comparison job, a submitter."""
    arm_runs = [r.name for r in runs if r.arm != STAGE1]
    base = [a for a in argv if a != "--slurm"]
    command = shlex.join([sys.executable, "study.py", *base])
    logs = study / "slurm"
    sbatch = [f"#SBATCH --job-name=study-{study.name}", f"#SBATCH --gres=gpu:{nproc}", "#SBATCH --cpus-per-task=8",
              "#SBATCH --time=48:00:00"]
    array = ["#!/bin/bash", f"# One task per run of study {study}; tasks sharing a stage-1 run train it once.",
             *sbatch, f"#SBATCH --output={logs}/%x_%A_%a.out", f"#SBATCH --array=0-{len(arm_runs) - 1}",
             "set -euo pipefail", f"cd {shlex.quote(str(ROOT))}", f"RUNS=({' '.join(arm_runs)})",
             f'{command} --only "${{RUNS[$SLURM_ARRAY_TASK_ID]}}"', ""]
    comparison = ["#!/bin/bash", "# The comparison once every run is trained (each run is then skipped as done).",
                  *sbatch, f"#SBATCH --output={logs}/%x_%j_compare.out", "set -euo pipefail",
                  f"cd {shlex.quote(str(ROOT))}", command, ""]
    submit = ["#!/bin/bash", f"# Submit study {study}: the job array, then the comparison after it succeeds.",
              "set -euo pipefail", f"array=$(sbatch --parsable {shlex.quote(str(logs / 'array.sbatch'))})",
              f"sbatch --dependency=afterok:${{array%%;*}} {shlex.quote(str(logs / 'compare.sbatch'))}", ""]
    return {"array.sbatch": "\n".join(array), "compare.sbatch": "\n".join(comparison), "submit.sh": "\n".join(submit)}


def write_slurm(study: Path, runs: list[Run], argv: list[str], nproc: int) -> Path:
    folder = study / "slurm"
    for name, text in slurm_scripts(study, runs, argv, nproc).items():
        path = atomic_write(folder / name, lambda temp, text=text: temp.write_text(text))
        path.chmod(0o755)
    return folder / "submit.sh"


# -------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)} (all)")
    parser.add_argument("--seeds", help="comma-separated seeds (0,1,2; 0,1 with --demo)")
    parser.add_argument("--test", type=Path, help="test pairs (ir/ and vi/ inside) for the comparison")
    parser.add_argument("--name", help="study name: runs go to ROOT/NAME/ (default study; demo with --demo)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="folder of studies (default runs)")
    parser.add_argument("--demo", action="store_true", help="three arms x two seeds at demo scale on synthetic data")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands; train nothing")
    parser.add_argument("--only", metavar="ARM:SEED", help="train this run (and the stage-1 run it needs) only")
    parser.add_argument("--gpus", help="comma-separated GPU ids: independent runs concurrently, one per GPU")
    parser.add_argument("--nproc", type=int, default=1, help="processes per run with torchrun (DDP); default 1")
    parser.add_argument("--slurm", action="store_true", help="write a Slurm job array for the runs and stop")
    parser.add_argument("--no-compare", action="store_true", help="train only; no report")
    parser.add_argument("--curve-images", type=int, help="comparison: test pairs scored per epoch (8; 4 with --demo)")
    parser.add_argument("--baseline", default=TWO_STAGE, help=f"comparison: approach tested against ({TWO_STAGE})")
    parser.add_argument("--profile", default="suite", help="comparison: metric profile (suite, vifb, tang, crossfuse, "
                        "cddfuse; see evaluate.py)")
    args, overrides = parser.parse_known_args(argv)
    args.seeds = args.seeds or ("0,1" if args.demo else "0,1,2")
    args.name = args.name or ("demo" if args.demo else "study")
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms: {', '.join(unknown) or 'none given'}; choose from {', '.join(ARMS)}")
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s})
    except ValueError:
        parser.error(f"--seeds {args.seeds}: comma-separated integers")
    if not args.seeds:
        parser.error("--seeds: at least one")
    if args.gpus and args.nproc > 1:
        parser.error("--gpus runs one run per GPU; --nproc runs each run on several: choose one")
    if args.nproc < 1:
        parser.error("--nproc must be at least 1")
    args.gpus = [g for g in (args.gpus or "").split(",") if g]
    if args.demo:
        args.test = args.test or DEMO_DATA / "test"
        args.curve_images = DEMO_CURVE_IMAGES if args.curve_images is None else args.curve_images
    return args, overrides


def compare_argv(args: argparse.Namespace, study: Path) -> list[str]:
    argv = ["--study", str(study), "--baseline", args.baseline, "--profile", args.profile]
    if args.test:
        argv += ["--test", str(args.test)]
    if args.curve_images is not None:
        argv += ["--curve-images", str(args.curve_images)]
    return argv


def cli(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    study = args.root / args.name
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs `finally`: children stop with the study
    get_profile(args.profile)
    check_overrides(overrides)
    if args.demo:
        make_demo_dataset(DEMO_DATA, n_test=DEMO_TEST_PAIRS, size=DEMO_SIZE)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # demo-sized tensors gain nothing from a second thread
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # this process fuses for the comparison
    runs = plan(study, args.arms, args.seeds, overrides, args.demo)
    if args.baseline not in args.arms:
        raise CrossFuseError(f"--baseline {args.baseline}: not among --arms {','.join(args.arms)}")
    if args.slurm:
        print(f"wrote the Slurm scripts; submit with: bash {write_slurm(study, runs, argv, args.nproc)}")
        return 0
    chosen = select(runs, args.only)
    if args.dry_run:
        for run in chosen:
            print(f"{run.name:<14} {run.status():<8} {shlex.join(run.command(args.nproc))}")
        print(f"{sum(not r.done() for r in chosen)} of {len(chosen)} runs to train; report in {study / 'report'}")
        return 0
    if not args.no_compare and args.only is None:
        check_writable(study / "report", "report folder")
    if args.only:
        train_locked(chosen, args.nproc)
    else:
        train_all(chosen, args.nproc, args.gpus)
    print(f"study: training done in {_duration(time.perf_counter() - started)}", flush=True)
    if args.no_compare or args.only:
        return 0
    code = compare_training_approaches.main(compare_argv(args, study))
    print(f"study: finished in {_duration(time.perf_counter() - started)}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(cli, argv, interrupted="interrupted: rerun the same command to continue where the study stopped")


if __name__ == "__main__":
    sys.exit(main())
