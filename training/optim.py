"""The optimiser of all three regimes: Adam with the reference's weight decay, the lr schedule, and
the device-side skip of a step whose loss was not finite."""
import math

import torch
from torch import nn

from utils.errors import CrossFuseError
from utils.settings import Settings


def lr_at(config: Settings, epoch: int) -> float:
    """Learning rate of a 0-based epoch: the reference's step drop, or cosine down to lr_min."""
    lr = config.lr
    if config.lr_schedule == "step":
        return lr * (config.lr_gamma if epoch >= config.lr_step_epochs else 1.0)
    if config.lr_schedule == "cosine":
        lo = config.lr_min
        return lo + (lr - lo) * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    raise CrossFuseError(f"lr_schedule={config.lr_schedule!r}: expected step or cosine")


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
