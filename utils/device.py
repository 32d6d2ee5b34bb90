"""Device choice and mixed precision, shared by training, fusion and benchmarks."""
import contextlib

import torch

from utils.errors import CrossFuseError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when present, else the CPU; an explicit name is checked, not trusted."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CrossFuseError(f"--device {name!r}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrossFuseError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for on CUDA; a no-op otherwise (fp32 on the CPU)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
