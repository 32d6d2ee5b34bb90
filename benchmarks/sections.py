"""What bench.py measures, each function run in a fresh process: the matmul ceiling, fusion latency,
training steps of each stage (the trainer's own step, optimiser and loss, the args files' settings),
a step beside a busy process, and the data pipeline."""
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from benchmarks.timing import (
    BenchSettings,
    ceiling_beside,
    count_flops,
    current_rss,
    host_batch,
    matmul_times,
    maybe_compile,
    peak_row,
    setup,
    summary,
    timed,
)
from net.model import CrossFuse
from training.job import Job
from training.optim import make_optimizer
from training.runtime import Runtime
from training.settings import read_settings
from training.stages import STAGES
from training.trainer import train_step
from utils.device import autocast, native_bf16, to_device

LOADER_BATCH = 8
DATA_WORKERS = (0, 1, 2)


def measure_ceiling(settings: BenchSettings) -> dict[str, Any]:
    """Large square matmul GFLOP/s: fp32, and bf16 on CUDA and on CPUs with native bf16 (TF32 stays off)."""
    device = setup(settings)
    n = 512 if settings.quick else (8192 if device.type == "cuda" else 4096)
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if native_bf16(device) else {})}
    return {name: {"n": n, **summary(matmul_times(n, dtype, max(settings.repeats, 3), device), 2 * n**3)}
            for name, dtype in dtypes.items()}


# ---------------------------------------------------------------- 2. fusion latency


def measure_fusion(settings: BenchSettings, height: int, width: int, variant: str,
                   compile_backend: str = "inductor") -> dict[str, Any]:
    """One pair through the whole model at inference (random weights: speed does not depend on them)."""
    device = setup(settings)
    model = CrossFuse().eval().to(device)
    runner = maybe_compile(model, variant, compile_backend)
    ir, vi = to_device(host_batch((1, 1, height, width), 2, device), device)
    rss_before = current_rss()

    def fuse(net: torch.nn.Module = runner) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, "amp" in variant):
            return net(ir, vi)

    flops = count_flops(lambda: fuse(model))  # also the warm-up of the eager model
    if variant == "compile":
        fuse()
    times = timed(fuse, settings.repeats, device)
    mp = height * width / 1e6
    result = {"variant": variant, "height": height, "width": width, "megapixels": mp,
              **summary(times, flops), **peak_row(device), "rss_before_bytes": rss_before,
              **ceiling_beside(settings, device)}
    result["seconds_per_mp"] = result["seconds"] / mp
    return result


# ---------------------------------------------------------------- 3. training steps


class TrainingStep(NamedTuple):
    step: Callable[[], dict[str, torch.Tensor]]  # the trainer's train_step (compiled model for --compile): its loss
    eager_step: Callable[[], dict[str, torch.Tensor]]  # the same step of the eager model, for counting FLOPs
    optimizer: torch.optim.Optimizer
    model: torch.nn.Module  # the eager model the steps train


def stage_job(stage: str, argv: list[str] | None = None) -> tuple[Job, Any]:
    """The model, forward and loss a training script builds for `stage` (training.stages), with its args
    file's settings and argv's --key=value; stage 2's encoders are random and frozen. The dataset and
    outputs are left out: the step is fed a fixed random batch and saves nothing."""
    entry = STAGES[stage]
    config = read_settings(entry.args, argv or [])
    job = Job(name=stage, title=stage, out_dir=Path(), model=entry.build(config, []).train(), dataset=[],
              forward=entry.forward, loss=entry.loss(config), save_models=lambda m, epoch: [])
    return job, config


def training_step(stage: str, device: torch.device, batch: int, size: int, variant: str,
                  compile_backend: str = "inductor") -> TrainingStep:
    """One step of a training stage on a fixed random batch, as training.trainer.train takes it: its
    optimiser (make_optimizer), forward under autocast for amp, the loss in fp32, the skip flag.

    `variant`: fp32, amp, compile, or amp+compile (the GPU check's fourth); the weights and the batch come
    from torch's global generator, so a seed before the call makes them the same on every device."""
    job, config = stage_job(stage)
    model = job.model.to(device)
    optimizer = make_optimizer(model, config)
    runner = maybe_compile(model, variant, compile_backend)
    runtime = Runtime(device)
    good = torch.ones((), device=device)  # stays 1: the random batches give finite losses
    host = host_batch((batch, 1, size, size), 1 if stage == "stage1" else 2, device)

    def step(net: torch.nn.Module = runner) -> dict[str, torch.Tensor]:
        return train_step(job, net, optimizer, to_device(host, device), "amp" in variant, runtime, good)

    return TrainingStep(step, lambda: step(model), optimizer, model)


def measure_training(settings: BenchSettings, stage: str, variant: str, compile_backend: str = "inductor") -> dict:
    device = setup(settings)
    batch = 8 if device.type == "cuda" else 2
    size = 64 if settings.quick else 256
    run = training_step(stage, device, batch, size, variant, compile_backend)
    rss_before = current_rss()
    flops = count_flops(run.eager_step)  # also the warm-up
    run.step()
    times = timed(run.step, settings.repeats, device)
    return {"variant": variant, "stage": stage, "batch": batch, "size": size,
            **summary(times, flops), **peak_row(device), "rss_before_bytes": rss_before,
            **ceiling_beside(settings, device)}


