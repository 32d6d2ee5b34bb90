"""The GPU check's rows that run the suite's own commands on CUDA: a torchrun run killed and resumed,
short real runs on RoadScene, bench.py's GPU section and a study on --gpus 0.

Each command is built by one function here, used both to run it and to show it (`--dry-run`).
"""
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from args_two_stage import Stage1
from benchmarks.gpu_plan import plan_stage
from checks.rows import Context, Row, error_line, first_line, guarded, relative_difference
from formats import run_layout
from formats.checkpoint import save_model
from net.encoder import AutoEncoder
from training.board import board_dir
from training.settings import model_config
from training.stages import END_TO_END, STAGE2, Stage

ROOT = Path(__file__).resolve().parents[1]
RESUME_TOLERANCE = 1e-3  # relative, per step and loss term
SEED_MEMORY_GB = {"stage2": "3-4", "end_to_end": "5-8"}  # the seed's README: two-stage, end-to-end
SEED_HOURS, SEED_EPOCHS, SEED_PAIRS = "4-6", 32, 20000  # end-to-end: "32 epochs of 20,000 pairs in 4-6 hours"
TRAIN_SECONDS = 50  # of each real run, start-up included (the data cache is built by the first)
SCALARS = {"loss/intensity", "loss/gradient", "loss/total", "lr", "temperature"}


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / script), *args]


