"""This suite's `.model` files, and finding/loading weights for inference.

Every file this suite writes is a dict {"format", "kind", "config", "state_dict", ...meta}, kind one
of "autoencoder" (stage 1), "encoder" (an end-to-end encoder) or "crossfuse" (a complete fusion
model: both encoders, CAM and decoder, so a fusion file alone is enough to fuse). Files in the
reference's layout (plain state dicts) are recognised and converted through formats.reference.
"""
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from formats.reference import from_reference
from net.config import ConfigError, ModelConfig
from net.encoder import Encoder
from net.model import CrossFuse, FusionNet
from utils.atomic import atomic_save
from utils.errors import CrossFuseError

FORMAT = "crossfuse-suite/1"
STATE_FORMAT = "crossfuse-train-state/1"  # training_state_<job>.pt: what --resume continues from
SUITE_KINDS = ("autoencoder", "encoder", "crossfuse")


@dataclass
class Checkpoint:
    """A `.model` file as read: kind "reference-autoencoder"/"reference-fusion" or one of SUITE_KINDS."""

    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    config: ModelConfig | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> bool:
    """True for what torch.load(weights_only=True) reads back: numbers, strings, lists and dicts of them."""
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def save_model(path: str | Path, module: nn.Module, kind: str, config: ModelConfig | None = None,
               **meta: Any) -> Path:
    """Write a suite `.model` file atomically; meta holds plain values only (epoch, approach, modality...).

    Plain values are checked here because a pickled object in the file would make it unreadable by
    read_checkpoint, which loads with weights_only=True.
    """
    if kind not in SUITE_KINDS:
        raise ValueError(f"kind must be one of {SUITE_KINDS}")
    cfg = config if config is not None else module.cfg
    bad = [k for k, v in meta.items() if k in ("format", "kind", "state_dict") or not _plain(v)]
    if bad:
        raise ValueError(f"save_model: metadata {bad} must be plain values and not reserved names")
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return atomic_save({"format": FORMAT, "kind": kind, "config": cfg.to_dict(), "state_dict": state, **meta}, path)


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CrossFuseError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if is_training_state(path):
            raise CrossFuseError(f"{path}: a training-state file (what --resume continues from), not a model; give "
                                 "the run's folder or one of its .model files") from None
        raise CrossFuseError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("kind") not in SUITE_KINDS or not isinstance(obj.get("state_dict"), dict):
            raise CrossFuseError(f"{path}: suite checkpoint of unknown kind {obj.get('kind')!r}")
        meta = {k: v for k, v in obj.items() if k not in ("format", "kind", "config", "state_dict")}
        try:
            config = ModelConfig.from_dict(obj["config"])
        except ConfigError as e:
            raise CrossFuseError(str(e)) from None
        return Checkpoint(path, obj["kind"], obj["state_dict"], config, meta)
    if isinstance(obj, dict) and "format" in obj:
        raise CrossFuseError(f"{path}: unknown checkpoint format {obj['format']!r} (a training-state file?)")
    if isinstance(obj, dict) and "fea_encoder1.conv1.conv2d.0.weight" in obj:
        return Checkpoint(path, "reference-autoencoder", obj)
    if isinstance(obj, dict) and "decoder_fusion.conv1.conv2d.0.weight" in obj:
        return Checkpoint(path, "reference-fusion", obj)
    raise CrossFuseError(f"{path}: neither a CrossFuse reference checkpoint nor one of this suite")


