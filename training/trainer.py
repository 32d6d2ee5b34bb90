"""The one training loop behind train_autoencoder.py, train_fusion.py and train_end_to_end.py.

A script describes what differs (a Job: model, forward, loss, what to save; training/stages.py builds
them); this module does the rest the same way for all three: Adam with the reference's weight decay,
the lr schedule, AMP, torch.compile, DDP, logging, per-epoch `.model`/`.mat`/PNG outputs, and an
atomic training-state checkpoint that a run killed at any moment resumes from, step for step. What the
loop keeps beside it lives in modules named for it: resume.py (the training state), run_records.py (the
config history and loss files), preview.py (the preview grid), run_log.py (the log's pace, the cache hint).
"""
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dataio.datasets import make_loader
from dataio.images import write_gray
from formats import run_layout
from training.board import Board, board_dir
from training.job import Batch, Job
from training.optim import lr_at, make_optimizer, step_if
from training.preview import preview_grid
from training.resume import Progress, load_state, save_state, state_path
from training.run_log import log_line, pace, steps_left, suggest_cache
from training.run_records import record_config, write_losses
from training.runtime import Runtime, crash_if_asked
from utils.args_base import Settings
from utils.atomic import check_writable, hold_lock
from utils.cores import loader_workers, pick_threads, process_cores
from utils.device import autocast, peak_memory, to_device
from utils.errors import CrossFuseError


def train(job: Job, config: Settings, runtime: Runtime) -> None:
    """Train job.model for config.epochs epochs, resuming from its training state when asked.

    The main process holds a lock on the job's folder while it trains, so two runs started into one
    folder never write over each other: the second stops with one line.
    """
    if runtime.main:
        check_writable(job.out_dir)
    lock = hold_lock(job.out_dir / f".{job.name}.lock", wait=False, what=f"training {job.name}")
    with lock if runtime.main else contextlib.nullcontext():
        run_epochs(job, config, runtime)


def earlier_run(job: Job) -> list[Path]:
    """What an earlier run of this job left in its folder: training state, loss files, models, test fusions."""
    state = [state_path(job)] if state_path(job).is_file() else []
    return state + sorted(run_layout.loss_files(job.out_dir, job.name).values()) + job.outputs()


def begin(job: Job, config: Settings, optimizer: torch.optim.Optimizer, record: dict[str, Any],
          main: bool) -> Progress:
    """Where training starts: the saved state with --resume; else afresh, in a folder that holds no earlier
    run of this job unless --overwrite says to delete it first (so no run is replaced or mixed unawares)."""
    if config.resume and state_path(job).is_file():
        progress = load_state(job, optimizer, record)
        if main:
            print(f"resuming {job.name} at epoch {progress.epoch + 1}, batch {progress.batch}")
        return progress
    earlier = earlier_run(job)
    if earlier and not config.overwrite:
        how = ("--resume continues it" if state_path(job).is_file() else
               "it has no training state to resume from")
        raise CrossFuseError(f"{job.out_dir}: holds an earlier {job.name} run ({len(earlier)} files, such as "
                             f"{earlier[0].name}); {how}, --overwrite deletes it and starts over, or give another "
                             "out_root")
    if earlier and main:
        own = [run_layout.config_file(job.out_dir, job.name), run_layout.config_history_file(job.out_dir, job.name),
               *(job.out_dir / "preview").glob(f"{job.name}_epoch_*.png")]
        own += [*board_dir(job.out_dir, job.name).glob("events.out.tfevents.*")]
        for path in earlier + own:
            path.unlink(missing_ok=True)
        print(f"note: --overwrite: deleted the earlier {job.name} run in {job.out_dir} ({len(earlier)} files)")
    elif config.resume and main:
        print(f"warning: no training state at {state_path(job)}; starting {job.name} from scratch")
    return Progress()


