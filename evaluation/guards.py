"""Guards against fused images that fusion metrics misjudge, and the pixel-mean/max reference rules.

EN, SD, SF and AG reward noise and regular grids and punish flat images, so a table of metrics can
rank an artefact above a real fusion. Each detector below looks at one fused image (F) beside its
sources (IR, VIS), all 8-bit grayscale arrays of one size, and returns a `Flag` saying whether the image
is suspect, the measured value and the threshold it was held against:

| detector | measures | flagged when |
|---|---|---|
| `collapsed` | robust contrast: 1st-99th percentile range of the grey levels | < `COLLAPSE_RATIO` = 0.25 x the |
| | (outliers that set a min-max stretch do not count) | smaller of the sources' ranges |
| `periodic` | energy at the harmonics of the token period P = `patch * 8` px | > `PERIODIC_RATIO` = 2 x the larger |
| | (16 px by default): RMS of the image high-passed by a P x P box mean | of the sources' values, and > |
| | and averaged over all P x P cells (a P-periodic pattern survives both) | `PERIODIC_FLOOR` = 1 grey level |
| `seams` | steps at the tile borders (every `tile * 8` = 256 px; too few tiles | > `SEAM_RATIO` = 3 x the larger |
| | per image for a spectrum): mean absolute step across border rows and | of the sources' ratios (and 1) |
| | columns over the median step across all rows and columns | |
| `blobs` | largest connected patch of fused pixels more than `BLOB_MARGIN` = 32 grey levels | > `BLOB_AREA` = |
| | below the darker or above the brighter source anywhere within `BLOB_WINDOW` = 17 px, | 16 pixels |
| | where the fused image's range over that window exceeds both sources' by more than | |
| | `BLOB_CONTRAST` = 64 (a dark core and bright rim in a flat sky; a region made brighter | |
| | or darker as a whole has no such contrast and is left alone) | |
| `input_dependence` | (model) correlation of the fused images of two different | > `DEPENDENCE_MARGIN` = 0.5 + the |
| | pairs cut to one size, against that of their pixel-mean fusions | pixel-mean pair's (if positive) |

Scale of the thresholds: real fusions of TNO pairs keep 40-100% of the smaller source range, have a
periodic energy close to the sources' (JPEG blocks and sensor patterns give the sources some), and
their outputs for two scenes correlate as the scenes do (|r| < 0.3 mostly); the collapsed models of
docs/cpu-study.md measure 4-17 grey levels of 16 px energy against 1-3.7 allowed (every TNO image
flagged). The bright-sky blobs of a signed-weights two-stage model span 34-586 such pixels (TNO 16, M3FD
00370 and 00896); the `cpu` preset's six runs of docs/results.md none on TNO (without the contrast
condition: up to 3003, skies lifted as a whole), and a 1.3x contrast stretch of the pixel mean none.
tests/test_guards.py checks each detector on constructed cases.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from net.config import ModelConfig

COLLAPSE_RATIO = 0.25
PERIODIC_RATIO = 2.0
PERIODIC_FLOOR = 1.0
SEAM_RATIO = 3.0
DEPENDENCE_MARGIN = 0.5
BLOB_WINDOW = 17  # a deep-feature pixel (8 x 8 image pixels) and one more on each side
BLOB_MARGIN = 32.0
BLOB_CONTRAST = 64.0
BLOB_AREA = 16
DEEP_STRIDE = 8  # three 2 x 2 max-pools: one deep-feature pixel covers 8 x 8 image pixels

Fuse = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Flag:
    """One detector's verdict on one image: flagged or not, with the value and threshold behind it."""

    name: str
    flagged: bool
    value: float
    threshold: float

    def __str__(self) -> str:
        sign = ">" if self.flagged else "<="
        if self.name == "collapsed":
            sign = "<" if self.flagged else ">="
        return f"{self.name}: {self.value:.3g} {sign} {self.threshold:.3g}"


def reference_fusions(ir: np.ndarray, vi: np.ndarray) -> dict[str, np.ndarray]:
    """The pixel-mean (rint((IR + VIS) / 2)) and pixel-max rules as uint8 images: the baseline rows."""
    a, b = np.asarray(ir, dtype=np.float64), np.asarray(vi, dtype=np.float64)
    return {"pixel-mean": np.rint((a + b) / 2).astype(np.uint8), "pixel-max": np.maximum(a, b).astype(np.uint8)}


def robust_range(x: np.ndarray) -> float:
    """The 1st-99th percentile range of the grey levels."""
    lo, hi = np.percentile(np.asarray(x, dtype=np.float64), [1, 99])
    return float(hi - lo)


