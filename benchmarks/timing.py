"""Timing helpers of bench.py: one measurement per fresh process, device syncs around the clock, FLOP
counts, peak memory, and the matmul rate a measurement is held against."""
import gc
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from utils.device import keep_freed_memory, peak_memory


@dataclass(frozen=True)
class BenchSettings:
    """What every measurement process needs to know (picklable, sent to the workers)."""

    device: str
    threads: int
    repeats: int
    quick: bool


def setup(settings: BenchSettings) -> torch.device:
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


def host_batch(shape: tuple[int, ...], count: int, device: torch.device) -> list[torch.Tensor]:
    """Random 0..255 images in host memory, pinned when they are bound for a GPU."""
    batch = [torch.randint(0, 256, shape).float() for _ in range(count)]
    return [t.pin_memory() for t in batch] if device.type == "cuda" else batch


def maybe_compile(model: torch.nn.Module, variant: str, backend: str = "inductor") -> torch.nn.Module:
    """torch.compile for the "compile" variant; static shapes, since each size is measured on its own
    and tracing the tiling symbolically is far slower than compiling once per shape."""
    return torch.compile(model, backend=backend, dynamic=False) if "compile" in variant else model


def summary(times: list[float], flops: int) -> dict[str, Any]:
    seconds = statistics.median(times)
    return {"seconds": seconds, "times": times, "flops": flops, "gflops_per_s": flops / seconds / 1e9}


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """Run fn(*args) in a new process, so its memory peak and warm-up are its own.

    Forked from a server that has imported the measurements (and torch) once, so each measurement saves
    the seconds of an interpreter start; the server has run nothing, so no thread pool or allocation of
    a previous measurement is carried over.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([fn.__module__])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def isolated(fn: Callable[..., dict], settings: BenchSettings, *args: Any) -> dict:
    """fn(settings, *args) with a peak memory and compilation of its own.

    On the CPU in a fresh process (RSS belongs to a process). On CUDA in this one, after resetting the
    allocator's peak and torch.compile's state: the peak is the allocator's own counter, and a fresh
    process would spend seconds starting CUDA for every measurement.
    """
    device = torch.device(settings.device)
    if device.type != "cuda":
        return in_fresh_process(fn, settings, *args)
    gc.collect()  # the previous measurement's tensors, so the peak is this one's
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return fn(settings, *args)


def matmul_times(n: int, dtype: torch.dtype, repeats: int, device: torch.device) -> list[float]:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    (a @ b).sum().item()
    return timed(lambda: a @ b, repeats, device)


def ceiling_beside(settings: BenchSettings, device: torch.device) -> dict[str, float]:
    """The fp32 matmul rate timed in the measuring process right after its runs, on the CPU: on a
    shared machine the load changes between processes, and a fraction needs both under the same."""
    if device.type != "cpu":
        return {}
    n = 512 if settings.quick else 4096  # as large as the ceiling section's: smaller sizes vary more
    return {"ceiling_beside_gflops": 2 * n**3 / statistics.median(matmul_times(n, torch.float32, 5, device)) / 1e9}
