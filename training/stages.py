"""One table of the training stages: each stage's args class, script, output layout, model builder,
forward and loss. The training scripts, study.py, bench.py and the comparison all read it.

Stages keep one name each in code (stage1, stage2, end_to_end, warm_start); the files on disk keep
the reference's names (autoencoder/, transfuse/fusetrans_epoch_N.model, loss_data_trans_eK.mat, ...).
A study's arms are named after the approach they train: two-stage (stage 1, then stage 2),
end-to-end, and warm-start (stage 1, then end-to-end training from its encoders).
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from dataio.images import parse_range
from dataio.pairs import find_pairs
from dataio.training_data import make_dataset, preview_batch, training_images, training_pairs
from formats import run_layout
from formats.checkpoint import find_reference, load_encoder, save_model
from inference.files import fuse_pair, read_pair
from net.encoder import AutoEncoder, Encoder
from net.model import CrossFuse, FusionNet
from training.job import Batch, Job, LossFn, TestHook
from training.losses import fusion_loss, reconstruction_loss
from training.settings import model_config
from utils.args_base import Settings
from utils.errors import CrossFuseError

MODALITIES = run_layout.MODALITIES


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


# ------------------------------------------------------------------------------- where encoders start

def latest_stage1(folder: Path, modality: str) -> Path:
    """The last epoch's autoencoder of a stage-1 folder (`autoencoder/` or the output root holding it)."""
    if (folder / STAGE1.folder).is_dir():
        folder = folder / STAGE1.folder
    found = run_layout.autoencoders(folder, modality)
    if not found:
        raise CrossFuseError(f"{folder}: no auto_encoder_epoch_N_{modality}.model; run train_autoencoder.py first "
                             "(or name the encoder files)")
    return found[max(found)]


def stage1_encoder_files(config: Stage2) -> list[Path]:
    """Stage 2's frozen encoders: the given files, the paper's released ones, or stage 1's latest epoch."""
    if config.reference:
        return list(find_reference(config.reference)[:2])
    files = [config.ir_encoder, config.vi_encoder]
    return [Path(f) if f else latest_stage1(Path(config.out_root), m) for f, m in zip(files, MODALITIES, strict=True)]


def warm_start_files(config: EndToEnd) -> list[Path]:
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
        return [latest_stage1(folder, m) for m in MODALITIES]
    if any(files) and not all(files):
        raise CrossFuseError("--init_ir_encoder and --init_vi_encoder go together")
    return [Path(f) for f in files if f]


ENCODER_WIDTHS = ("shallow", "growth", "dense_layers", "deep")  # what stage 1 decides for the later stages


def encoder_widths(ir: Encoder, vi: Encoder, sources: Sequence[Path | str] = ("IR", "VIS")) -> dict[str, int]:
    """The widths two trained encoders share (a fusion model is built to them); different ones are an error."""
    widths = [{k: getattr(e.cfg, k) for k in ENCODER_WIDTHS} for e in (ir, vi)]
    if widths[0] != widths[1]:
        shown = " and ".join(f"{path} has {tuple(w.values())}" for path, w in zip(sources, widths, strict=True))
        raise CrossFuseError(f"the IR and VIS encoders have different widths ({', '.join(ENCODER_WIDTHS)}): "
                             f"{shown}; train both with one setting")
    return widths[0]


# ------------------------------------------------------------------------------------ model builders

def load_encoders(config: Settings, files: list[Path]) -> tuple[Encoder, Encoder]:
    swap = config.allow_other_modality
    ir, vi = (load_encoder(path, m, swap) for path, m in zip(files, MODALITIES, strict=True))
    return ir, vi


def build_autoencoder(config: Stage1, files: list[Path]) -> nn.Module:
    """Stage 1's model; its caller seeds (stage1_job, before the data set, as the reference's script)."""
    return AutoEncoder(model_config(config))


def build_stage2(config: Stage2, files: list[Path]) -> nn.Module:
    """A fresh fusion network sized to the frozen encoders (random frozen encoders without files: bench.py)."""
    if not files:
        torch.manual_seed(config.seed)
        return CrossFuse(model_config(config), frozen_encoders=True)
    ir, vi = load_encoders(config, files)
    torch.manual_seed(config.seed)
    cfg = model_config(config, **encoder_widths(ir, vi, files))
    return CrossFuse.from_parts(ir, vi, FusionNet(cfg), frozen_encoders=True)


