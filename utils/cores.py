"""How many CPU threads and data-loading processes a training process should use.

On a shared machine, OpenMP threads that outnumber the idle cores spin and wait on each other, and
a step can get many times slower than the cores lost to the other work; so the trainer uses the
cores the rest of the machine leaves idle when it starts.
"""
import os
import time

import torch


def process_cores() -> int:
    """This process's share of the cores it may run on (torchrun's local processes split them)."""
    return max(1, len(allowed_cores()) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def loader_workers(setting: int | str = "auto") -> int:
    """DataLoader processes: the `workers` setting, or for "auto" half of this process's cores, 1 to 8
    (decoding overlaps the step)."""
    return setting if isinstance(setting, int) else min(8, max(1, process_cores() // 2))


def allowed_cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def cpu_times() -> tuple[float, float] | None:
    """(busy, all) seconds since boot summed over the cores this process may use, from /proc/stat;
    None where there is no /proc/stat."""
    cores, busy, total = {f"cpu{i}" for i in allowed_cores()}, 0, 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name in cores:
                    fields = [int(v) for v in values]
                    busy += sum(fields) - fields[3] - fields[4]  # all but idle and iowait
                    total += sum(fields)
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (busy / ticks, total / ticks) if total else None


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def free_threads(window: float = 0.5, limit: int | None = None) -> int:
    """The cores that other processes left idle over the next `window` seconds, 1 to `limit` (default:
    this process's share)."""
    limit = limit or process_cores()
    before, own_before = cpu_times(), own_cpu()
    time.sleep(window)
    after, own_after = cpu_times(), own_cpu()
    if before is None or after is None or after[1] <= before[1]:
        return limit
    cores = len(allowed_cores())
    wall = (after[1] - before[1]) / cores
    others = max(0.0, (after[0] - before[0]) - (own_after - own_before)) / wall
    return max(1, min(limit, round(cores - others)))


def pick_threads() -> int:
    """torch threads for a training process: free_threads(), unless OMP_NUM_THREADS says otherwise.

    Chosen once per run, since the thread count changes the rounding of reductions and a resumed run
    must repeat the interrupted one step for step.
    """
    return torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else free_threads()
