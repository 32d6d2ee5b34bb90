"""End-to-end training: both encoders, the CAM and the decoder together, with one loss and one optimiser.

    python train_end_to_end.py              # settings from args_end_to_end.py; encoders from random weights
    python train_end_to_end.py --epochs=2 --lr=1e-4
    python train_end_to_end.py --init_from=models     # warm start: encoders from stage 1's latest epoch
    python train_end_to_end.py --demo

Every parameter is trainable and one Adam updates them all with the fusion loss. A cold run writes
out_root/end_to_end/end_to_end_fusion_epoch_N.model (a complete model), end_to_end_{ir,vi}_encoder_epoch_N.model
and loss/loss_data_end_to_end_eK.mat; a warm start (--init_from, --init_ir_encoder/--init_vi_encoder or
--init_reference) writes the same names under out_root/end_to_end_warm, so it never overwrites a cold
run, and its checkpoints record where the encoders came from. Log lines carry the 🔄 E2E prefix.
"""
import sys
from pathlib import Path

import torch

from args_end_to_end import EndToEnd
from cli.entry import INTERRUPTED, run_main, settings
from formats import run_layout
from formats.checkpoint import find_reference, load_encoder
from net.model import CrossFuse, FusionNet
from training.config import model_config
from training.jobs import encoder_widths, fusion_job
from training.runtime import announce, start_runtime
from training.trainer import Job, train
from utils.errors import CrossFuseError

COLD, WARM = "end-to-end", "end-to-end, warm start"


def warm_start_sources(config: EndToEnd) -> list[Path]:
    """The IR and VIS encoder files a warm start begins from; [] for a cold start."""
    files = [config.init_ir_encoder, config.init_vi_encoder]
    given = [bool(config.init_from), bool(config.init_reference), any(files)]
    if sum(given) > 1:
        raise CrossFuseError("give one of --init_from, --init_reference or --init_ir_encoder/--init_vi_encoder")
    if config.init_reference:
        return list(find_reference(config.init_reference)[:2])
    if config.init_from:
        folder = Path(config.init_from)
        if not folder.is_dir():
            raise CrossFuseError(f"--init_from={folder}: stage-1 output folder not found")
        return [run_layout.latest_stage1(folder, m) for m in run_layout.MODALITIES]
    if any(files) and not all(files):
        raise CrossFuseError("--init_ir_encoder and --init_vi_encoder go together")
    return [Path(f) for f in files if f]


def build_model(config: EndToEnd, sources: list[Path]) -> CrossFuse:
    """A fresh model; with sources, its encoders are those files' (their widths win) and stay trainable."""
    if not sources:
        return CrossFuse(model_config(config))
    ir, vi = (load_encoder(path, m) for path, m in zip(sources, run_layout.MODALITIES, strict=True))
    return CrossFuse.from_parts(ir, vi, FusionNet(model_config(config, **encoder_widths(ir, vi, sources))))


def end_to_end_job(config: EndToEnd, model: CrossFuse, device: torch.device,
                   sources: list[Path] | None = None) -> Job:
    """Every part trains; a warm start writes its own folder and its files record where the encoders came from."""
    meta = {"approach": WARM if sources else COLD}
    if sources:
        meta["encoders_from"] = [str(s) for s in sources]
    approach = run_layout.WARM_START if sources else run_layout.END_TO_END
    title = "🔄 E2E" + (" (warm start)" if sources else "")
    return fusion_job(config, model, device, approach, title, meta, save_encoders=True)


def main(argv: list[str]) -> None:
    config = settings(EndToEnd, argv, __doc__)
    runtime = start_runtime(config)
    sources = warm_start_sources(config)
    announce("End-to-end training" + (f", warm start from {sources[0]}, {sources[1]}" if sources else ""),
             config, runtime)
    torch.manual_seed(config.seed)
    model = build_model(config, sources)
    train(end_to_end_job(config, model, runtime.device, sources), config, runtime)


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
