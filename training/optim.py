"""The optimiser of all three regimes: Adam with the reference's weight decay, the lr schedule, and
the device-side skip of a step whose loss was not finite."""
import math

import torch
from torch import nn

from utils.args_base import Settings
from utils.errors import CrossFuseError


def lr_at(config: Settings, epoch: int, batch: int = 0, batches: int = 1) -> float:
    """Learning rate of step `batch` (0-based) of a 0-based epoch of `batches` steps: the reference's step
    drop, or cosine down to lr_min (both per epoch); with warmup_epochs > 0, times a linear ramp per step.

    Why the warm-up (not in the reference, off by default): in the few hundred steps of a laptop run, a
    high peak lr taken at once, while BatchNorm statistics and Adam's moments are still settling, throws
    the freshly initialised decoder far off; a one-epoch ramp lets a higher peak lr be used.
    """
    if config.lr_schedule == "step":
        lr = config.lr * (config.lr_gamma if epoch >= config.lr_step_epochs else 1.0)
    elif config.lr_schedule == "cosine":
        lo = config.lr_min
        lr = lo + (config.lr - lo) * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    else:
        raise CrossFuseError(f"lr_schedule={config.lr_schedule!r}: expected step or cosine")
    if config.warmup_epochs > 0:
        lr *= min(1.0, (epoch * batches + batch + 1) / (config.warmup_epochs * batches))
    return lr


def make_optimizer(model: nn.Module, config: Settings) -> torch.optim.Adam:
    """Adam over the trainable parameters only, with the reference's weight decay.

    Fused: its found_inf input lets step_if skip a non-finite step on the device.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def step_if(optimizer: torch.optim.Optimizer, good: torch.Tensor) -> None:
    """optimizer.step() where good is 1, a no-op where it is 0.

    Fused Adam takes the flag as `found_inf` (the hook GradScaler uses) and skips the update, moments
    and step count on the device; any other optimiser (or a state saved unfused) reads the flag.
    """
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = 1 - good
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif good.item() == 1:
        optimizer.step()
