"""Training a study's runs: one after another, concurrently one per GPU (--gpus), or one chosen run under
folder locks (--only, a Slurm array task); with a countdown of runs done and time left."""
import os
import subprocess
import time
from pathlib import Path

from studies.plan import StudyRun
from utils.atomic import hold_lock
from utils.errors import CrossFuseError
from utils.tables import duration


class RunCountdown:
    """Runs done / total and the time left, from the seconds per epoch the finished runs took.

    Counts whole runs of the study; the trainer's Progress is the position inside one run.
    """

    def __init__(self, runs: list[StudyRun]):
        self.total, self.done = len(runs), sum(r.done() for r in runs)
        self.left = sum(r.work for r in runs if not r.done())
        self.seconds, self.epochs = 0.0, 0

    def finished(self, run: StudyRun, seconds: float) -> None:
        self.done += 1
        self.left -= run.work
        self.seconds += seconds
        self.epochs += run.work

    def line(self) -> str:
        if not self.left:
            return f"study: {self.done}/{self.total} runs done, nothing left to train"
        eta = (f"about {duration(self.left * self.seconds / self.epochs)} left" if self.epochs
               else "time left known after the first run")
        return f"study: {self.done}/{self.total} runs done, {eta}"


def launch(run: StudyRun, nproc: int, gpu: str | None, log: Path | None) -> subprocess.Popen:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if log is None:
        return subprocess.Popen(run.command(nproc), env=env)
    with open(log, "a") as out:  # the child keeps its own copy of the handle
        return subprocess.Popen(run.command(nproc), env=env, stdout=out, stderr=subprocess.STDOUT)


def train_all(runs: list[StudyRun], nproc: int, gpus: list[str]) -> None:
    """Train every unfinished run, in order, or concurrently on --gpus (a run starts once its stage 1 is done)."""
    countdown = RunCountdown(runs)
    print(countdown.line(), flush=True)
    pending = [r for r in runs if not r.done()]
    slots: list[str | None] = list(gpus) or [None]
    active: dict[str, tuple[StudyRun, subprocess.Popen, float]] = {}
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
                    raise CrossFuseError(failure(run, code, gpus))
                countdown.finished(run, time.perf_counter() - started)
                print(countdown.line(), flush=True)
    finally:
        for _, proc, _ in active.values():
            proc.terminate()
            proc.wait()


def train_locked(runs: list[StudyRun], nproc: int) -> None:
    """--only: train the chosen run (and its stage 1) under per-folder locks, so array tasks never collide."""
    countdown = RunCountdown(runs)
    for run in runs:
        # one process per run folder: concurrent array tasks sharing a stage-1 run wait for each other
        with hold_lock(run.folder / ".study.lock", wait=True, what="training this run"):
            if run.done():
                print(f"study: {run.name} already done", flush=True)
                continue
            print(f"study: training {run.name} in {run.folder}", flush=True)
            started = time.perf_counter()
            code = launch(run, nproc, None, None).wait()
            if code != 0 or not run.done():
                raise CrossFuseError(failure(run, code, []))
            countdown.finished(run, time.perf_counter() - started)
            print(countdown.line(), flush=True)


def failure(run: StudyRun, code: int, gpus: list[str]) -> str:
    """Why a run counts as failed, and what to do about it."""
    where = f"; see {run.folder / 'train.log'}" if gpus else ""
    if code == 0:
        return (f"{run.name} exited without error but its final files are not in {run.stage.dir(run.folder)}{where}; "
                "rerun the same study command to resume it")
    if code == 2:
        return f"{run.name} stopped on the error above{where}; fix it, then rerun the same study command"
    return f"{run.name} failed with exit code {code}{where}; rerun the same study command to resume it"
