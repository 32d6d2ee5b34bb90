"""Device choice, mixed precision and peak memory, shared by training, fusion and benchmarks."""
import contextlib
import ctypes
import resource

import torch

from utils.errors import CrossFuseError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when present, else the CPU; an explicit name is checked, not trusted.

    The suite runs on the CPU and on CUDA only (bf16 autocast, fused Adam's device-side skip and the
    peak-memory figures are written for those two), so any other device type is refused by name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CrossFuseError(f"--device {name!r}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise CrossFuseError(f"--device {name!r}: this suite runs on the CPU or CUDA (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrossFuseError(f"--device {name!r}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CrossFuseError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return device


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    The suite frees and reallocates the same large tensors over and over (every training step,
    every band of a fused image). By default each one over the mmap threshold is a fresh mapping
    whose pages fault in on first touch: 8-15% of a CPU training step on this network, about 30% of
    a 4 MP fusion. Called by every entry point (cli.entry.run_main). Without glibc it does nothing.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 2**30)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX (elsewhere the CPU
    emulates bf16, slower than fp32)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def amp_note(device: torch.device, amp: bool) -> str | None:
    """The one line to print when --amp cannot take effect on this device, else None."""
    if amp and not native_bf16(device):
        return f"note: --amp runs fp32 here: {device.type} has no native bf16 (AVX-512 BF16 or AMX on a CPU)"
    return None


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for where the device computes bf16 natively; a no-op otherwise (fp32)."""
    if amp and native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: list[torch.Tensor] | tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """A host batch on the device, as every training step receives it.

    Non-blocking: from the loader's pinned memory the copy overlaps with compute on CUDA, and the host
    never waits for the device here (a blocking copy to a GPU synchronises). On the CPU it is a no-op.
    """
    return tuple(t.to(device, non_blocking=True) for t in batch)


def peak_memory(device: torch.device) -> int:
    """Peak bytes so far: CUDA allocations on a GPU, the process's resident set on the CPU.

    One definition, so the trainer's per-epoch figure and bench.py's rows measure the same thing.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
