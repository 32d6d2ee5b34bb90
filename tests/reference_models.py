"""Models loaded with the reference-layout weights of ../shared/reference/official_weights.py."""
import importlib.util
from pathlib import Path

from formats.reference import from_reference
from net.encoder import AutoEncoder
from net.model import CrossFuse, FusionNet


def official_weights(reference_dir: Path):
    """The reference's weight builder module (imported from ../shared, never copied)."""
    spec = importlib.util.spec_from_file_location("official_weights", reference_dir / "official_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_parts(reference_dir: Path) -> tuple[AutoEncoder, AutoEncoder, FusionNet]:
    ow = official_weights(reference_dir)
    ir = from_reference(ow.official_state_dict("autoencoder", ow.SEEDS["ir"]), "autoencoder")
    vi = from_reference(ow.official_state_dict("autoencoder", ow.SEEDS["vi"]), "autoencoder")
    fusion = from_reference(ow.official_state_dict("fusion", ow.SEEDS["fusion"]), "fusion")
    return ir, vi, fusion


def reference_crossfuse(reference_dir: Path, frozen_encoders: bool = False) -> CrossFuse:
    ir, vi, fusion = reference_parts(reference_dir)
    return CrossFuse.from_parts(ir.encoder, vi.encoder, fusion, frozen_encoders)