# Where a step's time goes: aten operators by the first of these their names contain (self time).
LAYER_KINDS = (("optimiser", ("adam", "_foreach")), ("convolution", ("conv",)),
               ("matmul (linear, attention)", ("mm", "linear", "attention")), ("normalisation", ("norm",)),
               ("pooling", ("pool",)))
OTHER_KIND = "elementwise and other"


def layer_kind(op: str) -> str:
    return next((kind for kind, parts in LAYER_KINDS if any(p in op.lower() for p in parts)), OTHER_KIND)


def measure_profile(settings: BenchSettings, stage: str, variant: str) -> dict[str, Any]:
    """Share of a training step's operator time per layer kind (torch.profiler, CPU self time)."""
    device = setup(settings)
    run = training_step(stage, device, 2, 64 if settings.quick else 256, variant)
    run.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(settings.repeats):
            run.step()
    seconds = dict.fromkeys([kind for kind, _ in LAYER_KINDS] + [OTHER_KIND], 0.0)
    for event in profile.key_averages():
        seconds[layer_kind(event.key)] += event.self_cpu_time_total / 1e6 / settings.repeats
    total = sum(seconds.values())
    return {"stage": stage, "variant": variant, "operator_seconds": total,
            "shares": {kind: value / total for kind, value in seconds.items()}}


# ---------------------------------------------------------------- 4. a step under load


def busy(stop: Any) -> None:
    """The other work: one CPU-bound process, until told to stop."""
    while not stop.is_set():
        sum(range(10_000))


def measure_load(settings: BenchSettings) -> dict[str, Any]:
    """End-to-end step time alone, then beside one CPU-bound process with all threads and with the
    threads utils.cores picks (the cores left idle). Fair: slower by at most 1 / (1 - its share)."""
    from utils.cores import allowed_cores, free_threads

    if len(allowed_cores()) < 2:
        return {"skipped": "one core: a busy process beside the step leaves no idle core to pick"}
    device = setup(settings)
    size = 32 if settings.quick else 128
    run = training_step("end_to_end", device, 2, size, "fp32")
    run.step()
    alone = timed(run.step, settings.repeats, device)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    other = context.Process(target=busy, args=(stop,), daemon=True)
    other.start()
    try:
        time.sleep(1.0)  # let it start
        crowded = timed(run.step, settings.repeats, device)
        picked = free_threads(1.0, settings.threads)
        torch.set_num_threads(picked)
        run.step()
        adapted = timed(run.step, settings.repeats, device)
    finally:
        stop.set()
        other.join()
    share = 1 / len(allowed_cores())
    seconds = statistics.median(alone)
    return {"size": size, "batch": 2, "threads": settings.threads, "picked_threads": picked,
            "other_share": share, "allowed_slowdown": 1 / (1 - share),
            "alone_seconds": seconds, "crowded_seconds": statistics.median(crowded),
            "picked_seconds": statistics.median(adapted), "times": {"alone": alone, "crowded": crowded,
                                                                    "picked": adapted}}


# ---------------------------------------------------------------- 5. data pipeline


def measure_data(settings: BenchSettings, root: Path) -> dict[str, Any]:
    """Training pairs per second: JPEG decode + luma + resize to 256 with 0/1/2 workers, and the cache."""
    from dataio.cache import CachedPairDataset, build_cache
    from dataio.datasets import ImageTransform, PairDataset, make_loader
    from dataio.pairs import find_pairs

    if not (root / "ir").is_dir() or not (root / "vi").is_dir():
        return {"skipped": f"no RoadScene pairs at {root} (needs its ir/ and vi/ folders; point --data at them)"}
    setup(settings)
    # This process was spawned, which made spawn its default for new processes too; the trainer's
    # loaders start their workers the platform's way (fork on Linux), so measure that.
    multiprocessing.set_start_method(None, force=True)
    pairs = find_pairs(root / "ir", root / "vi").pairs
    if settings.quick:
        pairs = pairs[:2 * LOADER_BATCH]
    transform = ImageTransform(size=256)

    def throughput(dataset: torch.utils.data.Dataset, workers: int) -> dict[str, Any]:
        first_batch = []  # seconds to the first batch of each pass: worker start-up shows here

        def one_pass() -> None:
            start = time.perf_counter()
            for i, _ in enumerate(make_loader(dataset, LOADER_BATCH, shuffle=True, workers=workers, seed=0,
                                              epoch=0, drop_last=False)):
                if i == 0:
                    first_batch.append(time.perf_counter() - start)

        times = timed(one_pass, settings.repeats, torch.device("cpu"))
        seconds = statistics.median(times)
        return {"workers": workers, "seconds": seconds, "times": times, "pairs_per_s": len(dataset) / seconds,
                "first_batch_seconds": statistics.median(first_batch)}

    decoded = PairDataset(pairs, transform)
    timed(lambda: [decoded[i] for i in range(len(decoded))], 1, torch.device("cpu"))  # warm the file cache
    rows = [{"source": "jpeg", **throughput(decoded, workers)} for workers in DATA_WORKERS]
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        path = build_cache(pairs, 256, Path(cache_dir))
        build_seconds = time.perf_counter() - start
        rows.append({"source": "cache", **throughput(CachedPairDataset(path, transform), 0)})
    return {"pairs": len(pairs), "batch": LOADER_BATCH, "cache_build_seconds": build_seconds, "rows": rows}