def build_end_to_end(config: EndToEnd, files: list[Path]) -> nn.Module:
    """A fresh model; with files (a warm start) its encoders are those files' (their widths win), trainable."""
    torch.manual_seed(config.seed)
    if not files:
        return CrossFuse(model_config(config))
    ir, vi = load_encoders(config, files)
    return CrossFuse.from_parts(ir, vi, FusionNet(model_config(config, **encoder_widths(ir, vi, files))))


# ------------------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Stage:
    """One training stage: what trains it, where its files go, how its model is built and trained."""

    name: str
    args: type[Settings]
    script: str
    folder: str  # under out_root (the reference's name)
    job: str  # the trainer's job: loss_data_<job>_eK.mat, training_state_<job>.pt (stage 1: one per modality)
    fusion_file: str  # the fusion checkpoint with {epoch}; "" for stage 1
    approach: str  # recorded in its checkpoints
    title: str  # log-line prefix
    hint: str  # what to run when its files are missing
    encoder_files: Callable[[Any], list[Path]]  # the files its encoders start from ([]: random)
    build: Callable[[Any, list[Path]], nn.Module]  # (settings, encoder files) -> the model to train
    forward: Callable[[nn.Module, Batch], torch.Tensor]
    loss: Callable[[Any], LossFn]
    save_encoders: bool = False  # also write each trained encoder on its own

    def dir(self, out_root: str | Path) -> Path:
        return Path(out_root) / self.folder

    def fusion_path(self, folder: Path, epoch: int) -> Path:
        return folder / self.fusion_file.format(epoch=epoch)

    def checkpoints(self, folder: Path) -> dict[int, Path]:
        """Every saved fusion checkpoint of a run folder, by epoch (from 1)."""
        return run_layout.by_epoch(folder, run_layout.epoch_regex(self.fusion_file))

    def jobs(self) -> list[str]:
        return [self.job.format(modality=m) for m in MODALITIES] if "{modality}" in self.job else [self.job]

    @property
    def needs_stage1(self) -> bool:
        return self.name in ("stage2", "warm_start")


STAGE1 = Stage("stage1", Stage1, "train_autoencoder.py", "autoencoder", "autoencoder_{modality}", "", "stage 1",
               "Stage 1", "run train_autoencoder.py first", lambda config: [], build_autoencoder,
               reconstruction_forward, reconstruction_loss_fn)
STAGE2 = Stage("stage2", Stage2, "train_fusion.py", "transfuse", "trans", "fusetrans_epoch_{epoch}.model",
               "two-stage", "Stage 2", "run train_autoencoder.py and train_fusion.py first", stage1_encoder_files,
               build_stage2, fusion_forward, fusion_loss_fn)
END_TO_END = Stage("end_to_end", EndToEnd, "train_end_to_end.py", "end_to_end", "end_to_end",
                   "end_to_end_fusion_epoch_{epoch}.model", "end-to-end", "🔄 E2E", "run train_end_to_end.py first",
                   warm_start_files, build_end_to_end, fusion_forward, fusion_loss_fn, save_encoders=True)
WARM_START = Stage("warm_start", EndToEnd, "train_end_to_end.py", "end_to_end_warm", "end_to_end",
                   "end_to_end_fusion_epoch_{epoch}.model", "end-to-end, warm start", "🔄 E2E (warm start)",
                   "run train_end_to_end.py --init_from=STAGE1_FOLDER first", warm_start_files, build_end_to_end,
                   fusion_forward, fusion_loss_fn, save_encoders=True)
STAGES = {s.name: s for s in (STAGE1, STAGE2, END_TO_END, WARM_START)}
FUSION_STAGES = (STAGE2, END_TO_END, WARM_START)

