"""What the training scripts plug into the loop: forwards and losses per regime, the per-epoch test
fusion, and the one job builder of the two fusion regimes (stage 2 and end-to-end), which differ only
in which parts train, where they write and what their checkpoints record."""
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataio.pairs import find_pairs
from dataio.training_data import make_dataset, preview_batch, training_pairs
from formats import run_layout
from formats.checkpoint import save_model
from inference.files import fuse_pair, read_pair
from net.encoder import Encoder
from training.losses import fusion_loss, reconstruction_loss
from training.trainer import Batch, Job, LossFn, TestHook
from utils.errors import CrossFuseError
from utils.settings import Settings


def fuse_test_set(config: Settings, out_dir: Path, device: torch.device) -> TestHook | None:
    """A callback fusing the configured test folder into out_dir/test/epoch_N, or None without one."""
    if not config.test_dir:
        return None
    pairs = find_pairs(Path(config.test_dir)).pairs
    for pair in pairs:  # a bad test pair fails now, not after the first epoch's training
        read_pair(pair)

    def fuse_all(model: nn.Module, epoch: int) -> None:
        for pair in pairs:
            fuse_pair(model, pair, out_dir / "test" / f"epoch_{epoch}" / f"{pair.name}.png", device, gray=True)

    return fuse_all


def fusion_forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Stage 2 and end-to-end: the model fuses its two inputs; batch = (ir, vi)."""
    return model(batch[0], batch[1])


def reconstruction_forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Stage 1: an autoencoder reconstructs its one input; batch = (image,)."""
    return model(batch[0])


def fusion_loss_fn(config: Settings) -> LossFn:
    """Spec section 7 with the configured weights; batch = (ir, vi)."""
    return lambda out, batch: fusion_loss(out, batch[0], batch[1], config.w_int, config.w_grad)


def reconstruction_loss_fn(config: Settings) -> LossFn:
    """Spec section 3 with the configured weights; batch = (image,)."""
    return lambda out, batch: reconstruction_loss(out, batch[0], config.w_mse, config.w_ssim)


def mean_temperature(model: nn.Module) -> torch.Tensor:
    """Mean of the learned cross-attention temperatures (1 when fixed), on the device: read with the losses."""
    temps = model.fusion.cam.temperatures()
    return torch.cat([t.detach().flatten() for t in temps]).mean() if temps else next(model.parameters()).new_ones(())


def fusion_job(config: Settings, model: nn.Module, device: torch.device, approach: str, title: str,
               meta: dict[str, Any], save_encoders: bool) -> Job:
    """A fusion training job on the dataset's pairs, writing `approach`'s files under out_root.

    Each epoch saves the complete model (and, with save_encoders, each trained encoder on its own),
    every file recording `meta`.
    """
    out_dir = run_layout.run_dir(config.out_root, approach)
    dataset = make_dataset(training_pairs(config), config)

    def save(m: nn.Module, epoch: int) -> list[Path]:
        files = [save_model(run_layout.fusion_file(out_dir, approach, epoch), m, "crossfuse", epoch=epoch, **meta)]
        if save_encoders:
            for modality in run_layout.MODALITIES:
                encoder = getattr(m, f"{modality}_encoder")
                files.append(save_model(run_layout.encoder_file(out_dir, modality, epoch), encoder, "encoder",
                                        config=m.cfg, epoch=epoch, modality=modality, **meta))
        return files

    return Job(name=run_layout.LAYOUTS[approach].job, title=title, out_dir=out_dir, model=model, dataset=dataset,
               forward=fusion_forward, loss=fusion_loss_fn(config), save_models=save, temperature=mean_temperature,
               test=fuse_test_set(config, out_dir, device), preview=preview_batch(dataset, config))


ENCODER_WIDTHS = ("shallow", "growth", "dense_layers", "deep")


def encoder_widths(ir: Encoder, vi: Encoder, sources: Sequence[Path | str] = ("IR", "VIS")) -> dict[str, int]:
    """The widths two trained encoders share (a fusion model is built to them); different ones are an error."""
    widths = [{k: getattr(e.cfg, k) for k in ENCODER_WIDTHS} for e in (ir, vi)]
    if widths[0] != widths[1]:
        shown = " and ".join(f"{path} has {tuple(w.values())}" for path, w in zip(sources, widths, strict=True))
        raise CrossFuseError(f"the IR and VIS encoders have different widths ({', '.join(ENCODER_WIDTHS)}): "
                             f"{shown}; train both with one setting")
    return widths[0]