def is_training_state(path: Path) -> bool:
    """Whether a file is one of the trainer's training states, told from its pickle's bytes without
    unpickling them (a safe load refuses such a file: it holds RNG states, not just weights)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            return any(STATE_FORMAT.encode() in archive.read(n) for n in pickles)
    except (OSError, zipfile.BadZipFile):
        return False


def _load(module: nn.Module, state: dict, path: Path) -> nn.Module:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise CrossFuseError(f"{path}: weights do not fit the model ({first})") from None
    return module


def recorded_modality(ckpt: Checkpoint) -> str | None:
    """"ir"/"vi" as the file records it (suite files) or names it (the reference's *_ir/*_vi.model)."""
    if ckpt.kind == "reference-autoencoder":
        found = re.search(r"_(ir|vi)\.model$", ckpt.path.name)
        return found.group(1) if found else None
    return ckpt.meta.get("modality")


def load_encoder(path: str | Path, modality: str, allow_other_modality: bool = False) -> Encoder:
    """An encoder from a stage-1 autoencoder, an end-to-end encoder or a complete model file.

    An encoder trained on the other modality is refused unless allow_other_modality: swapped IR and
    VIS files give a model that runs and fuses badly, with nothing else to tell.
    """
    ckpt = read_checkpoint(path)
    recorded = recorded_modality(ckpt)
    if recorded is not None and recorded != modality and not allow_other_modality:
        names = {"ir": "IR", "vi": "VIS"}
        raise CrossFuseError(f"{ckpt.path}: a {names[recorded]} encoder given as the {names[modality]} one "
                             "(swapped files?); allow it explicitly with the allow-other-modality option")
    if ckpt.kind == "reference-autoencoder":
        return from_reference(ckpt.state, "autoencoder", ckpt.path).encoder
    prefix = {"autoencoder": "encoder.", "encoder": "", "crossfuse": f"{modality}_encoder."}.get(ckpt.kind)
    if prefix is None:
        raise CrossFuseError(f"{ckpt.path}: a {ckpt.kind} checkpoint holds no encoder")
    state = {k[len(prefix):]: v for k, v in ckpt.state.items() if k.startswith(prefix)}
    return _load(Encoder(ckpt.config), state, ckpt.path)


def _check_compatible(encoder: Encoder, fusion: FusionNet, source: Path) -> None:
    widths = (encoder.cfg.shallow, encoder.cfg.deep)
    if widths != (fusion.cfg.shallow, fusion.cfg.deep):
        raise CrossFuseError(f"{source}: encoder widths (shallow, deep) = {widths} do not match the fusion "
                             f"network's ({fusion.cfg.shallow}, {fusion.cfg.deep}); checkpoints of different models")


def load_crossfuse(fusion: str | Path, ir_encoder: str | Path | None = None,
                   vi_encoder: str | Path | None = None, allow_other_modality: bool = False) -> CrossFuse:
    """A complete model from a fusion file plus, where it holds none (reference files), encoder files."""
    ckpt = read_checkpoint(fusion)
    if ckpt.kind == "crossfuse":
        model = _load(CrossFuse(ckpt.config), ckpt.state, ckpt.path)
    elif ckpt.kind == "reference-fusion":
        if ir_encoder is None or vi_encoder is None:
            raise CrossFuseError(f"{ckpt.path}: a reference fusion checkpoint needs the IR and VIS encoder files too")
        net = from_reference(ckpt.state, "fusion", ckpt.path)
        model = CrossFuse(net.cfg)
        model.fusion.load_state_dict(net.state_dict())
    else:
        raise CrossFuseError(f"{ckpt.path}: expected a fusion checkpoint, found {ckpt.kind}")
    for modality, path in (("ir", ir_encoder), ("vi", vi_encoder)):
        if path is not None:
            encoder = load_encoder(path, modality, allow_other_modality)
            _check_compatible(encoder, model.fusion, Path(path))
            setattr(model, f"{modality}_encoder", encoder)
    return model.eval()


def latest_epoch_file(folder: Path, pattern: str) -> Path | None:
    """The file matching `pattern` (a regex with one epoch group) with the highest epoch."""
    found = [(int(m.group(1) or 0), p) for p in folder.glob("*.model") if (m := re.fullmatch(pattern, p.name))]
    return max(found)[1] if found else None


def find_reference(folder: str | Path) -> tuple[Path, Path, Path]:
    """The three files of a released reference model in one folder: IR, VIS autoencoders and fusion."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CrossFuseError(f"{folder}: reference weights folder not found")
    files = (latest_epoch_file(folder, r".*?(\d*)_ir\.model"), latest_epoch_file(folder, r".*?(\d*)_vi\.model"),
             latest_epoch_file(folder, r"fusetrans.*?(\d*)\.model"))
    for name, path in zip(("*_ir.model", "*_vi.model", "fusetrans*.model"), files, strict=True):
        if path is None:
            raise CrossFuseError(f"{folder}: no {name} file (expected the reference's three checkpoints)")
    return files


def find_trained(path: str | Path, epoch: int | None = None) -> Path:
    """The fusion `.model` of a training run: a file, an output folder, or `models/` holding one run."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CrossFuseError(f"{path}: model file or folder not found")
    n = r"(\d+)" if epoch is None else f"({epoch})"
    candidates = [p for folder in (path, path / "end_to_end", path / "transfuse") if folder.is_dir()
                  for p in [latest_epoch_file(folder, rf"end_to_end_fusion_epoch_{n}\.model"),
                            latest_epoch_file(folder, rf"fusetrans_epoch_{n}\.model")] if p is not None]
    if not candidates:
        which = "any epoch" if epoch is None else f"epoch {epoch}"
        raise CrossFuseError(f"{path}: no end_to_end_fusion_epoch_N.model or fusetrans_epoch_N.model for {which}")
    if len(candidates) > 1:
        raise CrossFuseError(f"{path}: holds several runs ({', '.join(str(c) for c in candidates)}); name one")
    return candidates[0]
