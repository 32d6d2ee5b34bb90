"""Everything the suite knows about a setting, in one table, and the one way a run's settings are read.

    python train_end_to_end.py --epochs=2 --lr=1e-4 --batch=4 --amp

A run's values: its args file (args_two_stage.py, args_end_to_end.py), then its --preset's, then the
demo's (with --demo), then the command line's `--key=value` (the file's type; a bare `--flag` sets a
boolean). SETTINGS says, per setting, which values it may take, whether a resumed run may change it,
whether the comparison's fairness box compares it between arms, and whether study.py sets it itself;
a test keeps it in step with the args files. Unknown keys, wrong types and values out of range are one
line each.
"""
import difflib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dataio.images import parse_range
from net.config import DEEP_WEIGHTS, FEATURE_NORMS, OUTPUT_NORMS, TEMPERATURES, ConfigError, ModelConfig
from training.presets import DEMO, PRESETS, overrides
from utils.args_base import Settings, defaults
from utils.atomic import atomic_write
from utils.errors import CrossFuseError

S = TypeVar("S", bound=Settings)
Check = tuple[Callable[[Any, dict[str, Any]], bool], str]  # (is_allowed(value, all values), what is allowed)


def at_least(low: float) -> Check:
    return (lambda v, _: math.isfinite(v) and v >= low), f"a number >= {low}"


def above(low: float) -> Check:
    return (lambda v, _: math.isfinite(v) and v > low), f"a number > {low}"


def one_of(*choices: str) -> Check:
    return (lambda v, _: v in choices), f"one of {', '.join(choices)}"


def range_text() -> Check:
    """A value range as dataio.images.parse_range reads it, or empty."""
    def is_range(value: Any, _: dict[str, Any]) -> bool:
        try:
            parse_range(str(value))
        except CrossFuseError:
            return False
        return True
    return is_range, "LOW,HIGH with LOW < HIGH, or empty"


STRIDE = 8  # deep features are 1/8 of the input; a training image must hold at least one token
ONE_TOKEN: Check = ((lambda v, c: v >= STRIDE * c.get("patch", 2)), "at least 8 * patch (one token)")


@dataclass(frozen=True)
class Setting:
    """What the suite knows about one setting besides its default (which its args file holds)."""

    allowed: Check | None = None  # None: a path, name or flag, checked where it is used
    fixed: bool = False  # a resumed run must keep it: it decides the data order or what the weights mean
    fair: bool = False  # the comparison reports it when the arms differ in it
    by_study: bool = False  # study.py sets it for each run itself
    auto: bool = False  # "auto" is allowed besides a number


DATA = dict(fixed=True, fair=True)
MODEL = dict(allowed=at_least(1), fixed=True)  # widths, depths, tile, heads: what the saved weights mean
TRAINING = dict(fair=True)
MODEL_WIDTHS = ("shallow", "growth", "dense_layers", "deep", "decoder", "tile", "patch", "heads", "mlp_ratio",
                "self_depth", "cross_depth")
MODEL_SETTINGS = (*MODEL_WIDTHS, "temperature", "feature_norm", "cam_gate", "output_norm", "deep_weights")
"""The settings that build the network, each a net.config.ModelConfig field."""

SETTINGS: dict[str, Setting] = {
    "preset": Setting(fair=True),  # checked against training/presets.py when read
    # optimisation
    "epochs": Setting(at_least(1), **TRAINING),
    "lr": Setting(above(0), **TRAINING),
    "batch": Setting(at_least(1), **DATA),
    "weight_decay": Setting(at_least(0), **TRAINING),
    "lr_schedule": Setting(one_of("step", "cosine"), **TRAINING),
    "lr_step_epochs": Setting(at_least(0), **TRAINING),
    "lr_gamma": Setting(above(0), **TRAINING),
    "lr_min": Setting(at_least(0), **TRAINING),
    "warmup_epochs": Setting(at_least(0), **TRAINING),
    # data
    "dataset": Setting(**DATA),
    "images": Setting(**DATA),
    "modality": Setting(one_of("ir", "vi", "both"), fixed=True),
    "train_num": Setting(at_least(0), **DATA),
    "image_size": Setting(ONE_TOKEN, **DATA),
    "crop": Setting(**DATA),
    "hflip": Setting(**DATA),
    "vflip": Setting(**DATA),
    "cache": Setting(),
    "on_error": Setting(one_of("skip", "raise")),
    "workers": Setting(at_least(0), auto=True),
    "ir_range": Setting(range_text(), **DATA),
    "test_dir": Setting(),
    # losses
    "w_mse": Setting(at_least(0), **TRAINING),
    "w_ssim": Setting(at_least(0), **TRAINING),
    "w_int": Setting(at_least(0), **TRAINING),
    "w_grad": Setting(at_least(0), **TRAINING),
    # model (net.config.ModelConfig, which refuses a name it does not know: see MODEL_SETTINGS)
    **{name: Setting(**MODEL) for name in MODEL_WIDTHS},
    "temperature": Setting(one_of(*TEMPERATURES), fixed=True, fair=True),
    "feature_norm": Setting(one_of(*FEATURE_NORMS), fixed=True, fair=True),
    "cam_gate": Setting(fixed=True, fair=True),
    "deep_weights": Setting(one_of(*DEEP_WEIGHTS), fixed=True, fair=True),
    "output_norm": Setting(one_of(*OUTPUT_NORMS), fixed=True, fair=True),
    # where the encoders come from (stage 2, warm start)
    "ir_encoder": Setting(by_study=True),
    "vi_encoder": Setting(by_study=True),
    "reference": Setting(by_study=True),
    "init_from": Setting(by_study=True),
    "init_ir_encoder": Setting(by_study=True),
    "init_vi_encoder": Setting(by_study=True),
    "init_reference": Setting(by_study=True),
    "allow_other_modality": Setting(),
    # the run
    "out_root": Setting(by_study=True),
    "device": Setting(),
    "amp": Setting(fair=True),
    "compile": Setting(),
    "seed": Setting(at_least(0), fixed=True, by_study=True),
    "log_every": Setting(at_least(1)),
    "checkpoint_every": Setting(at_least(1)),
    "preview_images": Setting(at_least(0)),
    "tensorboard": Setting(),
    "resume": Setting(by_study=True),
    "overwrite": Setting(by_study=True),
    "demo": Setting(by_study=True),
}