# A study's arms: the approach each trains, by the stage that makes its fusion model.
TWO_STAGE_ARM, END_TO_END_ARM, WARM_START_ARM = "two-stage", "end-to-end", "warm-start"
ARMS = {TWO_STAGE_ARM: STAGE2, END_TO_END_ARM: END_TO_END, WARM_START_ARM: WARM_START}


# ------------------------------------------------------------------------------------------------ jobs

def fuse_test_set(config: Settings, out_dir: Path, device: torch.device) -> TestHook | None:
    """A callback fusing the configured test folder into out_dir/test/epoch_N, or None without one."""
    if not config.test_dir:
        return None
    pairs = find_pairs(Path(config.test_dir)).pairs
    ir_range = parse_range(config.ir_range, "ir_range")
    for pair in pairs:  # a bad test pair fails now, not after the first epoch's training
        read_pair(pair, ir_range=ir_range)

    def fuse_all(model: nn.Module, epoch: int) -> None:
        for pair in pairs:
            fuse_pair(model, pair, out_dir / "test" / f"epoch_{epoch}" / f"{pair.name}.png", device, gray=True,
                      ir_range=ir_range)

    return fuse_all


def mean_temperature(model: nn.Module) -> torch.Tensor:
    """Mean of the learned cross-attention temperatures (1 when fixed), on the device: read with the losses."""
    temps = model.fusion.cam.temperatures()
    return torch.cat([t.detach().flatten() for t in temps]).mean() if temps else next(model.parameters()).new_ones(())


def stage1_job(config: Stage1, modality: str) -> Job:
    """One modality's autoencoder on its images, writing autoencoder/auto_encoder_epoch_N_<modality>.model."""
    torch.manual_seed(config.seed)
    out_dir = STAGE1.dir(config.out_root)
    dataset = make_dataset(training_images(config, modality), config, modality)

    def save(m: nn.Module, epoch: int) -> list[Path]:
        path = run_layout.autoencoder_file(out_dir, modality, epoch)
        return [save_model(path, m, "autoencoder", epoch=epoch, modality=modality)]

    return Job(name=STAGE1.job.format(modality=modality), title=f"{STAGE1.title} {modality.upper()}", out_dir=out_dir,
               model=STAGE1.build(config, []), dataset=dataset, forward=STAGE1.forward, loss=STAGE1.loss(config),
               save_models=save, preview=preview_batch(dataset, config),
               outputs=lambda: sorted(run_layout.autoencoders(out_dir, modality).values()), unit="images")


def fusion_job(stage: Stage, config: Settings, device: torch.device, files: list[Path]) -> Job:
    """A fusion stage's job on the dataset's pairs, its model built from `files` (the encoders it starts from).

    Each epoch saves the complete model (and, for end-to-end, each trained encoder on its own), every
    file recording the approach and where its encoders came from.
    """
    out_dir = stage.dir(config.out_root)
    model = stage.build(config, files)
    dataset = make_dataset(training_pairs(config), config)
    meta: dict[str, Any] = {"approach": stage.approach}
    if files:
        meta["encoders" if stage is STAGE2 else "encoders_from"] = [str(f) for f in files]

    def save(m: nn.Module, epoch: int) -> list[Path]:
        files = [save_model(stage.fusion_path(out_dir, epoch), m, "crossfuse", epoch=epoch, **meta)]
        if stage.save_encoders:
            for modality in MODALITIES:
                encoder = getattr(m, f"{modality}_encoder")
                files.append(save_model(run_layout.encoder_file(out_dir, modality, epoch), encoder, "encoder",
                                        config=m.cfg, epoch=epoch, modality=modality, **meta))
        return files

    def outputs() -> list[Path]:
        encoders = [p for m in MODALITIES for p in run_layout.encoders(out_dir, m).values()]
        tests = sorted((out_dir / "test").glob("epoch_*/*")) if (out_dir / "test").is_dir() else []
        return sorted(stage.checkpoints(out_dir).values()) + encoders + tests

    return Job(name=stage.job, title=stage.title, out_dir=out_dir, model=model, dataset=dataset, forward=stage.forward,
               loss=stage.loss(config), save_models=save, temperature=mean_temperature,
               test=fuse_test_set(config, out_dir, device), preview=preview_batch(dataset, config), outputs=outputs)
