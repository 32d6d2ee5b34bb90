"""Conversion between the reference CrossFuse checkpoints and this suite's modules, both ways.

The reference saves plain state dicts: one autoencoder per modality (`auto_encoder_epoch_N_ir.model`,
`..._vi.model`) and the fusion network (`fusetrans_epoch_N.model`). This module is the only place
that knows their key names.
"""
import re
from pathlib import Path

import torch

from net.config import ConfigError, ModelConfig
from net.encoder import AutoEncoder
from net.model import FusionNet
from utils.errors import CrossFuseError

# (our key pattern, reference key template); patterns are matched against our full key.
_AUTOENCODER_RULES = [
    (r"encoder\.shallow\.conv\.(.+)", r"fea_encoder1.conv1.conv2d.0.\1"),
    (r"encoder\.dense1\.layers\.(\d+)\.conv\.(.+)", r"fea_encoder1.dense_blocks.0.dense_conv\1.conv2d.0.\2"),
    (r"encoder\.dense1\.adjust\.conv\.(.+)", r"fea_encoder1.dense_blocks.0.adjust_conv.conv2d.0.\1"),
    (r"encoder\.dense2\.layers\.(\d+)\.conv\.(.+)", r"fea_encoder1.dense_blocks.2.dense_conv\1.conv2d.0.\2"),
    (r"encoder\.dense2\.adjust\.conv\.(.+)", r"fea_encoder1.dense_blocks.2.adjust_conv.conv2d.0.\1"),
    (r"decoder\.conv1\.conv\.(.+)", r"recon_decoder1.conv1.conv2d.0.\1"),
    (r"decoder\.conv2\.conv\.(.+)", r"recon_decoder1.conv_block.0.conv2d.0.\1"),
    (r"decoder\.conv3\.conv\.(.+)", r"recon_decoder1.conv_block.2.conv2d.0.\1"),
    (r"decoder\.out\.conv\.(.+)", r"recon_decoder1.conv_last.conv2d.0.\1"),
]

_CAM = "cross_atten_block."
_FUSION_RULES = [
    (r"cam\.self([12])_ir\.blocks\.(\d+)\.(norm1|norm2|qkv|proj|mlp\.fc1|mlp\.fc2)\.(.+)",
     _CAM + r"self_atten_block\1.self_atten1.blocks.\2.{\3}.\4"),
    (r"cam\.self([12])_vi\.blocks\.(\d+)\.(norm1|norm2|qkv|proj|mlp\.fc1|mlp\.fc2)\.(.+)",
     _CAM + r"self_atten_block\1.self_atten2.blocks.\2.{\3}.\4"),
    (r"cam\.cross_ir\.blocks\.(\d+)\.(norm1|norm2|q|k|v|proj|mlp\.fc1|mlp\.fc2)\.(.+)",
     _CAM + r"cross_atten_block.cross_atten1.blocks.\1.{\2}.\3"),
    (r"cam\.cross_vi\.blocks\.(\d+)\.(norm1|norm2|q|k|v|proj|mlp\.fc1|mlp\.fc2)\.(.+)",
     _CAM + r"cross_atten_block.cross_atten2.blocks.\1.{\2}.\3"),
    (r"cam\.cross_ir\.norm\.(.+)", _CAM + r"cross_atten_block.cross_atten1.norm.\1"),
    (r"cam\.cross_vi\.norm\.(.+)", _CAM + r"cross_atten_block.cross_atten2.norm.\1"),
    (r"decoder\.conv1\.(conv|bn)\.(.+)", r"decoder_fusion.conv1.conv2d.{\1}.\2"),
    (r"decoder\.conv2\.(conv|bn)\.(.+)", r"decoder_fusion.conv_block.0.conv2d.{\1}.\2"),
    (r"decoder\.conv3\.(conv|bn)\.(.+)", r"decoder_fusion.conv_block.2.conv2d.{\1}.\2"),
    (r"decoder\.conv4\.(conv|bn)\.(.+)", r"decoder_fusion.conv_block.4.conv2d.{\1}.\2"),
    (r"decoder\.out\.(conv|bn)\.(.+)", r"decoder_fusion.conv_last.conv2d.{\1}.\2"),
]
# Sub-module names that differ between the two layouts (the {...} parts of the templates).
_PART_NAMES = {"qkv": "attn.qkv", "proj": "attn.proj", "q": "attn.q_linear", "k": "attn.k_linear",
               "v": "attn.v_linear", "conv": "0", "bn": "1"}

KINDS = ("autoencoder", "fusion")


