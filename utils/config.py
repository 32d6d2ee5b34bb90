"""Hyperparameters as plain Python values (the args files), overridable from the command line.

    python train_end_to_end.py --epochs=2 --lr=1e-4 --amp

`--key=value` takes the type of the file's value; a bare `--flag` sets a boolean to True. Unknown
keys and values of the wrong type are rejected with a one-line message.
"""
import difflib
import json
from pathlib import Path
from typing import Any

from utils.atomic import atomic_write
from utils.errors import CrossFuseError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def defaults(args_class: type) -> dict[str, Any]:
    """The public class attributes of an args class, in file order."""
    return {k: v for k, v in vars(args_class).items() if not k.startswith("_") and not callable(v)}


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


def parse_overrides(config: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """A copy of config with each `--key=value` / `--flag` of argv applied."""
    config = dict(config)
    for arg in argv:
        if not arg.startswith("--"):
            raise CrossFuseError(f"{arg!r}: options are written --key=value (see --help)")
        key, has_value, text = arg[2:].partition("=")
        key = key.replace("-", "_")
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


def help_text(config: dict[str, Any], doc: str) -> str:
    return f"{doc.strip()}\n\nSettings (override with --key=value):\n{format_config(config)}"
