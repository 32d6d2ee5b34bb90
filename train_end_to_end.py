"""End-to-end training: both encoders, the CAM and the decoder together, from random initialisation.

    python train_end_to_end.py              # settings from args_end_to_end.py
    python train_end_to_end.py --epochs=2 --lr=1e-4
    python train_end_to_end.py --demo

Every parameter is trainable and one Adam updates them all with the fusion loss. Writes
out_root/end_to_end/end_to_end_fusion_epoch_N.model (a complete model), end_to_end_{ir,vi}_encoder_epoch_N.model
and loss/loss_data_end_to_end_eK.mat. Log lines carry the 🔄 E2E prefix.
"""
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from args_end_to_end import Args
from net.checkpoint import save_model
from net.model import CrossFuse
from utils.errors import run_main
from utils.trainer import (
    INTERRUPTED,
    Job,
    announce,
    fuse_test_set,
    fusion_forward,
    fusion_loss_fn,
    make_dataset,
    mean_temperature,
    model_config,
    preview_batch,
    settings,
    start_runtime,
    train,
    training_pairs,
)


def end_to_end_job(config: dict[str, Any], model: CrossFuse, device: torch.device) -> Job:
    out_dir = Path(config["out_root"]) / "end_to_end"
    dataset = make_dataset(training_pairs(config), config)

    def save(m: nn.Module, epoch: int) -> list[Path]:
        return [
            save_model(out_dir / f"end_to_end_fusion_epoch_{epoch}.model", m, "crossfuse", epoch=epoch,
                       approach="end-to-end"),
            save_model(out_dir / f"end_to_end_ir_encoder_epoch_{epoch}.model", m.ir_encoder, "encoder",
                       config=m.cfg, epoch=epoch, modality="ir", approach="end-to-end"),
            save_model(out_dir / f"end_to_end_vi_encoder_epoch_{epoch}.model", m.vi_encoder, "encoder",
                       config=m.cfg, epoch=epoch, modality="vi", approach="end-to-end"),
        ]

    return Job(name="end_to_end", title="🔄 E2E", out_dir=out_dir, model=model, dataset=dataset,
               forward=fusion_forward, loss=fusion_loss_fn(config), save_models=save,
               temperature=mean_temperature, test=fuse_test_set(config, out_dir, device),
               preview=preview_batch(dataset, config))


def main(argv: list[str]) -> None:
    config = settings(Args, argv, __doc__)
    runtime = start_runtime(config)
    announce("End-to-end training", config, runtime)
    torch.manual_seed(config["seed"])
    train(end_to_end_job(config, CrossFuse(model_config(config)), runtime.device), config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
