"""Image files read as a metric toolbox reads them, so metrics/profiles.py scores the numbers the
toolbox would see. A profile names its reader; read_as turns that name into the array. Grey and
high-depth images are read as dataio.images.read_gray reads them (by role: a fused image at its true
scale, a high-depth source stretched); the readers differ in how they turn colour into grey.
"""
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dataio.images import Range, Role, read_gray, read_rgb


def read_matlab(path: Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """uint8 gray as MATLAB's imread + rgb2gray gives it (rgb2gray's coefficients, rounded)."""
    gray = read_gray(path, role, ir_range)
    rgb = read_rgb(path)
    if rgb is None:
        return gray
    y = rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def read_opencv(path: Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """float32 gray as cv2.imread + cvtColor(BGR2GRAY) on float32 + numpy.round (CDDFuse's reader)."""
    gray = read_gray(path, role, ir_range)
    rgb = read_rgb(path)
    if rgb is None:
        return gray.astype(np.float32)
    rgb = rgb.astype(np.float32)
    coef = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(rgb @ coef).astype(np.float32)


READERS: dict[str, Callable[..., np.ndarray]] = {"pil": read_gray, "matlab": read_matlab, "opencv": read_opencv}
"""A profile's `reader` name -> the function that reads a file so: PIL's luma, MATLAB's, OpenCV's."""


def read_as(reader: str, path: Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """The image at `path` as the named reader (a metric profile's `reader`) gives it; `role` and `ir_range`
    as dataio.images.read_gray takes them."""
    return READERS[reader](Path(path), role, ir_range)
