"""Where a training run executes: one process, or one of several started by torchrun (DDP)."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.settings import format_config
from utils.device import pick_device
from utils.settings import Settings


@dataclass
class Runtime:
    """The device and this process's rank among `world` processes; rank 0 alone writes the files."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_runtime(config: Settings) -> Runtime:
    """One process, or one of `torchrun --nproc_per_node=N` (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Runtime(pick_device(config.device))
    device = pick_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def announce(title: str, config: Settings, runtime: Runtime) -> None:
    """The run's title, device and settings, printed once (by the main process)."""
    if runtime.main:
        print(f"{title} on {runtime.device}" + (f" x {runtime.world} processes" if runtime.world > 1 else ""))
        print(format_config(config.as_dict()))
