"""The per-epoch preview: the fixed validation items and the model's output on them, one row each, as
one uint8 grid (written as a PNG, and to TensorBoard when asked).
"""
import numpy as np
import torch
from torch import nn

from training.job import Job


def preview_grid(job: Job, model: nn.Module, device: torch.device) -> np.ndarray | None:
    """A grid of the fixed preview items (uint8): one row each, inputs then the model's output."""
    if not job.preview:
        return None
    batch = tuple(b.to(device) for b in job.preview)
    model.eval()
    with torch.no_grad():
        out = job.forward(model, batch).float()
    model.train()
    rows = [torch.cat([*(b[i, 0] for b in batch), out[i, 0]], dim=1) for i in range(out.shape[0])]
    return torch.cat(rows, dim=0).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
