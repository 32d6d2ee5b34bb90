"""Stage 2 of the paper's two-stage training: the CAM and fusion decoder on frozen stage-1 encoders.

    python train_fusion.py                  # settings from args_two_stage.py (Stage2)
    python train_fusion.py --epochs=2 --reference=path/to/released/models
    python train_fusion.py --demo

The encoders stay in eval mode without gradient; one Adam trains the fusion network. Writes
out_root/transfuse/fusetrans_epoch_N.model (a complete model: fuse.py loads it alone) and
loss/loss_data_trans_eK.mat.
"""
import sys

from args_two_stage import Stage2
from cli.entry import run_main
from cli.training_start import INTERRUPTED, settings
from training.runtime import announce, start_runtime
from training.stages import STAGE2, fusion_job
from training.trainer import train


def main(argv: list[str]) -> None:
    config = settings(Stage2, argv, __doc__)
    runtime = start_runtime(config)
    announce("Stage 2: fusion network on frozen encoders", config, runtime)
    train(fusion_job(STAGE2, config, runtime.device, STAGE2.encoder_files(config)), config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
