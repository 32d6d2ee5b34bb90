"""Where a training run executes: one process, or one of several started by torchrun (DDP)."""
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.settings import format_config
from utils.args_base import Settings
from utils.device import amp_note, pick_device


@dataclass
class Runtime:
    """The device and this process's rank among `world` processes; rank 0 alone writes the files."""

    device: torch.device
    rank: int = 0
    world: int = 1
    distributed: bool = False  # started by torchrun: DDP and a process group, even for one process

    @property
    def main(self) -> bool:
        return self.rank == 0


KILL_AT = "CROSSFUSE_KILL_AT"  # "<job>:<step>": that job's process SIGKILLs itself after that step (tests)


def crash_if_asked(job: str, steps: int) -> None:
    """Die by SIGKILL, as a crash would, once job `job` has done `steps` steps in all, when CROSSFUSE_KILL_AT
    asks for it: the resume tests kill a run at a known step instead of racing it with a timer."""
    if os.environ.get(KILL_AT) == f"{job}:{steps}":
        os.kill(os.getpid(), signal.SIGKILL)


def start_runtime(config: Settings) -> Runtime:
    """One plain process, or one of `torchrun --nproc_per_node=N` (NCCL on CUDA, gloo on the CPU).

    Under torchrun the process group and DDP are set up even for N = 1, so one GPU runs the code path
    of several (`make gpu-check` validates NCCL that way).
    """
    device = pick_device(config.device)
    if "LOCAL_RANK" not in os.environ:  # torchrun sets it for every process it starts
        return Runtime(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, dist.get_rank(), dist.get_world_size(), distributed=True)


def announce(title: str, config: Settings, runtime: Runtime) -> None:
    """The run's title, device and settings, printed once (by the main process)."""
    if runtime.main:
        processes = f" x {runtime.world} process{'es' if runtime.world > 1 else ''} (DDP)"
        print(f"{title} on {runtime.device}" + (processes if runtime.distributed else ""))
        print(format_config(config.as_dict()))
        if note := amp_note(runtime.device, config.amp):
            print(note, file=sys.stderr)
