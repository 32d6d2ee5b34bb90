"""Stage 1 of the paper's two-stage training: an autoencoder per modality, reconstruction loss.

    python train_autoencoder.py                      # settings from args_two_stage.py (Stage1)
    python train_autoencoder.py --modality=ir --epochs=2
    python train_autoencoder.py --demo               # synthetic data, narrow model, a few minutes on a CPU

Writes out_root/autoencoder/auto_encoder_epoch_N_{ir,vi}.model and loss/loss_data_autoencoder_{ir,vi}_eK.mat.
"""
import sys
from pathlib import Path

import torch
from torch import nn

from args_two_stage import Stage1
from cli.entry import INTERRUPTED, run_main, settings
from dataio.training_data import make_dataset, preview_batch, training_images
from formats import run_layout
from formats.checkpoint import save_model
from net.encoder import AutoEncoder
from training.config import model_config
from training.jobs import reconstruction_forward, reconstruction_loss_fn
from training.runtime import Runtime, announce, start_runtime
from training.trainer import Job, train
from utils.errors import CrossFuseError


def autoencoder_job(config: Stage1, modality: str, model: AutoEncoder | None = None) -> Job:
    out_dir = run_layout.run_dir(config.out_root, run_layout.STAGE1)
    dataset = make_dataset(training_images(config, modality), config)
    model = model or AutoEncoder(model_config(config))

    def save(m: nn.Module, epoch: int) -> list[Path]:
        path = run_layout.autoencoder_file(out_dir, modality, epoch)
        return [save_model(path, m, "autoencoder", epoch=epoch, modality=modality)]

    return Job(name=f"autoencoder_{modality}", title=f"Stage 1 {modality.upper()}", out_dir=out_dir,
               model=model, dataset=dataset, forward=reconstruction_forward,
               loss=reconstruction_loss_fn(config), save_models=save, preview=preview_batch(dataset, config))


def main(argv: list[str]) -> None:
    config = settings(Stage1, argv, __doc__)
    if config.images and config.modality == "both":
        raise CrossFuseError("--images is one modality's folder: give --modality=ir or --modality=vi with it")
    runtime: Runtime = start_runtime(config)
    announce("Stage 1: autoencoders", config, runtime)
    for modality in ("ir", "vi") if config.modality == "both" else (config.modality,):
        torch.manual_seed(config.seed)
        train(autoencoder_job(config, modality), config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