def collapsed(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> Flag:
    """A fused image whose contrast is far below both sources' (a flat or nearly flat output)."""
    threshold = COLLAPSE_RATIO * min(robust_range(ir), robust_range(vi))
    value = robust_range(fused)
    return Flag("collapsed", value < threshold, value, threshold)


def periodic_energy(x: np.ndarray, period: int) -> float:
    """RMS of the mean P x P cell of the image high-passed by a P x P box: the energy at harmonics of 1/P.

    Zero for an image without P-periodic content, up to the pattern's own RMS for a P-periodic grid.
    """
    x = np.asarray(x, dtype=np.float64)
    h, w = (s - s % period for s in x.shape)
    if h < 2 * period or w < 2 * period:
        return 0.0
    x = x - ndimage.uniform_filter(x, period, mode="reflect")
    cells = x[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(np.sqrt(np.mean((cells - cells.mean()) ** 2)))


def token_period(cfg: ModelConfig = ModelConfig()) -> int:
    """The CAM's token period in image pixels: patch x patch deep pixels of 8 x 8 image pixels each."""
    return cfg.patch * DEEP_STRIDE


def tile_period(cfg: ModelConfig = ModelConfig()) -> int:
    """The CAM's inference tile side in image pixels."""
    return cfg.tile * DEEP_STRIDE


def periodic(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, cfg: ModelConfig = ModelConfig()) -> Flag:
    """A regular pattern at the CAM's token period that neither source has."""
    period = token_period(cfg)
    value = periodic_energy(fused, period)
    threshold = max(PERIODIC_RATIO * max(periodic_energy(ir, period), periodic_energy(vi, period)), PERIODIC_FLOOR)
    return Flag(f"periodic@{period}px", value > threshold, value, threshold)


def seam_ratio(x: np.ndarray, period: int) -> float:
    """Mean absolute step across the rows/columns at multiples of period, over the median step (1.0: none)."""
    x = np.asarray(x, dtype=np.float64)
    steps = np.concatenate([np.abs(np.diff(x, axis=0)).mean(axis=1), np.abs(np.diff(x, axis=1)).mean(axis=0)])
    borders = [y - 1 for y in range(period, x.shape[0], period)]
    borders += [x.shape[0] - 1 + c - 1 for c in range(period, x.shape[1], period)]
    median = float(np.median(steps))
    if not borders or median <= 0:
        return 1.0
    return float(steps[borders].mean()) / median


def seams(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, cfg: ModelConfig = ModelConfig()) -> Flag:
    """Steps at the CAM's tile borders that neither source has (tile-sized stripes or blocks)."""
    period = tile_period(cfg)
    threshold = SEAM_RATIO * max(seam_ratio(ir, period), seam_ratio(vi, period), 1.0)
    value = seam_ratio(fused, period)
    return Flag(f"seams@{period}px", value > threshold, value, threshold)


def blobs(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> Flag:
    """Patches that neither source has: fused pixels far outside both sources' local range, with local
    contrast that neither source has around them.

    The pole of the signed deep activity weights draws a dark core with a bright rim into a flat sky
    (docs/cpu-study.md); no global statistic sees a few hundred pixels. Leaving the sources' range alone
    is not enough: a fusion may brighten or darken a whole region (a sky lifted above both sources), so
    the patch must also hold contrast that neither source has within the window.
    """
    f, a, b = (np.asarray(x, dtype=np.float64) for x in (fused, ir, vi))

    def local(x: np.ndarray, pick: Callable) -> np.ndarray:
        return pick(x, BLOB_WINDOW, mode="nearest")

    low, high = local(np.minimum(a, b), ndimage.minimum_filter), local(np.maximum(a, b), ndimage.maximum_filter)
    spread = [local(x, ndimage.maximum_filter) - local(x, ndimage.minimum_filter) for x in (f, a, b)]
    outside = (f < low - BLOB_MARGIN) | (f > high + BLOB_MARGIN)
    labels, count = ndimage.label(outside & (spread[0] > np.maximum(spread[1], spread[2]) + BLOB_CONTRAST))
    value = float(np.bincount(labels.ravel())[1:].max()) if count else 0.0
    return Flag("blobs", value > BLOB_AREA, value, BLOB_AREA)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, 0.0 when either image is constant."""
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b))
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


def _common_crop(x: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
    return x[top : top + h, left : left + w]


def input_dependence(fuse: Fuse, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                     fused: Sequence[np.ndarray] | None = None) -> list[Flag]:
    """Per pair: does the output follow the input? Needs at least two pairs and the model (as `fuse`).

    Pair i and pair i + 1 (cyclically) are centre-cropped to a common size and fused; if the two fused
    images correlate much more than the two scenes do (measured on their pixel-mean fusions), the output
    is mostly the model's own pattern, not the inputs'. `fused`, each pair's fusion at full size when
    the caller already has it, spares fusing again wherever the common size is the whole image (on a
    CPU a full-size fusion costs seconds); each crop is fused at most once.
    """
    if len(pairs) < 2:
        raise ValueError("input_dependence needs at least two pairs")
    crops: dict[tuple[int, int, int], np.ndarray] = {}

    def fused_crop(i: int, h: int, w: int) -> np.ndarray:
        ir, vi = pairs[i]
        if fused is not None and ir.shape == (h, w):
            return fused[i]
        if (i, h, w) not in crops:
            crops[i, h, w] = fuse(_common_crop(ir, h, w), _common_crop(vi, h, w))
        return crops[i, h, w]

    flags = []
    for i in range(len(pairs)):
        j = (i + 1) % len(pairs)
        (h, w), (h2, w2) = pairs[i][0].shape, pairs[j][0].shape
        h, w = min(h, h2), min(w, w2)
        fused_r = correlation(fused_crop(i, h, w), fused_crop(j, h, w))
        scene_r = correlation(*(reference_fusions(_common_crop(a, h, w), _common_crop(b, h, w))["pixel-mean"]
                                for a, b in (pairs[i], pairs[j])))
        threshold = max(scene_r, 0.0) + DEPENDENCE_MARGIN
        flags.append(Flag("input-independent", fused_r > threshold, fused_r, threshold))
    return flags


def image_flags(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, cfg: ModelConfig = ModelConfig()) -> list[Flag]:
    """The model-free detectors' raised flags for one fused image (empty when it looks sound)."""
    checks = (collapsed(fused, ir, vi), periodic(fused, ir, vi, cfg), seams(fused, ir, vi, cfg), blobs(fused, ir, vi))
    return [f for f in checks if f.flagged]
