"""Atomic file writes: a crash mid-write never leaves a truncated checkpoint, loss file or image."""
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def temp_path(path: Path) -> Path:
    """A hidden, unique temporary name in the same folder (so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(temp) and rename the temporary file over `path`; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda temp: torch.save(obj, temp))
