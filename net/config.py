"""Model hyperparameters in one place, so checkpoints can record what they were built with."""
from dataclasses import asdict, dataclass, fields
from typing import Any

TEMPERATURES = ("fixed", "block", "head")
FEATURE_NORMS = ("none", "standard")
OUTPUT_NORMS = ("minmax", "standard", "rule")
DEEP_WEIGHTS = ("signed", "magnitude")


class ConfigError(ValueError):
    """Settings that cannot build the network. Defined here so net/ depends on torch only; the
    suite's readers of settings and files (training.settings, formats) re-raise it as their one-line error."""


@dataclass(frozen=True)
class ModelConfig:
    """Widths and attention settings; the defaults are the paper's network."""

    shallow: int = 32  # channels of the full-resolution shallow features
    growth: int = 64  # channels each dense layer adds
    dense_layers: int = 3
    deep: int = 128  # channels of the 1/8-resolution deep features
    decoder: int = 64  # width of the decoders' middle layers
    tile: int = 32  # CAM tile side, in deep-feature pixels (inference)
    patch: int = 2  # token patch side
    heads: int = 16
    mlp_ratio: int = 4
    self_depth: int = 1  # transformer blocks per self-attention module
    cross_depth: int = 1  # blocks per cross-attention module
    temperature: str = "fixed"  # "fixed" (=1, the reference), or learnable per "block" or per "head"
    feature_norm: str = "none"  # "none" (the reference) or "standard": see net.model.standardise_pair
    cam_gate: bool = False  # True: the CAM output is scaled by a learned scalar starting at 0 (not in the reference)
    output_norm: str = "minmax"  # "minmax" (the reference's stretch), "standard" or "rule": see net.model.output_stats
    deep_weights: str = "signed"  # "signed" (the reference) or "magnitude": see net.model.FusionDecoder.deep_weights

    def __post_init__(self) -> None:
        small = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if f.type is int and getattr(self, f.name) < 1]
        if small:
            raise ConfigError(f"model settings must be at least 1: {', '.join(small)}")
        if self.temperature not in TEMPERATURES:
            raise ConfigError(f"temperature={self.temperature!r}: expected one of {', '.join(TEMPERATURES)}")
        if self.feature_norm not in FEATURE_NORMS:
            raise ConfigError(f"feature_norm={self.feature_norm!r}: expected one of {', '.join(FEATURE_NORMS)}")
        if self.output_norm not in OUTPUT_NORMS:
            raise ConfigError(f"output_norm={self.output_norm!r}: expected one of {', '.join(OUTPUT_NORMS)}")
        if self.deep_weights not in DEEP_WEIGHTS:
            raise ConfigError(f"deep_weights={self.deep_weights!r}: expected one of {', '.join(DEEP_WEIGHTS)}")
        if self.embed % self.heads:
            raise ConfigError(f"heads={self.heads} does not divide the token width {self.embed} (deep * patch^2)")
        if self.tile % self.patch:
            raise ConfigError(f"tile={self.tile} is not a multiple of patch={self.patch}")

    @property
    def embed(self) -> int:
        return self.deep * self.patch * self.patch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """The config of a saved or configured model; a name it does not know is refused, so a model
        setting misspelt where the settings, the args files and this class must agree cannot pass unused."""
        unknown = sorted(values.keys() - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown model setting(s) {', '.join(unknown)}")
        return cls(**values)
