"""End-to-end training: both encoders, the CAM and the decoder together, with one loss and one optimiser.

    python train_end_to_end.py              # settings from args_end_to_end.py; encoders from random weights
    python train_end_to_end.py --epochs=2 --lr=1e-4 --batch=4
    python train_end_to_end.py --init_from=models     # warm start: encoders from stage 1's latest epoch
    python train_end_to_end.py --demo

Every parameter is trainable and one Adam updates them all with the fusion loss. A cold run writes
out_root/end_to_end/end_to_end_fusion_epoch_N.model (a complete model), end_to_end_{ir,vi}_encoder_epoch_N.model
and loss/loss_data_end_to_end_eK.mat; a warm start (--init_from, --init_ir_encoder/--init_vi_encoder or
--init_reference) writes the same names under out_root/end_to_end_warm, so it never overwrites a cold
run, and its checkpoints record where the encoders came from. Log lines carry the 🔄 E2E prefix.
"""
import sys

from args_end_to_end import EndToEnd
from cli.entry import run_main
from cli.training_start import INTERRUPTED, settings
from training.runtime import announce, start_runtime
from training.stages import END_TO_END, WARM_START, fusion_job, warm_start_files
from training.trainer import train


def main(argv: list[str]) -> None:
    config = settings(EndToEnd, argv, __doc__)
    runtime = start_runtime(config)
    files = warm_start_files(config)
    announce("End-to-end training" + (f", warm start from {files[0]}, {files[1]}" if files else ""), config, runtime)
    train(fusion_job(WARM_START if files else END_TO_END, config, runtime.device, files), config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
