"""What an args class is: settings as class attributes with their defaults, presets, and a frozen instance
per run. Bottom layer (no suite imports but the error type), so the args files, the data package and
the training loop can all name the type."""
from typing import Any, ClassVar, Self

from utils.errors import CrossFuseError

CLASS_FACTS = ("presets", "demo_epochs")  # attributes of an args class that are not settings


class Settings:
    """Base of the args classes: the class body holds each setting's default (and so its type, for an
    editor or a type checker); an instance holds one run's values, frozen, so a misspelt or reassigned
    setting fails where it is written instead of passing silently through a dict."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # name -> the values it replaces
    demo_epochs: ClassVar[int] = 1  # epochs of the --demo schedule

    def __init__(self, **values: Any) -> None:
        known = defaults(type(self))
        unknown = sorted(values.keys() - known.keys())
        if unknown:
            raise CrossFuseError(f"{type(self).__name__}: unknown setting(s) {', '.join(unknown)}")
        self.__dict__.update(known, **values)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"settings are frozen: use .replace({key}=...) for a changed copy")

    def replace(self, **changes: Any) -> Self:
        return type(self)(**{**self.__dict__, **changes})

    def as_dict(self) -> dict[str, Any]:
        """Every setting in file order, as saved beside checkpoints and compared on resume."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def defaults(args_class: type) -> dict[str, Any]:
    """The settings of an args class and its bases, in file order (a subclass's value wins)."""
    config: dict[str, Any] = {}
    for cls in reversed(args_class.__mro__[:-1]):
        config.update({k: v for k, v in vars(cls).items()
                       if not k.startswith("_") and not callable(v) and k not in CLASS_FACTS})
    return config


def presets(args_class: type) -> dict[str, dict[str, Any]]:
    """Named presets of an args class, merged down its bases; "reference" is the file's own values."""
    merged: dict[str, dict[str, Any]] = {"reference": {}}
    for cls in reversed(args_class.__mro__[:-1]):
        for name, values in vars(cls).get("presets", {}).items():
            merged.setdefault(name, {}).update(values)
    return merged
