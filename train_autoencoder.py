"""Stage 1 of the paper's two-stage training: an autoencoder per modality, reconstruction loss.

    python train_autoencoder.py                      # settings from args_two_stage.py (Stage1)
    python train_autoencoder.py --modality=ir --epochs=2
    python train_autoencoder.py --demo               # synthetic data, narrow model, a few minutes on a CPU

Writes out_root/autoencoder/auto_encoder_epoch_N_{ir,vi}.model and loss/loss_data_autoencoder_{ir,vi}_eK.mat.
"""
import sys

from args_two_stage import Stage1
from cli.entry import run_main
from cli.training_start import INTERRUPTED, settings
from training.runtime import announce, start_runtime
from training.stages import MODALITIES, stage1_job
from training.trainer import train
from utils.errors import CrossFuseError


def main(argv: list[str]) -> None:
    config = settings(Stage1, argv, __doc__)
    if config.images and config.modality == "both":
        raise CrossFuseError("--images is one modality's folder: give --modality=ir or --modality=vi with it")
    runtime = start_runtime(config)
    announce("Stage 1: autoencoders", config, runtime)
    modalities = MODALITIES if config.modality == "both" else (config.modality,)
    for i, modality in enumerate(modalities):
        job = stage1_job(config, modality)
        job.later = len(modalities) - 1 - i  # the VIS autoencoder after the IR one, in the time left
        train(job, config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
