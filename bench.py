"""Speed of CrossFuse on this machine: matmul ceiling, fusion latency, training steps, data pipeline.

Every model measurement runs in a fresh process, so its peak memory (RSS on the CPU,
torch.cuda.max_memory_allocated on CUDA) is its own. In each, the first run counts FLOPs
(torch.utils.flop_counter) and doubles as the warm-up; the timed runs that follow are reported by
their median. On CUDA the fusion and training sections run as fp32, bf16 autocast (amp) and
torch.compile variants.

    python bench.py                      # everything, defaults (under 10 minutes on 2 CPU cores)
    python bench.py --quick --json o.json  # tiny sizes, one repeat (what the tests run)
    python bench.py --data DIR           # RoadScene for the data section (default ../shared/data/roadscene)

The training rows time the trainer's own step (training.trainer.train_step with its optimiser, loss
functions and the settings of the args files), so an AMP row measures the step training runs.
"""
import argparse
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from cli.entry import run_main
from training.config import model_config
from training.jobs import fusion_forward, fusion_loss_fn, reconstruction_forward, reconstruction_loss_fn
from training.optim import make_optimizer
from training.runtime import Runtime
from training.trainer import Job, train_step
from utils.atomic import atomic_write
from utils.device import autocast, keep_freed_memory, peak_memory, pick_device
from utils.errors import CrossFuseError
from utils.tables import format_table

ROADSCENE = Path("../shared/data/roadscene")  # --data's default, relative to the working directory
SECTIONS = ("ceiling", "fusion", "train", "load", "data")
VARIANTS = ("fp32", "amp", "compile")
STAGES = ("stage1", "stage2", "end_to_end")
FUSION_SIZES = ((512, 512), (1024, 1024), (2048, 2048), (576, 768))
QUICK_FUSION_SIZES = ((64, 64), (96, 128))
DATA_WORKERS = (0, 1, 2)
LOADER_BATCH = 8



@dataclass(frozen=True)
class Settings:
    """What every measurement process needs to know (picklable, sent to the workers)."""

    device: str
    threads: int
    repeats: int
    quick: bool


def setup(settings: Settings) -> torch.device:
    torch.set_num_threads(settings.threads)
    if settings.device == "cpu":
        keep_freed_memory()  # as every entry point does (cli.entry.run_main)
    torch.manual_seed(0)
    return torch.device(settings.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls (the caller has already warmed up)."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def cpu_attention_flops() -> dict[Any, Callable[..., int]]:
    """Formulas for the CPU flash-attention kernels SDPA dispatches to, which torch's flop counter
    lacks; they do the same matmuls as the GPU kernels, so they get the same formulas. Passed to each
    counter, not registered in torch's global registry, so importing bench changes nothing else."""
    aten = torch.ops.aten
    return {aten._scaled_dot_product_flash_attention_for_cpu: flop_counter.sdpa_flop.__wrapped__,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: flop_counter.sdpa_backward_flop.__wrapped__}


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        fn()
    return counter.get_total_flops()


def current_rss() -> int:
    """Resident set size now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_row(device: torch.device) -> dict[str, Any]:
    """The process's peak so far (utils.device.peak_memory, as the trainer logs it) and what it measures."""
    return {"peak_mem_bytes": peak_memory(device), "mem_kind": "cuda_max_allocated" if device.type == "cuda" else "rss"}


def to_device(batch: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Host batch to the device; from pinned memory the copies overlap with compute on CUDA."""
    return [t.to(device, non_blocking=t.is_pinned()) for t in batch]


def host_batch(shape: tuple[int, ...], count: int, device: torch.device) -> list[torch.Tensor]:
    """Random 0..255 images in host memory, pinned when they are bound for a GPU."""
    batch = [torch.randint(0, 256, shape).float() for _ in range(count)]
    return [t.pin_memory() for t in batch] if device.type == "cuda" else batch


def maybe_compile(model: torch.nn.Module, variant: str, backend: str = "inductor") -> torch.nn.Module:
    """torch.compile for the "compile" variant; static shapes, since each size is measured on its own
    and tracing the tiling symbolically is far slower than compiling once per shape."""
    return torch.compile(model, backend=backend, dynamic=False) if variant == "compile" else model


def summary(times: list[float], flops: int) -> dict[str, Any]:
    seconds = statistics.median(times)
    return {"seconds": seconds, "times": times, "flops": flops, "gflops_per_s": flops / seconds / 1e9}


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """Run fn(*args) in a new interpreter, so its memory peak and warm-up are its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------- 1. ceiling


def measure_ceiling(settings: Settings) -> dict[str, Any]:
    """Large square matmul GFLOP/s: fp32, and bf16 on CUDA (TF32 stays off, the default)."""
    device = setup(settings)
    n = 512 if settings.quick else (8192 if device.type == "cuda" else 4096)
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if device.type == "cuda" else {})}
    return {name: {"n": n, **summary(matmul_times(n, dtype, max(settings.repeats, 3), device), 2 * n**3)}
            for name, dtype in dtypes.items()}


