"""Reading and writing the 8-bit grayscale images the fusion works on: one reading of every image kind,
used by training, fuse.py, evaluate.py and the comparison alike (docs/images.md has the table).

Every reader turns PIL's many failure modes (missing file, truncated JPEG, unknown format) into one
CrossFuseError line naming the file, so a bad image in a 20000-pair set is easy to find.
"""
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

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
# A high-depth source is stretched over these percentiles of its pixels, so a few hot or dead pixels
# cannot decide how the rest looks; pixels exactly 0 (the fill registration and padding leave) are left out.
STRETCH_PERCENTILES = (0.1, 99.9)
# Mean spread between an RGB image's channels, in grey levels, above which an IR image is false colour
# (a palette such as jet spreads them by ~100; a grey image saved as a colour JPEG by ~1).
_FALSE_COLOUR_SPREAD = 8.0

Role = Literal["ir", "vi", "fused"]
Range = tuple[float, float]
_noted: set[str] = set()


def is_image_file(path: Path) -> bool:
    """True for a visible (not dot-prefixed) file with a recognised image suffix (symlinks followed)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def parse_range(text: str, what: str = "--ir-range") -> Range | None:
    """'LOW,HIGH' (a camera's fixed radiometric range) as two floats, or None for an empty text."""
    if not text.strip():
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CrossFuseError(f"{what}={text}: expected LOW,HIGH (two numbers, e.g. 7000,9000)") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise CrossFuseError(f"{what}={text}: expected finite LOW < HIGH")
    return low, high


def _note_once(kind: str, line: str) -> None:
    """Print a note or warning the first time its kind comes up in this process: a 20000-image data set
    must not print 20000 lines. Through tqdm, so a progress bar on screen stays whole."""
    if kind not in _noted:
        _noted.add(kind)
        tqdm.write(line, file=sys.stderr)


def _wide_gray_alpha(im: Image.Image) -> bool:
    """A 16-bit grey+alpha PNG, which PIL decodes keeping only each sample's high byte."""
    return im.format == "PNG" and len(im.tile) == 1 and im.tile[0].args == "LA;16B"


def _decode_wide_gray_alpha(im: Image.Image) -> Image.Image:
    """The grey channel of a 16-bit grey+alpha PNG at full depth (mode I;16); the alpha is dropped.

    Its 4 bytes per pixel (grey high, low, alpha high, low) decode as 8-bit RGBA, which PNG filters alike.
    """
    im.tile = [im.tile[0]._replace(args="RGBA")]
    im.load()
    raw = np.asarray(im, dtype=np.uint16)
    return Image.fromarray(raw[..., 0] * 256 + raw[..., 1])


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode an image upright (EXIF orientation applied), so truncation shows up here."""
    path = Path(path)
    if not path.exists():
        raise CrossFuseError(f"{path}: no such file")
    if not path.is_file():
        raise CrossFuseError(f"{path}: not a file")
    try:
        # From a file object: PIL memory-maps plain grey TIFFs opened by name, and that path skips their orientation.
        with path.open("rb") as fp, Image.open(fp) as im:
            if _wide_gray_alpha(im):
                image = _decode_wide_gray_alpha(im)
            else:
                im.load()
                # Palette -> RGBA keeps the colours and avoids PIL's palette-transparency warning.
                image = im.convert("RGBA") if im.mode == "P" else im
            image = ImageOps.exif_transpose(image)  # a copy, upright, that outlives the file
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


def _finite_values(image: Image.Image, path: Path) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise CrossFuseError(f"{path}: {bad} pixel(s) are NaN or infinite; fill them (e.g. with the frame's "
                             "minimum) before fusing or scoring")
    return values


def _stretch_to_uint8(image: Image.Image, path: Path, value_range: Range | None) -> np.ndarray:
    """A 16-bit/float source image's value range onto 0..255: the given range, else the image's own
    robust one (STRETCH_PERCENTILES of its non-zero pixels).

    Raw thermal counts occupy a narrow band of the 16-bit range; a fixed /257 would leave them nearly
    uniform grey, so each image is stretched, by percentiles so that one hot pixel or a zero border
    cannot squeeze the rest into a few grey levels.
    """
    values = _finite_values(image, path)
    if value_range is None:
        content = values[values != 0]
        if content.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        low, high = (float(v) for v in np.percentile(content, STRETCH_PERCENTILES))
        if high <= low:
            low, high = float(content.min()), float(content.max())
        depth = {"F": "float", "I": "32-bit"}.get(image.mode, "16-bit")
        _note_once("stretch", f"note: {path} is a {depth} image, stretched from {low:g}..{high:g} (its "
                   f"{STRETCH_PERCENTILES[0]:g}-{STRETCH_PERCENTILES[1]:g} percentiles) to 0..255; each high-depth "
                   "image gets its own range unless an IR range is given (--ir-range LOW,HIGH)")
    else:
        low, high = value_range
    if high <= low:
        return np.where(values > low, 255, 0).astype(np.uint8)
    return np.round((np.clip(values, low, high) - low) * (255.0 / (high - low))).astype(np.uint8)


def _true_scale_to_uint8(image: Image.Image, path: Path) -> np.ndarray:
    """A fused image's values at their true scale: 16-bit / 257, float in [0, 1] x 255; never stretched,
    so the same image saved at another bit depth scores the same."""
    values = _finite_values(image, path)
    low, high = float(values.min()), float(values.max())
    if image.mode == "F":
        if low < 0 or high > 1:
            raise CrossFuseError(f"{path}: float image with values {low:g}..{high:g}, so its scale is ambiguous "
                                 "(a fused float image must lie in 0..1); save it as 8-bit or 16-bit")
        return np.round(values * 255.0).astype(np.uint8)
    if low < 0 or high > 65535:
        raise CrossFuseError(f"{path}: integer image with values {low:g}..{high:g}, outside 16 bits, so its "
                             "scale is ambiguous; save it as 8-bit or 16-bit")
    return np.round(values / 257.0).astype(np.uint8)


def _warn_false_colour(image: Image.Image, path: Path) -> None:
    """An IR image in false colour (a thermal frame saved through a palette such as jet) is fused through
    its luma, which follows temperature only loosely: say so."""
    if image.mode in _GRAY_MODES:
        return
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    spread = float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1)))
    if spread > _FALSE_COLOUR_SPREAD:
        _note_once("false colour", f"warning: {path}: IR image in colour (channels differ by {spread:.0f} levels "
                   "on average): it looks like a false-colour palette image, fused through its luma, which "
                   "follows temperature only loosely; use the camera's grey or radiometric frames")


def read_gray(path: str | Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """The image as uint8 H x W luma (PIL "L": 0.299R + 0.587G + 0.114B); alpha is ignored.

    The role decides a high-depth image's scale: a fused image keeps its true scale (_true_scale_to_uint8),
    a source is stretched (_stretch_to_uint8, over ir_range for an IR image when given). An IR image in
    colour is warned about.
    """
    path = Path(path)
    image = _open(path)
    if role == "ir":
        _warn_false_colour(image, path)
    if image.mode in _HIGH_DEPTH_MODES:
        if role == "fused":
            return _true_scale_to_uint8(image, path)
        return _stretch_to_uint8(image, path, ir_range if role == "ir" else None)
    return np.array(image.convert("L"), dtype=np.uint8)


def read_size(path: str | Path) -> tuple[int, int]:
    """Upright (height, width) from the file header only: cheap enough to check a whole data set up front."""
    path = Path(path)
    if not path.is_file():
        raise CrossFuseError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            # PIL's TIFF reader reports (and decodes) TIFFs upright itself; other formats only carry the tag.
            if im.format != "TIFF" and im.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
                width, height = height, width
    except _PIL_ERRORS as err:
        raise CrossFuseError(f"{path}: not a readable image ({_one_line(err)})") from err
    if width == 0 or height == 0:
        raise CrossFuseError(f"{path}: image is empty ({width}x{height})")
    return height, width


def read_ycbcr(path: str | Path) -> np.ndarray:
    """uint8 H x W x 3 YCbCr (PIL's JPEG conversion) of a colour image (is_color), used to put the colour
    back after fusing Y.

    PIL's Y here may differ by 1 from read_gray's luma, which uses a different rounding.
    """
    return np.array(_open(path).convert("RGB").convert("YCbCr"), dtype=np.uint8)


def read_rgb(path: str | Path) -> np.ndarray | None:
    """float64 H x W x 3 RGB of an image with colour channels, upright; None for a grey or high-depth one.

    For the toolbox profiles, which convert colour with their own coefficients (dataio.toolbox_readers).
    """
    image = _open(path)
    if image.mode in _GRAY_MODES:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def is_color(path: str | Path) -> bool:
    """True when the file has colour channels that actually differ (not gray stored as RGB)."""
    rgb = read_rgb(path)
    return rgb is not None and bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))


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