def succeed(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a command that must succeed; if it does not, its last error line (the suite's one-line error or
    the end of a traceback) is the exception's message."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        name = next((Path(arg).name for arg in command if arg.endswith(".py")), command[0])
        raise RuntimeError(f"{name} exited with {done.returncode}: {error_line(done.stderr, 'no error output')}")
    return done


# ----------------------------------------------------------------------------------- torchrun resume

def resume_command(out: Path, *extra: str) -> list[str]:
    """A short end-to-end demo run under torchrun with one process (NCCL), run from the group's folder."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
            str(ROOT / END_TO_END.script), "--demo", f"--out_root={out}", "--device=cuda", "--epochs=3",
            "--checkpoint_every=5", "--log_every=12", "--lr=1e-4", "--test_dir=", *extra]


def children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def losses(out: Path) -> dict[str, list[float]]:
    log = run_layout.latest_losses(END_TO_END.dir(out), END_TO_END.job, "the run wrote no loss file")
    return {k: v.tolist() for k, v in log.series.items() if k.startswith("loss_")}


def resume_rows(context: Context) -> Iterator[Row]:
    """An uninterrupted run, then one whose training process is SIGKILLed after its first checkpoint and
    resumed: per-step losses compared. CUDA kernels are not deterministic (atomics in the backward passes
    of convolutions, upsampling and attention), so the two runs differ by rounding that grows step by
    step: RESUME_TOLERANCE allows for it over these 36 steps, at lr 1e-4 so that it grows slowly, while a
    wrong batch order or a lost state moves a loss by far more. (On the CPU the losses are equal bit for
    bit: tests/test_training.py.)"""

    def check() -> tuple[bool, str]:
        folder = Path(context.work) / "resume"  # --demo writes its data under data/demo here
        folder.mkdir(parents=True, exist_ok=True)
        limit = context.seconds / 3
        succeed(resume_command(folder / "straight"), folder, limit)
        killed = folder / "killed"
        proc = subprocess.Popen(resume_command(killed), cwd=folder, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        state = run_layout.state_file(END_TO_END.dir(killed), END_TO_END.job)
        deadline = time.monotonic() + limit
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = children(proc.pid) if proc.poll() is None else []  # the training process torchrun started
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        if not workers or not state.exists():
            return False, "the run ended or wrote no checkpoint before it could be killed"
        epoch = torch.load(state, weights_only=False)["progress"]["epoch"]
        if epoch >= 3:
            return False, "the run finished before it could be killed"
        succeed(resume_command(killed, "--resume"), folder, limit)
        straight, resumed = losses(folder / "straight"), losses(killed)
        if straight.keys() != resumed.keys():
            return False, f"different loss terms: {sorted(straight)} vs {sorted(resumed)}"
        difference = max(relative_difference(resumed[k], straight[k]) for k in straight)
        steps = len(straight["loss_data"])
        return difference <= RESUME_TOLERANCE, (f"{steps} steps, killed in epoch {epoch + 1}: max relative "
                                                f"difference {difference:.1e} (tolerance {RESUME_TOLERANCE:.0e})")

    yield guarded("torchrun resume", check)


# --------------------------------------------------------------------------------------- real runs

def real_run_command(stage: Stage, data: Path, out: Path, *extra: str) -> list[str]:
    """The stage's training script on the RoadScene pairs at 256 px, batch 8 (the args files' values,
    given here so they show), with the cache; it is stopped after its time, so the epochs never run out."""
    return python(stage.script, f"--dataset={data}", f"--out_root={out}", "--train_num=0", "--image_size=256",
                  "--batch=8", "--epochs=1000", "--cache", "--device=cuda", *extra)


def random_stage1(out: Path) -> None:
    """Stage-1 encoders for stage 2 to start from: random ones time the same as trained ones."""
    config = Stage1()
    torch.manual_seed(config.seed)
    for modality in run_layout.MODALITIES:
        path = run_layout.autoencoder_file(out / "autoencoder", modality, 1)
        save_model(path, AutoEncoder(model_config(config)), "autoencoder", epoch=1, modality=modality)


def train_for(command: list[str], seconds: float) -> str:
    """Run a training command for `seconds`, then interrupt it as Ctrl-C does; its output."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return proc.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def tensorboard_installed() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def real_run_rows(stage: Stage, context: Context) -> Iterator[Row]:
    """A stage trained on RoadScene for most of its time: pairs per second (epochs after the first, which
    warms up) and the peak GPU memory beside the seed's claims and bench.py --plan's figures (its live-tensor
    peak is what max_memory_allocated measures; its FLOPs per pair turn the rate into TFLOP/s achieved); for
    end-to-end the hours that throughput gives for the seed's 32 epochs of 20,000 pairs, and its TensorBoard
    events."""
    out = Path(context.work) / f"run_{stage.name}"
    board = stage is END_TO_END and tensorboard_installed()

    def check() -> tuple[bool, str]:
        if not ((context.data / "ir").is_dir() and (context.data / "vi").is_dir()):
            return False, (f"no RoadScene pairs at {context.data}: copy its ir/ and vi/ folders there "
                           "or give --data (docs/gpu.md)")
        if stage is STAGE2:
            random_stage1(out)
        command = real_run_command(stage, context.data, out, *(["--tensorboard"] if board else []))
        output = train_for(command, min(TRAIN_SECONDS, context.seconds - 20))
        log = run_layout.latest_losses(stage.dir(out), stage.job, "no epoch finished")
        if log.epoch_time.size < 2:
            return False, f"{log.epoch_time.size} epoch(s) finished in the time; the rate needs 2"
        pairs = int((log.series["epoch"] == 1).sum()) * log.config["batch"]
        rate = pairs / statistics.median(log.epoch_time[1:].tolist())
        peak = log.peak_memory.max() / 2**30
        logged = "pairs/s" in output and "GPU peak" in output  # the trainer's own log line
        figure = f"{rate:.0f} pairs/s over {log.epoch_time.size - 1} epochs"
        if stage is END_TO_END:
            hours = SEED_EPOCHS * SEED_PAIRS / rate / 3600
            figure += f": {SEED_EPOCHS} x {SEED_PAIRS:,} pairs in {hours:.2f} h (seed: {SEED_HOURS} h)"
        figure += f"; peak {peak:.1f} GiB (seed: {SEED_MEMORY_GB[stage.name]} GB)"
        planned = plan_stage(stage.name, ["--batch=8", "--image_size=256"])  # bench.py --plan, for this run
        flops = planned["forward_flops_per_pair"] + planned["backward_flops_per_pair"]
        figure += (f"; plan: {planned['peak_bytes'] / 2**30:.1f} GiB of live tensors, "
                   f"{rate * flops / 1e12:.1f} TFLOP/s achieved")
        return logged and peak > 0, figure + ("" if logged else "; the log line lacks pairs/s or GPU peak")

    yield guarded(f"real run {stage.name}", check)
    if stage is END_TO_END:
        yield guarded("tensorboard", lambda: tensorboard_events(out, board))


