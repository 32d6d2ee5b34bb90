"""Hyperparameters as plain Python values (the args files), overridable from the command line.

    python train_end_to_end.py --epochs=2 --lr=1e-4 --amp

`--key=value` takes the type of the file's value; a bare `--flag` sets a boolean to True. Unknown
keys, values of the wrong type and values outside a setting's range (RULES) are rejected with a
one-line message.
"""
import difflib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from net.config import FEATURE_NORMS, TEMPERATURES, ConfigError, ModelConfig
from utils.atomic import atomic_write
from utils.errors import CrossFuseError
from utils.settings import Settings, defaults, presets

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

Rule = tuple[Callable[[Any, dict[str, Any]], bool], str]  # (check(value, config), what is allowed)


def at_least(low: float) -> Rule:
    return (lambda v, _: math.isfinite(v) and v >= low), f"a number >= {low}"


def above(low: float) -> Rule:
    return (lambda v, _: math.isfinite(v) and v > low), f"a number > {low}"


def one_of(*choices: str) -> Rule:
    return (lambda v, _: v in choices), f"one of {', '.join(choices)}"


STRIDE = 8  # deep features are 1/8 of the input; a training image must hold at least one token
# The allowed values of every numeric or choice setting of the args files, checked once, here.
RULES: dict[str, Rule] = {
    "train_num": at_least(0), "workers": at_least(0), "seed": at_least(0), "preview_images": at_least(0),
    "image_size": ((lambda v, c: v >= STRIDE * c.get("patch", 2)), "at least 8 * patch (one token)"),
    "batch_size": at_least(1), "epochs": at_least(1), "log_every": at_least(1), "checkpoint_every": at_least(1),
    "lr": at_least(0), "lr_min": at_least(0), "lr_gamma": above(0),
    "lr_step_epochs": at_least(0), "weight_decay": at_least(0),
    "w_mse": at_least(0), "w_ssim": at_least(0), "w_int": at_least(0), "w_grad": at_least(0),
    "lr_schedule": one_of("step", "cosine"), "on_error": one_of("skip", "raise"),
    "modality": one_of("ir", "vi", "both"), "temperature": one_of(*TEMPERATURES),
    "feature_norm": one_of(*FEATURE_NORMS),
    **{f.name: at_least(1) for f in fields(ModelConfig) if f.type is int},  # widths, depths, tile, heads...
}


# Settings free of a range: paths and names, checked where they are used (a missing file is one line there;
# an unknown preset in with_preset, which knows each args class's presets).
FREE_TEXT = frozenset({"preset", "dataset", "images", "out_root", "device", "ir_encoder", "vi_encoder", "reference",
                       "test_dir", "init_from", "init_ir_encoder", "init_vi_encoder", "init_reference"})


def check_ranges(config: dict[str, Any]) -> dict[str, Any]:
    """Refuse any setting outside its RULES range, naming every offending key."""
    bad = [f"--{k}={config[k]!r} (expected {what})" for k, (ok, what) in RULES.items()
           if k in config and not ok(config[k], config)]
    if bad:
        raise CrossFuseError(f"setting out of range: {'; '.join(bad)}")
    return config


def with_preset(args_class: type, argv: list[str]) -> dict[str, Any]:
    """The args class's settings with the preset named by `--preset=NAME` in argv (the last one) applied.

    Order of precedence, lowest first: the file, the preset, then the command line's other settings.
    """
    config, named = defaults(args_class), presets(args_class)
    chosen = [a.partition("=")[2] for a in argv if a.startswith("--preset=")]
    name = chosen[-1] if chosen else config.get("preset", "reference")
    if name not in named:
        raise CrossFuseError(f"--preset={name}: unknown preset of {args_class.__name__} "
                             f"(expected one of {', '.join(named)})")
    config.update(named[name])
    if "preset" in config:
        config["preset"] = name
    return config


def _convert(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise CrossFuseError(f"--{key}={text}: expected true or false")
    if default is None or isinstance(default, str):
        return None if default is None and text.lower() in ("none", "") else text
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise CrossFuseError(f"--{key}={text}: expected {type(default).__name__} (default {default!r})") from None
    raise CrossFuseError(f"--{key}: values of type {type(default).__name__} cannot be set from the command line")


RENAMED = {"step": "log_every"}  # old setting name -> new; the old one still works, with a warning


def parse_overrides(config: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """A copy of config with each `--key=value` / `--flag` of argv applied."""
    config = dict(config)
    for arg in argv:
        if not arg.startswith("--"):
            raise CrossFuseError(f"{arg!r}: options are written --key=value (see --help)")
        key, has_value, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key in RENAMED and key not in config:
            print(f"warning: --{key} is deprecated, use --{RENAMED[key]}", file=sys.stderr)
            key = RENAMED[key]
        if key not in config:
            close = difflib.get_close_matches(key, config, n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise CrossFuseError(f"--{key}: unknown setting{hint}")
        if not has_value:
            if not isinstance(config[key], bool):
                raise CrossFuseError(f"--{key} needs a value: --{key}=VALUE")
            text = "true"
        config[key] = _convert(key, text, config[key])
    return config


def format_config(config: dict[str, Any]) -> str:
    width = max(map(len, config))
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in config.items())


def save_config(config: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda temp: temp.write_text(json.dumps(config, indent=2) + "\n"))


def help_text(config: dict[str, Any], doc: str, named: dict[str, dict[str, Any]]) -> str:
    lines = [f"  {name}: {', '.join(f'{k}={v!r}' for k, v in values.items()) or 'the values below'}"
             for name, values in named.items()]
    return (f"{doc.strip()}\n\nPresets (--preset=NAME, applied before the other --key=value):\n" + "\n".join(lines)
            + f"\n\nSettings (override with --key=value):\n{format_config(config)}")


def model_config(config: Settings, **overrides: Any) -> ModelConfig:
    """The ModelConfig fields present in a run's settings; a misfit is the suite's one-line error."""
    try:
        return ModelConfig.from_dict({**config.as_dict(), **overrides})
    except ConfigError as e:
        raise CrossFuseError(str(e)) from None