def matmul_times(n: int, dtype: torch.dtype, repeats: int, device: torch.device) -> list[float]:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    (a @ b).sum().item()
    return timed(lambda: a @ b, repeats, device)


def ceiling_beside(settings: Settings, device: torch.device) -> dict[str, float]:
    """The fp32 matmul rate timed in the measuring process right after its runs, on the CPU: on a
    shared machine the load changes between processes, and a fraction needs both under the same."""
    if device.type != "cpu":
        return {}
    n = 512 if settings.quick else 4096  # as large as the ceiling section's: smaller sizes vary more
    return {"ceiling_beside_gflops": 2 * n**3 / statistics.median(matmul_times(n, torch.float32, 5, device)) / 1e9}


# ---------------------------------------------------------------- 2. fusion latency


def measure_fusion(settings: Settings, height: int, width: int, variant: str,
                   compile_backend: str = "inductor") -> dict[str, Any]:
    """One pair through the whole model at inference (random weights: speed does not depend on them)."""
    from net.model import CrossFuse

    device = setup(settings)
    model = CrossFuse().eval().to(device)
    runner = maybe_compile(model, variant, compile_backend)
    ir, vi = to_device(host_batch((1, 1, height, width), 2, device), device)
    rss_before = current_rss()

    def fuse(net: torch.nn.Module = runner) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, variant == "amp"):
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
    step: Callable[[], None]  # the trainer's train_step (of the compiled model for --compile)
    eager_step: Callable[[], None]  # the same step of the eager model, for counting FLOPs
    optimizer: torch.optim.Optimizer


def stage_job(stage: str) -> tuple[Job, dict[str, Any]]:
    """The model, forward and loss a training script builds for `stage`, with its args file's settings.

    stage1: an autoencoder with the reconstruction loss; stage2: CrossFuse with frozen encoders, the
    fusion net trained; end_to_end: everything trainable. The dataset and outputs are left out: the
    step is fed a fixed random batch and saves nothing.
    """
    from args_end_to_end import EndToEnd
    from args_two_stage import Stage1, Stage2
    from net.encoder import AutoEncoder
    from net.model import CrossFuse

    if stage == "stage1":
        config = Stage1()
        model = AutoEncoder(model_config(config))
        forward, loss = reconstruction_forward, reconstruction_loss_fn(config)
    elif stage == "stage2":
        config = Stage2()
        model = CrossFuse(model_config(config), frozen_encoders=True)
        forward, loss = fusion_forward, fusion_loss_fn(config)
    elif stage == "end_to_end":
        config = EndToEnd()
        model = CrossFuse(model_config(config))
        forward, loss = fusion_forward, fusion_loss_fn(config)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    job = Job(name=stage, title=stage, out_dir=Path(), model=model.train(), dataset=[], forward=forward, loss=loss,
              save_models=lambda m, epoch: [])
    return job, config


