"""What one training run is, as training/trainer.py takes it: a Job holds everything that differs
between the three training scripts (training/stages.py builds them).
"""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

Batch = tuple[torch.Tensor, ...]
TestHook = Callable[[nn.Module, int], None]
LossFn = Callable[[torch.Tensor, Batch], dict[str, torch.Tensor]]


@dataclass
class Job:
    """Everything that differs between the three training scripts."""

    name: str  # file-name part on disk (training.stages: Stage.job): "trans", "end_to_end", "autoencoder_ir"
    title: str  # log-line prefix, e.g. "🔄 E2E"
    out_dir: Path
    model: nn.Module
    dataset: Dataset
    forward: Callable[[nn.Module, Batch], torch.Tensor]
    loss: LossFn
    save_models: Callable[[nn.Module, int], list[Path]]  # (model, epoch from 1) -> files written
    temperature: Callable[[nn.Module], torch.Tensor] | None = None  # mean learned temperature, logged
    test: TestHook | None = None  # fuse the test folder after an epoch
    preview: Batch = ()  # fixed validation items shown in the per-epoch grid
    outputs: Callable[[], list[Path]] = list  # the files save_models and test wrote so far (an earlier run's too)
    unit: str = "pairs"  # what one batch item is, in the logged throughput ("images" for stage 1)
    later: int = 0  # jobs as long as this one that the script trains after it (stage 1: VIS after IR), in the time left