def run_epochs(job: Job, config: Settings, runtime: Runtime) -> None:
    device, main = runtime.device, runtime.main
    record = {**config.as_dict(), "world_size": runtime.world}  # what the state, config and loss files keep
    job.model.to(device)
    optimizer = make_optimizer(job.model, config)
    progress = begin(job, config, optimizer, record, main)
    if device.type == "cpu":
        progress.threads = progress.threads or pick_threads()
        torch.set_num_threads(progress.threads)
        if main:
            print(f"{job.name}: {progress.threads} CPU threads for {process_cores()} cores (the others are busy)"
                  if progress.threads < process_cores() else f"{job.name}: {progress.threads} CPU threads")
    if main:
        record_config(job, record, progress, device)
    model = job.model
    if config.compile:
        model = torch.compile(model)
    if runtime.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    board = None
    if main and config.tensorboard:
        board = Board(board_dir(job.out_dir, job.name), len(progress.history.get("total", ())))
    try:
        train_epochs(job, config, runtime, model, optimizer, progress, record, board)
    finally:
        if board is not None:
            board.close()
    if runtime.distributed:
        dist.barrier()


def train_epochs(job: Job, config: Settings, runtime: Runtime, model: nn.Module, optimizer: torch.optim.Optimizer,
                 progress: Progress, record: dict[str, Any], board: Board | None) -> None:
    """The epochs still to train: steps, log lines, checkpoints and each epoch's outputs."""
    device, main, epochs = runtime.device, runtime.main, config.epochs
    good = torch.ones((), device=device)  # 0 from the first non-finite loss on: every later update is skipped
    suggested = False
    while progress.epoch < epochs:
        epoch = progress.epoch
        loader = make_loader(job.dataset, config.batch, True, loader_workers(config.workers), config.seed, epoch,
                             (runtime.rank, runtime.world), skip_batches=progress.batch)
        batches = loader.sampler.batches
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter() - progress.epoch_seconds
        bar = tqdm(loader, total=batches, initial=progress.batch, disable=None if main else True,
                   desc=f"{job.name} {epoch + 1}/{epochs}", unit="batch", leave=False)
        pending = Pending()
        for batch in bar:
            pending.waited += time.perf_counter() - pending.step_end
            batch = to_device(batch if isinstance(batch, list) else [batch], device)
            lr = lr_at(config, epoch, progress.batch, batches)
            for group in optimizer.param_groups:
                group["lr"] = lr
            terms = train_step(job, model, optimizer, batch, config.amp, runtime, good)
            progress.batch += 1
            temperature = job.temperature(job.model) if job.temperature else None
            pending.add(terms, temperature, good, (lr, epoch + 1, progress.batch))
            steps = len(progress.history.get("total", ())) + len(pending.rows)
            log_now = progress.batch % config.log_every == 0 or progress.batch == batches
            checkpoint_now = steps % config.checkpoint_every == 0 and progress.batch < batches
            if log_now or checkpoint_now:  # the host reads the device only here
                values = pending.read(job, progress)
                if board is not None:
                    board.steps(progress.history)
                if main and log_now:
                    left = steps_left(job, epoch, epochs, progress.batch, batches)
                    tqdm.write(log_line(job, epoch + 1, epochs, progress.batch, batches, lr,
                                        progress.history.get("temperature", [None])[-1], values,
                                        pace(job, config.batch * runtime.world, pending.step_seconds, left, device)))
                    if not config.cache:
                        suggested = suggest_cache(pending.data_share, suggested)
                bar.set_postfix(loss=f"{values['total']:.4g}")
            progress.epoch_seconds = time.perf_counter() - started
            if main and checkpoint_now:
                save_state(job, optimizer, progress, record)
            crash_if_asked(job.name, steps)
            pending.step_end = time.perf_counter()
        bar.close()
        progress.epoch_time.append(time.perf_counter() - started)
        progress.peak_memory.append(peak_memory(device))
        progress.epoch, progress.batch, progress.epoch_seconds = epoch + 1, 0, 0.0
        if main:
            finish_epoch(job, optimizer, progress, record, epoch, device, board)