def tensorboard_events(out: Path, installed: bool) -> tuple[bool, str]:
    """The end-to-end run's event files hold every loss term, lr, temperature and the preview."""
    if not installed:
        return False, "the tensorboard package is not installed here (pip install tensorboard)"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = board_dir(END_TO_END.dir(out), END_TO_END.job)
    tags = EventAccumulator(str(folder)).Reload().Tags()
    missing = sorted(SCALARS - set(tags.get("scalars", [])) | ({"preview"} - set(tags.get("images", []))))
    if missing:
        return False, f"{folder} lacks {', '.join(missing)}"
    return True, f"{', '.join(sorted(SCALARS))} and the preview in {folder}"


# ------------------------------------------------------------------------------------------ bench.py

BENCH_OPTIONS = {"fusion": ["--sections", "fusion", "--fusion-sizes", "1024x1024,2048x2048"],
                 "train": ["--sections", "train"]}
BENCH_VARIANTS = {"fusion": ("fp32", "amp"), "train": ("fp32", "amp", "compile")}
BENCH_ROWS = {"fusion": ("height", {1024: "1 MP", 2048: "4 MP"}),  # (the key of bench's rows, its values named)
              "train": ("stage", {s: s for s in ("stage1", "stage2", "end_to_end")})}
NAMES = {"fp32": "fp32", "amp": "bf16", "compile": "compiled"}
BENCH_BATCH = 8  # bench.py's training batch on CUDA


def bench_command(section: str, out: Path) -> list[str]:
    return python("bench.py", "--device", "cuda", *BENCH_OPTIONS[section], "--variants",
                  ",".join(BENCH_VARIANTS[section]), "--json", str(out))


def bench_rows(section: str, context: Context) -> Iterator[Row]:
    """bench.py's GPU section: fusion latency at 1 and 4 MP, or the training step of each stage in fp32,
    bf16 and compiled; with the peak GPU memory of each."""
    out = Path(context.work) / f"bench_{section}.json"
    try:
        succeed(bench_command(section, out), ROOT, context.seconds - 5)
        results, error = json.loads(out.read_text()), ""
    except Exception as e:  # every row of the section needs bench's results
        results, error = {}, first_line(e)
    key, rows = BENCH_ROWS[section]

    def row(value: int | str) -> tuple[bool, str]:
        if error:
            return False, error
        found = [r for r in results[section] if r[key] == value]
        times = ", ".join(f"{NAMES[r['variant']]} {1000 * r['seconds']:.0f} ms" for r in found)
        unit = "per pair" if section == "fusion" else f"per step of {BENCH_BATCH} at 256 px"
        peak = max((r["peak_mem_bytes"] for r in found), default=0) / 2**30
        good = tuple(r["variant"] for r in found) == BENCH_VARIANTS[section] and all(r["seconds"] > 0 for r in found)
        return good, f"{times} {unit}; peak {peak:.2f} GiB"

    for value, name in rows.items():
        yield guarded(f"bench {section} {name}", partial(row, value))


# --------------------------------------------------------------------------------------------- study

def study_command(root: Path) -> list[str]:
    """One tiny end-to-end run scheduled by study.py on GPU 0, run from `root` (its demo data lands there)."""
    return python("study.py", "--demo", "--arms", "end-to-end", "--seeds", "0", "--gpus", "0", "--no-compare",
                  "--root", str(root), "--name", "gpu-check", "--epochs=1")


def study_rows(context: Context) -> Iterator[Row]:
    def check() -> tuple[bool, str]:
        root = Path(context.work) / "study"
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        done = succeed(study_command(root), root, context.seconds - 5)
        run = run_layout.study_run(root / "gpu-check", "end-to-end", 0)
        log = run / "train.log"
        on_gpu = "on GPU 0" in done.stdout and log.is_file() and "on cuda" in log.read_text()
        trained = END_TO_END.fusion_path(END_TO_END.dir(run), 1).is_file()
        return on_gpu and trained, (f"end-to-end:0 trained on GPU 0 in {time.perf_counter() - start:.0f} s"
                                    if on_gpu and trained else f"no CUDA run or no model in {run}")

    yield guarded("study --gpus 0", check)