def training_step(stage: str, device: torch.device, batch: int, size: int, variant: str,
                  compile_backend: str = "inductor") -> TrainingStep:
    """One step of a training stage on a fixed random batch, as training.trainer.train takes it: its
    optimiser (make_optimizer), forward under autocast for amp, the loss in fp32, the skip flag."""
    job, config = stage_job(stage)
    model = job.model.to(device)
    optimizer = make_optimizer(model, config)
    runner = maybe_compile(model, variant, compile_backend)
    runtime = Runtime(device)
    good = torch.ones((), device=device)  # stays 1: the random batches give finite losses
    host = host_batch((batch, 1, size, size), 1 if stage == "stage1" else 2, device)

    def step(net: torch.nn.Module = runner) -> None:
        train_step(job, net, optimizer, tuple(to_device(host, device)), variant == "amp", runtime, good)

    return TrainingStep(step, lambda: step(model), optimizer)


def measure_training(settings: Settings, stage: str, variant: str, compile_backend: str = "inductor") -> dict:
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


# ---------------------------------------------------------------- 4. a step under load


def busy(stop: Any) -> None:
    """The other work: one CPU-bound process, until told to stop."""
    while not stop.is_set():
        sum(range(10_000))


def measure_load(settings: Settings) -> dict[str, Any]:
    """End-to-end step time alone, then beside one CPU-bound process with all threads and with the
    threads utils.cores picks (the cores left idle). Fair: slower by at most 1 / (1 - its share)."""
    from utils.cores import allowed_cores, free_threads

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
            "other_share": share, "allowed_slowdown": 1 / (1 - share) if share < 1 else math.inf,
            "alone_seconds": seconds, "crowded_seconds": statistics.median(crowded),
            "picked_seconds": statistics.median(adapted), "times": {"alone": alone, "crowded": crowded,
                                                                    "picked": adapted}}


# ---------------------------------------------------------------- 5. data pipeline


def measure_data(settings: Settings, root: Path) -> dict[str, Any]:
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


# ---------------------------------------------------------------- driver


def default_variants(device: torch.device) -> list[str]:
    """All three on CUDA; on the CPU autocast is a no-op and compiling is not what is measured."""
    return list(VARIANTS) if device.type == "cuda" else ["fp32"]


def run(settings: Settings, sections: list[str], variants: list[str], data: Path = ROADSCENE,
        log: Callable[[str], None] = print) -> dict:
    """Every requested measurement, each in its own process (`data`: the RoadScene folder); returns the
    JSON-ready results."""
    device = torch.device(settings.device)
    results: dict[str, Any] = {"meta": {**asdict(settings), "torch": torch.__version__, "sections": sections,
                                        "variants": variants, "device_name": device_name(device)}}
    if "ceiling" in sections:
        log("matmul ceiling ...")
        results["ceiling"] = in_fresh_process(measure_ceiling, settings)
    if "fusion" in sections:
        results["fusion"] = []
        for variant in variants:
            for height, width in QUICK_FUSION_SIZES if settings.quick else FUSION_SIZES:
                log(f"fusion {width}x{height} {variant} ...")
                results["fusion"].append(in_fresh_process(measure_fusion, settings, height, width, variant))
    if "train" in sections:
        results["train"] = []
        for variant in variants:
            for stage in STAGES:
                log(f"training {stage} {variant} ...")
                results["train"].append(in_fresh_process(measure_training, settings, stage, variant))
    if "load" in sections and device.type == "cpu":
        log("training step under load ...")
        results["load"] = in_fresh_process(measure_load, settings)
    if "data" in sections:
        log("data pipeline ...")
        results["data"] = in_fresh_process(measure_data, settings, data)
    add_fractions(results)
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({multiprocessing.cpu_count()} cores)"


def add_fractions(results: dict) -> None:
    """Achieved GFLOP/s as a fraction of the matmul ceiling of the same precision (bf16 for amp): on
    the CPU the one timed beside the measurement, on CUDA the ceiling section's."""
    ceiling = results.get("ceiling", {})
    for row in results.get("fusion", []) + results.get("train", []):
        ref = ceiling.get("bf16" if row["variant"] == "amp" and "bf16" in ceiling else "fp32")
        rate = row.get("ceiling_beside_gflops") or (ref["gflops_per_s"] if ref else None)
        row["fraction_of_ceiling"] = row["gflops_per_s"] / rate if rate else None


