"""Reading and writing the 8-bit grayscale images the fusion works on.

Every reader turns PIL's many failure modes (missing file, truncated JPEG, unknown format) into one
CrossFuseError line naming the file, so a bad image in a 20000-pair set is easy to find.
"""
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.atomic import atomic_write
from utils.errors import CrossFuseError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# what each suffix is written as: JPEG at high quality with full-resolution chroma
WRITE_FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
                 ".jpeg": ("JPEG", {"quality": 95, "subsampling": 0}), ".bmp": ("BMP", {}), ".tif": ("TIFF", {}),
                 ".tiff": ("TIFF", {})}

# Modes whose values do not fit in 8 bits: raw thermal cameras often store 16-bit counts.
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"}) | _HIGH_DEPTH_MODES
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def is_image_file(path: Path) -> bool:
    """True for a visible (not dot-prefixed) file with a recognised image suffix."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode an image, so truncation shows up here rather than later."""
    path = Path(path)
    if not path.exists():
        raise CrossFuseError(f"{path}: no such file")
    if not path.is_file():
        raise CrossFuseError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()
            # Palette -> RGBA keeps the colours and avoids PIL's palette-transparency warning.
            image = im.convert("RGBA") if im.mode == "P" else im.copy()
    except _PIL_ERRORS as err:
        raise CrossFuseError(f"{path}: not a readable image ({_one_line(err)})") from err
    if image.width == 0 or image.height == 0:
        raise CrossFuseError(f"{path}: image is empty ({image.width}x{image.height})")
    return image


def _one_line(err: BaseException) -> str:
    """PIL messages sometimes span lines or repeat the path; the user-facing error must not."""
    if isinstance(err, UnidentifiedImageError):
        return "unknown format or corrupt header"
    return " ".join(str(err).split()) or type(err).__name__


def _stretch_to_uint8(image: Image.Image) -> np.ndarray:
    """Map a 16-bit/float image's own min..max range onto 0..255.

    Raw thermal counts occupy a narrow band of the 16-bit range; a fixed /257 would leave them
    nearly uniform gray, so each image is stretched by its own range instead.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def read_gray(path: str | Path) -> np.ndarray:
    """The image as uint8 H x W luma (PIL "L": 0.299R + 0.587G + 0.114B); alpha is ignored."""
    image = _open(path)
    if image.mode in _HIGH_DEPTH_MODES:
        return _stretch_to_uint8(image)
    return np.array(image.convert("L"), dtype=np.uint8)


def read_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header only: cheap enough to check a whole data set up front."""
    path = Path(path)
    if not path.is_file():
        raise CrossFuseError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except _PIL_ERRORS as err:
        raise CrossFuseError(f"{path}: not a readable image ({_one_line(err)})") from err
    if width == 0 or height == 0:
        raise CrossFuseError(f"{path}: image is empty ({width}x{height})")
    return height, width


def _as_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_stretch_to_uint8(image)).convert("RGB")
    return image.convert("RGB")


def read_ycbcr(path: str | Path) -> np.ndarray:
    """uint8 H x W x 3 YCbCr (PIL's JPEG conversion), used to put the colour back after fusing Y.

    PIL's Y here may differ by 1 from read_gray's luma, which uses a different rounding.
    """
    return np.array(_as_rgb(_open(path)).convert("YCbCr"), dtype=np.uint8)


def is_color(path: str | Path) -> bool:
    """True when the file has colour channels that actually differ (not gray stored as RGB)."""
    image = _open(path)
    if image.mode in _GRAY_MODES:
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))


def _save_atomic(path: str | Path, image: Image.Image) -> None:
    """Write an image atomically in the format its suffix names (a PNG when there is none)."""
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    if suffix not in WRITE_FORMATS:
        raise CrossFuseError(f"{path}: cannot write {suffix} images (use {', '.join(sorted(WRITE_FORMATS))})")
    fmt, options = WRITE_FORMATS[suffix]
    atomic_write(path, lambda temp: image.save(temp, format=fmt, **options))


def _check_array(array: np.ndarray, ndim: int, what: str) -> None:
    if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected a uint8 {what} array, got {array.dtype} with shape {array.shape}")


def write_gray(path: str | Path, image: np.ndarray) -> None:
    """Save a uint8 H x W array as an 8-bit grayscale PNG."""
    _check_array(image, 2, "H x W")
    _save_atomic(path, Image.fromarray(np.ascontiguousarray(image)))


def write_ycbcr_as_rgb(path: str | Path, ycbcr: np.ndarray) -> None:
    """Save a uint8 H x W x 3 YCbCr array as an 8-bit RGB PNG."""
    _check_array(ycbcr, 3, "H x W x 3")
    height, width = ycbcr.shape[:2]
    image = Image.frombytes("YCbCr", (width, height), np.ascontiguousarray(ycbcr).tobytes())
    _save_atomic(path, image.convert("RGB"))
