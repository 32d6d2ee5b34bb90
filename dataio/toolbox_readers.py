"""Image files read as a metric toolbox reads them, so metrics/profiles.py scores the numbers the
toolbox would see. A profile names its reader; read_as turns that name into the array.
"""
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dataio.images import read_gray


def _rgb(path: Path) -> np.ndarray | None:
    """RGB values of a colour image (None for gray ones); call after read_gray has validated the file."""
    with Image.open(path) as im:
        if im.mode in ("1", "L", "LA", "La", "I", "F") or im.mode.startswith("I;16"):
            return None
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def read_matlab(path: Path) -> np.ndarray:
    """uint8 gray as MATLAB's imread + rgb2gray gives it (rgb2gray's coefficients, rounded)."""
    gray = read_gray(path)
    rgb = _rgb(Path(path))
    if rgb is None:
        return gray
    y = rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def read_opencv(path: Path) -> np.ndarray:
    """float32 gray as cv2.imread + cvtColor(BGR2GRAY) on float32 + numpy.round (CDDFuse's reader)."""
    gray = read_gray(path)
    rgb = _rgb(Path(path))
    if rgb is None:
        return gray.astype(np.float32)
    rgb = rgb.astype(np.float32)
    coef = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(rgb @ coef).astype(np.float32)


READERS: dict[str, Callable[[Path], np.ndarray]] = {"pil": read_gray, "matlab": read_matlab, "opencv": read_opencv}
"""A profile's `reader` name -> the function that reads a file so: PIL's luma, MATLAB's, OpenCV's."""


def read_as(reader: str, path: Path) -> np.ndarray:
    """The image at `path` as the named reader (a metric profile's `reader`) gives it."""
    return READERS[reader](Path(path))