def table(results: dict) -> str:
    """The human-readable summary printed at the end."""
    meta = results["meta"]
    lines = [f"CrossFuse benchmark: {meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}"
             f"{', quick' if meta['quick'] else ''}; medians of {meta['repeats']} runs after a warm-up"]
    if "load_average" in meta:
        loads = " -> ".join(f"{load[0]:.1f}" for load in meta["load_average"].values())
        lines.append(f"load average (1 min) {loads}; {meta['total_seconds']:.0f} s in all")

    def pct(row: dict) -> str:
        return "-" if row.get("fraction_of_ceiling") is None else f"{100 * row['fraction_of_ceiling']:.0f}%"

    def mib(row: dict) -> list[str]:
        """Peak, and its growth over the process before the first run (libraries, weights, inputs)."""
        growth = (row["peak_mem_bytes"] - row["rss_before_bytes"]) / 2**20 if row["mem_kind"] == "rss" else None
        return [f"{row['peak_mem_bytes'] / 2**20:,.0f}", f"{growth:,.0f}" if growth is not None else "-"]

    def rates(row: dict) -> list[str]:
        return [f"{row['flops'] / 1e9:.0f}", f"{row['gflops_per_s']:.1f}", pct(row), *mib(row)]

    for name, c in results.get("ceiling", {}).items():
        lines.append(f"\nceiling  {name} matmul {c['n']}^2: {c['gflops_per_s']:.1f} GFLOP/s")
    beside = [r["ceiling_beside_gflops"] for r in results.get("fusion", []) + results.get("train", [])
              if "ceiling_beside_gflops" in r]
    if beside:
        lines.append(f"ceil = share of the fp32 matmul rate timed in each measuring process right after it "
                     f"({min(beside):.1f} to {max(beside):.1f} GFLOP/s here: the load varies)")
    costs = ["GFLOP", "GFLOP/s", "ceil", "peak MiB", "+MiB"]
    if results.get("fusion"):
        lines += ["", format_table(
            ["fusion (1 pair)", "variant", "size", "s", "s/MP", *costs],
            [["", r["variant"], f"{r['width']}x{r['height']}", f"{r['seconds']:.2f}", f"{r['seconds_per_mp']:.2f}",
              *rates(r)] for r in results["fusion"]], "<<" + ">" * 8)]
    if results.get("train"):
        lines += ["", format_table(
            ["training step", "variant", "stage", "batch", "s/step", *costs],
            [["", r["variant"], r["stage"], str(r["batch"]), f"{r['seconds']:.2f}", *rates(r)]
             for r in results["train"]], "<<<" + ">" * 7)]
    load = results.get("load")
    if load is not None:
        alone = load["alone_seconds"]
        lines.append(f"\nunder load       end_to_end step, batch {load['batch']} at {load['size']} px: "
                     f"alone {alone:.2f} s")
        lines.append(f"{'':17}beside one busy process: {load['threads']} threads {load['crowded_seconds']:.2f} s "
                     f"({load['crowded_seconds'] / alone:.1f}x), {load['picked_threads']} picked "
                     f"{load['picked_seconds']:.2f} s ({load['picked_seconds'] / alone:.1f}x); "
                     f"fair <= {load['allowed_slowdown']:.1f}x")
    data = results.get("data")
    if data is not None:
        if "skipped" in data:
            lines.append(f"\ndata pipeline    skipped: {data['skipped']}")
        else:
            lines.append(f"\ndata pipeline    {data['pairs']} RoadScene pairs at 256 px, batches of {data['batch']}; "
                         f"cache built in {data['cache_build_seconds']:.1f} s")
            for r in data["rows"]:
                lines.append(f"{'':17}{r['source']:<6} {r['workers']} workers {r['pairs_per_s']:>8.1f} pairs/s"
                             f"  (first batch after {r['first_batch_seconds']:.2f} s)")
    verdicts = targets(results)
    if verdicts:
        lines.append("\ntargets (issue 13)")
        marks = {True: "met    ", False: "NOT met", None: "unknown"}
        lines += [f"{'':17}{marks[ok]}  {what}: {measured}" for what, ok, measured in verdicts]
    return "\n".join(lines)