def train_step(job: Job, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, amp: bool,
               runtime: Runtime, good: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One optimiser step, applied only while every loss so far was finite, without reading the device.

    The loss is computed outside autocast, in the batch's precision (float64 in the trajectory tests). `good`
    (a device scalar, 1 or 0) is multiplied by this step's finite flag, agreed across ranks; the host reads it
    at the next Pending.read.
    """
    with autocast(runtime.device, amp):
        out = job.forward(model, batch)
    terms = job.loss(out.to(batch[0].dtype), batch)
    finite = torch.isfinite(terms["total"].detach()).float()
    if runtime.distributed:  # every rank skips, and later stops, together
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    good = finite if good is None else good.mul_(finite)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    step_if(optimizer, good)
    return terms


class Pending:
    """The steps since the last read: their loss terms, temperature and `good` flag stay on the device."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.steps: list[tuple[float, int, int]] = []  # (lr, epoch, batch) of each row, from 1
        self.keys: list[str] = []
        self.waited = 0.0  # seconds the loop waited for data since the last read
        self.step_end = self.read_at = time.perf_counter()
        self.data_share = 0.0  # of the wall time between the last two reads
        self.step_seconds = 0.0  # wall time per step between the last two reads

    def add(self, terms: dict[str, torch.Tensor], temperature: torch.Tensor | None, good: torch.Tensor,
            step: tuple[float, int, int]) -> None:
        self.keys = [*terms, *(["temperature"] if temperature is not None else [])]
        values = [*terms.values(), *([temperature] if temperature is not None else []), good]
        self.rows.append(torch.stack([v.detach().float() for v in values]))
        self.steps.append(step)

    def read(self, job: Job, progress: Progress) -> dict[str, float]:
        """Append the pending steps to progress.history (one host sync); raise at the first non-finite one."""
        rows = torch.stack(self.rows).tolist()
        count = len(rows)
        for row, (lr, epoch, batch) in zip(rows, self.steps, strict=True):
            *row, ok = row
            values = dict(zip(self.keys, row, strict=True))
            if ok != 1:
                raise non_finite(job, values, f"epoch {epoch}, batch {batch}")
            temperature = values.pop("temperature", None)
            record = {**values, "lr": lr, "epoch": epoch}
            if temperature is not None:
                record["temperature"] = temperature
            for k, v in record.items():
                progress.history.setdefault(k, []).append(v)
        self.rows.clear()
        self.steps.clear()
        now = time.perf_counter()
        elapsed = max(now - self.read_at, 1e-9)
        self.data_share, self.step_seconds = self.waited / elapsed, elapsed / count
        self.waited, self.read_at = 0.0, now
        return values


def non_finite(job: Job, values: dict[str, float], where: str) -> CrossFuseError:
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "temperature")
    kept = (f"the last good checkpoint {state_path(job)} is untouched (lower lr or check the data, then --resume)"
            if state_path(job).is_file() else "no checkpoint had been written yet (lower lr or check the data)")
    return CrossFuseError(f"non-finite loss ({shown}) at {where} of {job.name}; stopped before updating, {kept}")


def finish_epoch(job: Job, optimizer: torch.optim.Optimizer, progress: Progress, record: dict[str, Any],
                 epoch: int, device: torch.device, board: Board | None = None) -> None:
    """Per-epoch outputs: .model files, the loss .mat and the state, then the optional preview (also to
    TensorBoard) and test.

    The state is written before the optional work, and a failure there is reported, not raised, so
    it never costs training progress.
    """
    files = job.save_models(job.model, epoch + 1)
    files.append(write_losses(job, progress, epoch, record, "cuda" if device.type == "cuda" else "rss"))
    save_state(job, optimizer, progress, record)
    mem = progress.peak_memory[-1] / 2**20
    print(f"{job.title} - epoch {epoch + 1} done in {progress.epoch_time[-1]:.1f} s, peak memory {mem:.0f} MiB, "
          f"loss {progress.history['total'][-1]:.4f}; wrote {', '.join(str(f) for f in files)}")
    try:
        grid = preview_grid(job, job.model, device)
        if grid is not None:
            path = job.out_dir / "preview" / f"{job.name}_epoch_{epoch + 1}.png"
            write_gray(path, grid)
            print(f"{job.title} - preview {path}")
            if board is not None:
                board.preview(grid, epoch + 1)
        if job.test is not None:
            job.model.eval()
            job.test(job.model, epoch + 1)
    except Exception as e:  # optional outputs: report, keep training
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"warning: epoch {epoch + 1} preview/test outputs of {job.name} failed ({type(e).__name__}: {first});"
              " training continues", file=sys.stderr)
    finally:
        job.model.train()