RENAMED = {"step": "log_every", "batch_size": "batch"}  # old name -> new: still read, on the command line and on disk


def fixed_on_resume() -> set[str]:
    return {k for k, s in SETTINGS.items() if s.fixed}


def compared_between_arms() -> list[str]:
    return [k for k, s in SETTINGS.items() if s.fair]


def set_by_study() -> set[str]:
    return {k for k, s in SETTINGS.items() if s.by_study}


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A saved settings record (training state, loss file, config) with old setting names renamed."""
    return {RENAMED.get(k, k): v for k, v in record.items()}


# ------------------------------------------------------------------------------------------ reading

def read_settings(args_class: type[S], argv: list[str]) -> S:
    """The args file's values, then its --preset's, then the demo's (with --demo), then the command line's."""
    values = with_preset(args_class, argv)
    if parse_overrides(values, [a for a in argv if a.partition("=")[0] == "--demo"])["demo"]:
        values.update(overrides(DEMO, args_class))
    values = check_ranges(parse_overrides(values, argv))
    config = args_class(**values)
    if "deep" in values:  # the whole model is configured here: check how its widths fit together
        model_config(config)
    return config


def with_preset(args_class: type, argv: list[str]) -> dict[str, Any]:
    """The args class's values with the preset named by `--preset=NAME` in argv (the last one) applied.

    Order of precedence, lowest first: the file, the preset, then the command line's other settings.
    """
    values = defaults(args_class)
    chosen = [a.partition("=")[2] for a in argv if a.startswith("--preset=")]
    name = chosen[-1] if chosen else values["preset"]
    if name not in PRESETS:
        raise CrossFuseError(f"--preset={name}: unknown preset (expected one of {', '.join(PRESETS)})")
    return values | overrides(PRESETS[name], args_class) | {"preset": name}


def _convert(key: str, text: str, default: Any) -> Any:
    if SETTINGS.get(key, Setting()).auto and text == "auto":
        return text
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise CrossFuseError(f"--{key}={text}: expected true or false")
    try:
        if isinstance(default, int) or SETTINGS.get(key, Setting()).auto:
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "int" if isinstance(default, int) else "float"
        raise CrossFuseError(f"--{key}={text}: expected {kind} (default {default!r})") from None
    return text


def parse_overrides(values: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """A copy of values with each `--key=value` / `--flag` of argv applied (old names renamed, with a warning)."""
    values = dict(values)
    for arg in argv:
        if not arg.startswith("--"):
            raise CrossFuseError(f"{arg!r}: options are written --key=value (see --help)")
        key, has_value, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key in RENAMED and key not in values:
            print(f"warning: --{key} is an old name, use --{RENAMED[key]}", file=sys.stderr)
            key = RENAMED[key]
        if key not in values:
            close = difflib.get_close_matches(key, values, n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise CrossFuseError(f"--{key}: unknown setting{hint}")
        if not has_value:
            if not isinstance(values[key], bool):
                raise CrossFuseError(f"--{key} needs a value: --{key}=VALUE")
            text = "true"
        values[key] = _convert(key, text, values[key])
    return values


def _allowed(key: str, value: Any, values: dict[str, Any]) -> bool:
    spec = SETTINGS[key]
    if spec.auto and value == "auto":
        return True
    try:
        return spec.allowed[0](value, values)
    except TypeError:  # a string where a number belongs (an edited args file)
        return False


def check_ranges(values: dict[str, Any]) -> dict[str, Any]:
    """Refuse any value outside its setting's allowed range, naming every offending key."""
    bad = [f"--{k}={v!r} (expected {SETTINGS[k].allowed[1]}{' or auto' if SETTINGS[k].auto else ''})"
           for k, v in values.items() if SETTINGS.get(k, Setting()).allowed and not _allowed(k, v, values)]
    if bad:
        raise CrossFuseError(f"setting out of range: {'; '.join(bad)}")
    return values


def model_config(config: Settings, **widths: Any) -> ModelConfig:
    """The model settings present in a run's settings as a ModelConfig; a misfit is the suite's one-line error."""
    try:
        return ModelConfig.from_dict({**{k: v for k, v in config.as_dict().items() if k in MODEL_SETTINGS}, **widths})
    except ConfigError as e:
        raise CrossFuseError(str(e)) from None


# ------------------------------------------------------------------------------------------ showing

def format_config(config: dict[str, Any]) -> str:
    width = max(map(len, config))
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in config.items())


def save_config(config: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda temp: temp.write_text(json.dumps(config, indent=2) + "\n"))


def help_text(args_class: type, argv: list[str], doc: str) -> str:
    """The script's docstring, the presets as they apply to its args class, and the settings in force."""
    lines = [f"  {name}: {', '.join(f'{k}={v!r}' for k, v in overrides(sets, args_class).items()) or 'the file'}"
             for name, sets in PRESETS.items()]
    return (f"{doc.strip()}\n\nPresets (--preset=NAME, applied before the other --key=value):\n" + "\n".join(lines)
            + f"\n\nSettings (override with --key=value):\n{format_config(with_preset(args_class, argv))}")
