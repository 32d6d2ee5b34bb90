"""What an args class is: settings as class attributes holding their defaults, and a frozen instance
per run. Bottom layer (no suite imports but the error type), so the args files, the data package and
the training loop can all name the type."""
from typing import Any, Self

from utils.errors import CrossFuseError


class Settings:
    """Base of the args classes: the class body holds each setting's default (and so its type, for an
    editor or a type checker); an instance holds one run's values, frozen, so a misspelt or reassigned
    setting fails where it is written instead of passing silently through a dict."""

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
    """The settings an args class declares, in file order."""
    return {k: v for k, v in vars(args_class).items() if not k.startswith("_") and not callable(v)}
