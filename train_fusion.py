"""Stage 2 of the paper's two-stage training: the CAM and fusion decoder on frozen stage-1 encoders.

    python train_fusion.py                  # settings from args_two_stage.py (Stage2)
    python train_fusion.py --epochs=2 --reference=path/to/released/models
    python train_fusion.py --demo

The encoders stay in eval mode without gradient; one Adam trains the fusion network. Writes
out_root/transfuse/fusetrans_epoch_N.model (a complete model: fuse.py loads it alone) and
loss/loss_data_trans_eK.mat.
"""
import sys
from pathlib import Path

import torch

from args_two_stage import Stage2
from cli.entry import INTERRUPTED, run_main, settings
from formats import run_layout
from formats.checkpoint import find_reference, latest_epoch_file, load_encoder
from net.encoder import Encoder
from net.model import CrossFuse, FusionNet
from training.config import model_config
from training.jobs import encoder_widths, fusion_job
from training.runtime import announce, start_runtime
from training.trainer import train
from utils.errors import CrossFuseError


def latest_autoencoder(folder: Path, modality: str) -> Path:
    path = latest_epoch_file(folder, rf"auto_encoder_epoch_(\d+)_{modality}\.model")
    if path is None:
        raise CrossFuseError(f"{folder}: no auto_encoder_epoch_N_{modality}.model; run train_autoencoder.py first "
                             "(or set --ir_encoder/--vi_encoder or --reference)")
    return path


def stage1_encoders(config: Stage2) -> tuple[Encoder, Encoder, list[Path]]:
    """The frozen encoders: given files, the paper's released ones, or stage 1's latest epoch."""
    if config.reference:
        ir, vi, _ = find_reference(config.reference)
    else:
        folder = run_layout.run_dir(config.out_root, run_layout.STAGE1)
        ir = Path(config.ir_encoder) if config.ir_encoder else latest_autoencoder(folder, "ir")
        vi = Path(config.vi_encoder) if config.vi_encoder else latest_autoencoder(folder, "vi")
    swap = config.allow_other_modality
    return load_encoder(ir, "ir", swap), load_encoder(vi, "vi", swap), [ir, vi]


def fusion_model(config: Stage2, ir: Encoder, vi: Encoder, sources: tuple[Path, Path] | None = None
                 ) -> CrossFuse:
    """A fresh fusion network sized to the encoders, frozen encoders attached."""
    cfg = model_config(config, **encoder_widths(ir, vi, sources or ("IR", "VIS")))
    return CrossFuse.from_parts(ir, vi, FusionNet(cfg), frozen_encoders=True)


def main(argv: list[str]) -> None:
    config = settings(Stage2, argv, __doc__)
    runtime = start_runtime(config)
    announce("Stage 2: fusion network on frozen encoders", config, runtime)
    ir, vi, sources = stage1_encoders(config)
    torch.manual_seed(config.seed)
    model = fusion_model(config, ir, vi, tuple(sources))
    meta = {"approach": run_layout.TWO_STAGE, "encoders": [str(s) for s in sources]}
    job = fusion_job(config, model, runtime.device, run_layout.TWO_STAGE, "Stage 2", meta, save_encoders=False)
    train(job, config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