def _reference_key(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, template in rules:
        m = re.fullmatch(pattern, key)
        if m:
            name = m.expand(template)
            return re.sub(r"\{([^}]+)\}", lambda p: _PART_NAMES.get(p.group(1), p.group(1)), name)
    return None


def _key_map(model: torch.nn.Module, kind: str) -> dict[str, str]:
    """reference key -> our key, for every entry of our module's state dict that the reference stores."""
    rules = _AUTOENCODER_RULES if kind == "autoencoder" else _FUSION_RULES
    mapping = {}
    for key in model.state_dict():
        ref = _reference_key(key, rules)
        if ref is not None:
            mapping[ref] = key
    return mapping


def _unused_fusion_entries(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Keys the reference fusion checkpoint stores but never uses (or fixes): kept for round trips."""
    d, s = cfg.embed, cfg.shallow
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    extra = {
        "conv_gra.weight": lap.expand(s, s, 3, 3).clone(),
        "decoder_fusion.weight.conv_sh.weight": torch.full((s, s, 3, 3), 1.0 / 9),
        "decoder_fusion.weight.conv_de.weight": torch.full((cfg.deep, cfg.deep, 3, 3), 1.0 / 9),
    }
    for stage in (1, 2):
        for m in (1, 2):
            extra[f"{_CAM}self_atten_block{stage}.self_atten{m}.norm.weight"] = torch.ones(d)
            extra[f"{_CAM}self_atten_block{stage}.self_atten{m}.norm.bias"] = torch.zeros(d)
    for m in (1, 2):
        for j in range(cfg.cross_depth):
            extra[f"{_CAM}cross_atten_block.cross_atten{m}.blocks.{j}.attn.qkv.weight"] = torch.zeros(3 * d, d)
            extra[f"{_CAM}cross_atten_block.cross_atten{m}.blocks.{j}.attn.qkv.bias"] = torch.zeros(3 * d)
    return extra


def _count(state: dict, pattern: str) -> int:
    return sum(1 for key in state if re.fullmatch(pattern, key))


def infer_config(state: dict[str, torch.Tensor], kind: str, heads: int = 16, **overrides) -> ModelConfig:
    """Widths from a reference state dict's shapes (heads and tile cannot be read off the weights)."""
    try:
        if kind == "autoencoder":
            conv1 = state["fea_encoder1.conv1.conv2d.0.weight"]
            growth = state["fea_encoder1.dense_blocks.0.dense_conv0.conv2d.0.weight"].shape[0]
            layers = _count(state, r"fea_encoder1\.dense_blocks\.0\.dense_conv\d+\.conv2d\.0\.weight")
            deep = state["fea_encoder1.dense_blocks.0.adjust_conv.conv2d.0.weight"].shape[0]
            decoder = state["recon_decoder1.conv1.conv2d.0.weight"].shape[0]
            values = dict(shallow=conv1.shape[0], growth=growth, dense_layers=layers, deep=deep, decoder=decoder)
        else:
            deep = state["decoder_fusion.conv1.conv2d.0.weight"].shape[1]
            embed = state[f"{_CAM}self_atten_block1.self_atten1.blocks.0.norm1.weight"].shape[0]
            hidden = state[f"{_CAM}self_atten_block1.self_atten1.blocks.0.mlp.fc1.weight"].shape[0]
            values = dict(
                deep=deep,
                decoder=state["decoder_fusion.conv1.conv2d.0.weight"].shape[0],
                shallow=state["decoder_fusion.conv_last.conv2d.0.weight"].shape[1],
                patch=round((embed / deep) ** 0.5),
                mlp_ratio=hidden // embed,
                self_depth=_count(state, r".+\.self_atten_block1\.self_atten1\.blocks\.\d+\.norm1\.weight"),
                cross_depth=_count(state, r".+\.cross_atten1\.blocks\.\d+\.norm1\.weight"),
            )
    except (KeyError, AttributeError, IndexError) as e:
        raise CrossFuseError(f"not a reference {kind} checkpoint: missing key {e}") from None
    try:
        return ModelConfig(**{**values, "heads": heads, **overrides})
    except ConfigError as e:
        raise CrossFuseError(str(e)) from None


def to_reference(module: AutoEncoder | FusionNet) -> dict[str, torch.Tensor]:
    """Our AutoEncoder or FusionNet as a reference-layout state dict (unused keys filled)."""
    kind = "autoencoder" if isinstance(module, AutoEncoder) else "fusion"
    ours = module.state_dict()
    out = {ref: ours[key].detach().clone() for ref, key in _key_map(module, kind).items()}
    if kind == "fusion":
        out.update(_unused_fusion_entries(module.cfg))
    return out


def from_reference(state: dict, kind: str, source: str | Path = "checkpoint",
                   cfg: ModelConfig | None = None) -> AutoEncoder | FusionNet:
    """Build our module from a reference state dict, checking every key and shape.

    Raises CrossFuseError naming the file and the first missing, extra or misshapen key.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CrossFuseError(f"{source}: not a reference CrossFuse state dict")
    other = "fusion" if kind == "autoencoder" else "autoencoder"
    marker = "fea_encoder1.conv1.conv2d.0.weight" if other == "autoencoder" else "decoder_fusion.conv1.conv2d.0.weight"
    if marker in state:
        raise CrossFuseError(f"{source}: this is a reference {other} checkpoint, expected a {kind} one")
    try:
        cfg = cfg or infer_config(state, kind)
    except CrossFuseError as e:
        raise CrossFuseError(f"{source}: {e}") from None
    module = AutoEncoder(cfg) if kind == "autoencoder" else FusionNet(cfg)
    mapping = _key_map(module, kind)
    expected = dict(mapping)
    unused = _unused_fusion_entries(cfg) if kind == "fusion" else {}
    for ref in expected:
        if ref not in state:
            raise CrossFuseError(f"{source}: missing key {ref!r}")
    for ref in state:
        if ref not in expected and ref not in unused:
            raise CrossFuseError(f"{source}: unexpected key {ref!r}")
    ours = module.state_dict()
    for ref, key in mapping.items():
        if state[ref].shape != ours[key].shape:
            raise CrossFuseError(f"{source}: key {ref!r} has shape {tuple(state[ref].shape)}, "
                                 f"expected {tuple(ours[key].shape)}")
    for ref, fixed in unused.items():
        if ref.startswith("decoder_fusion.weight.") and ref in state and not torch.allclose(state[ref], fixed):
            raise CrossFuseError(f"{source}: fixed kernel {ref!r} is not the 3x3 box mean the model assumes")
    module.load_state_dict({key: state[ref] for ref, key in mapping.items()}, strict=False)
    return module
