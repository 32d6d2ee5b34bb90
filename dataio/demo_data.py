"""A small synthetic IR/VIS data set, so training and fusion can be tried without downloading KAIST.

Scenes mimic what makes fusion worthwhile: the VIS image carries texture and sharp edges, the IR
image carries smooth heat, and some objects exist in only one modality (a warm person hidden in a
dark VIS region, a painted pattern with no thermal signature).
"""
import json
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dataio.images import write_gray
from utils.atomic import atomic_write
from utils.errors import CrossFuseError

MARKER = ".complete"


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (numpy only)."""
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (radius, radius)
        windows = sliding_window_view(np.pad(image, padding, mode="edge"), 2 * radius + 1, axis=axis)
        image = windows @ taps
    return image


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _box(rng: np.random.Generator, size: int, low: float, high: float) -> tuple[slice, slice]:
    """A random axis-aligned rectangle whose sides are between low and high times the image size."""
    h, w = (int(size * rng.uniform(low, high)) for _ in range(2))
    top, left = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
    return slice(top, top + h), slice(left, left + w)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Stripes, a checkerboard or fine noise, zero-mean, amplitude about 50."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    kind = rng.integers(3)
    period = rng.uniform(3, 10)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        return 50 * np.sign(np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period))
    if kind == 1:
        return 50 * ((x // int(period) + y // int(period)) % 2 * 2 - 1.0)
    return rng.normal(0, 30, shape)


def _person(shape: tuple[int, int], cy: float, cx: float, height: float) -> np.ndarray:
    """Body ellipse plus head circle: the silhouette of a pedestrian."""
    body = _ellipse(shape, cy, cx, height * 0.35, height * 0.13)
    head = _ellipse(shape, cy - height * 0.45, cx, height * 0.1, height * 0.1)
    return body | head


def make_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (ir, vi) uint8 pair of size x size."""
    shape = (size, size)
    y, x = np.mgrid[:size, :size] / size
    angle = rng.uniform(0, 2 * np.pi)
    vi = 80 + 100 * (x * np.cos(angle) + y * np.sin(angle) + 1) / 3
    haze = _blur(rng.normal(0, 1, shape), size / 10)
    ir = 60 + 10 * haze / haze.std() + 20 * y

    for _ in range(rng.integers(2, 5)):  # buildings/signs: textured in VIS, mildly warm in IR
        rows, cols = _box(rng, size, 0.15, 0.4)
        vi[rows, cols] = rng.uniform(40, 220) + _texture(rng, vi[rows, cols].shape)
        if rng.random() < 0.6:
            block = np.zeros(shape)
            block[rows, cols] = rng.uniform(10, 30)
            ir += _blur(block, 2.0)

    rows, cols = _box(rng, size, 0.3, 0.45)  # a dark VIS region hiding a warm person
    vi[rows, cols] = rng.uniform(5, 20) + rng.normal(0, 2, vi[rows, cols].shape)
    warm = np.zeros(shape)
    height = (rows.stop - rows.start) * 0.7
    warm[_person(shape, (rows.start + rows.stop) / 2 + height * 0.05, (cols.start + cols.stop) / 2, height)] = 1

    for _ in range(rng.integers(1, 4)):  # pedestrians seen in both modalities
        height = size * rng.uniform(0.15, 0.3)
        silhouette = _person(shape, rng.uniform(0.3, 0.8) * size, rng.uniform(0.1, 0.9) * size, height)
        vi[silhouette] = rng.uniform(30, 100)
        warm[silhouette] = 1
    for _ in range(rng.integers(1, 3)):  # warm blobs (engines, animals) with no VIS edge
        warm[_ellipse(shape, *(rng.uniform(0.1, 0.9, 2) * size), *(rng.uniform(0.03, 0.07, 2) * size))] = 0.7

    ir = np.maximum(ir, _blur(warm, 1.5) * rng.uniform(190, 240))
    vi = vi + rng.normal(0, 3, shape)
    ir = ir + rng.normal(0, 2, shape)
    return _to_uint8(ir), _to_uint8(vi)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _is_complete(root: Path, settings: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == settings
    except (OSError, ValueError):
        return False


def make_demo_dataset(root: Path = Path("data/demo"), n_train: int = 48, n_test: int = 6, size: int = 128,
                      seed: int = 0) -> Path:
    """Generate root/{train,test}/{ir,vi}/NNN.png once; a marker written last makes reruns free."""
    root = Path(root)
    if size < 32 or n_train < 1 or n_test < 0:
        raise CrossFuseError(f"{root}: demo data needs size >= 32, n_train >= 1, n_test >= 0")
    settings = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
    if _is_complete(root, settings):
        return root
    (root / MARKER).unlink(missing_ok=True)
    for split, count, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        names = {f"{i:03d}.png" for i in range(count)}
        for modality in ("ir", "vi"):  # files from an earlier, larger run would mix into this one
            for stale in (root / split / modality).glob("[0-9]*.png"):
                if stale.stem.isdigit() and stale.name not in names:
                    stale.unlink()
        for i in range(count):
            ir, vi = make_scene(np.random.default_rng([seed, offset + i]), size)
            write_gray(root / split / "ir" / f"{i:03d}.png", ir)
            write_gray(root / split / "vi" / f"{i:03d}.png", vi)
    atomic_write(root / MARKER, lambda temp: temp.write_text(json.dumps(settings)))
    return root