CEILING_SHARE = 0.8  # of the fp32 matmul ceiling, for each training step
FLAT_SPREAD = 1.15  # largest / smallest seconds per megapixel of the square fusion sizes
PEAK_4MP = 3 * 2**30  # bytes


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """Each CPU target of issue 13 this run measured: (what, met, the measured value); met is None
    where the run cannot tell."""
    out = []
    for r in results.get("train", []):
        if r["variant"] == "fp32" and r.get("fraction_of_ceiling") is not None:
            fraction = r["fraction_of_ceiling"]
            out.append((f"{r['stage']} step >= {CEILING_SHARE:.0%} of the matmul ceiling",
                        fraction >= CEILING_SHARE if fraction <= 1 else None,
                        f"{fraction:.0%}" + (" (over 100%: ceiling timed under more load)" * (fraction > 1))))
    square = [r for r in results.get("fusion", []) if r["variant"] == "fp32" and r["height"] == r["width"]]
    if len(square) > 1:
        per_mp = [r["seconds_per_mp"] for r in square]
        spread = max(per_mp) / min(per_mp)
        sizes = f"{square[0]['megapixels']:.2f} to {square[-1]['megapixels']:.2f} MP"
        out.append((f"fusion s/MP flat within {FLAT_SPREAD - 1:.0%} ({sizes})", spread <= FLAT_SPREAD,
                    f"largest / smallest {spread:.2f}"))
    big = [r for r in square if r["megapixels"] >= 4 and r["mem_kind"] == "rss"]
    if big:
        peak = big[-1]["peak_mem_bytes"]
        out.append(("4 MP fusion peak RSS < 3 GiB", peak < PEAK_4MP, f"{peak / 2**30:.2f} GiB"))
    load = results.get("load")
    if load is not None:
        slowdown = load["picked_seconds"] / load["alone_seconds"]
        out.append(("step beside a busy process slows by its share at most", slowdown <= load["allowed_slowdown"],
                    f"{slowdown:.2f}x with {load['picked_threads']} picked threads (fair "
                    f"{load['allowed_slowdown']:.2f}x; {load['crowded_seconds'] / load['alone_seconds']:.2f}x with "
                    f"{load['threads']})"))
    return out


def check_finite(results: dict) -> None:
    """A NaN or a non-positive time means a broken measurement, not a fast one."""
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError("a measurement came out non-finite")
    walk(results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (smoke test)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement after the warm-up (default 3, quick 1)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)} "
                                      "(default: all on CUDA, fp32 on the CPU)")
    p.add_argument("--data", type=Path, default=ROADSCENE,
                   help="RoadScene folder (ir/, vi/) for the data section; skipped when absent (default %(default)s)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default %(default)s)")
    return p.parse_args(argv)


def split_choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in allowed]
    if unknown or not chosen:
        raise CrossFuseError(f"--{what} {text!r}: choose from {','.join(allowed)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1 or args.threads < 1:
        raise CrossFuseError("--repeats and --threads must be at least 1")
    settings = Settings(str(device), args.threads, repeats, args.quick)
    sections = split_choices(args.sections, SECTIONS, "sections")
    variants = split_choices(args.variants, VARIANTS, "variants") if args.variants else default_variants(device)
    start, load_start = time.perf_counter(), os.getloadavg()
    results = run(settings, sections, variants, args.data, log=lambda text: print(text, file=sys.stderr, flush=True))
    results["meta"]["total_seconds"] = time.perf_counter() - start
    results["meta"]["load_average"] = {"start": load_start, "end": os.getloadavg()}  # other work skews times
    check_finite(results)
    print(table(results))
    if args.json:
        atomic_write(args.json, lambda temp: temp.write_text(json.dumps(results, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
