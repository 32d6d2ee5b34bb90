"""MEF-SSIM (Ma, Zeng and Wang, IEEE TIP 2015), the "MS_SSIM" of the Tang and RFN-Nest toolboxes.

For every 11 x 11 patch the sources are merged into one desired patch: each source's mean-removed
patch is divided by its contrast (patch norm), the normalised patches are weighted by contrast to
a power set by how consistent the sources' structures are, and the sum is rescaled to the largest
source contrast. The fused patch is compared with it by SSIM's structure term under a Gaussian
window. The toolboxes loop over pixels; every patch quantity here is a linear combination of local
first and second moments, so whole maps are computed by filtering.
"""
from collections.abc import Sequence

import numpy as np

from metrics.core import filter_valid, gauss1d

SIDE = 11
"""Patch side of the consistency, contrast and structure terms."""
LEVEL_WEIGHTS = (0.0448, 0.2856, 0.3001)
"""Weights of the three scales (Wang's first three MS-SSIM weights, renormalised to sum 1)."""
_EPS = np.finfo(np.float64).eps


def _box_sum(x: np.ndarray) -> np.ndarray:
    """Sum over every fully inside 11 x 11 patch (integer-valued inputs give exact sums)."""
    return filter_valid(x, np.ones(SIDE))


def mef_ssim_single_scale(sources: Sequence[np.ndarray], f: np.ndarray, k: float = 0.03) -> float:
    """Mean MEF-SSIM map at one scale, 0..255 inputs (C = (k * 255)^2)."""
    xs = [np.asarray(x, dtype=np.float64) for x in sources]
    f = np.asarray(f, dtype=np.float64)
    n = SIDE * SIDE
    sums = [_box_sum(x) for x in xs]
    # centred second moments (sum over the patch, not the mean) of every pair of sources
    cross = {(i, j): _box_sum(xs[i] * xs[j]) - sums[i] * sums[j] / n
             for i in range(len(xs)) for j in range(i, len(xs))}
    spread = [np.sqrt(np.maximum(cross[i, i], 0)) for i in range(len(xs))]
    contrast = np.stack([s + 0.001 for s in spread])

    total = sum(cross[i, j] * (1 if i == j else 2) for (i, j) in cross)
    consistency = (np.sqrt(np.maximum(total, 0)) + _EPS) / (sum(spread) + _EPS)
    consistency = np.where(consistency > 1, 1 - _EPS, consistency)
    consistency = np.where(consistency < 0, _EPS, consistency)
    power = np.minimum(np.tan(np.pi / 2 * consistency), 10)
    weights = (contrast / SIDE) ** power + _EPS
    weights /= weights.sum(axis=0)
    coef = weights / contrast  # desired patch = scale * sum_k coef_k * (x_k - patch mean_k)

    norm2 = sum(coef[i] * coef[j] * cross[i, j] * (1 if i == j else 2) for (i, j) in cross)
    norm = np.sqrt(np.maximum(norm2, 0))
    scale = np.divide(contrast.max(axis=0), norm, out=np.ones_like(norm), where=norm > 0)

    g = gauss1d(SIDE, 1.5)
    mean = [filter_valid(x, g) for x in xs]
    mean_f = filter_valid(f, g)
    var_f = filter_valid(f * f, g) - mean_f**2
    var_r = sum(coef[i] * coef[j] * (filter_valid(xs[i] * xs[j], g) - mean[i] * mean[j]) * (1 if i == j else 2)
                for (i, j) in cross) * scale**2
    cov = sum(coef[i] * (filter_valid(xs[i] * f, g) - mean[i] * mean_f) for i in range(len(xs))) * scale
    c = (k * 255) ** 2
    return float(np.mean((2 * cov + c) / (var_r + var_f + c)))


def _downsample(x: np.ndarray) -> np.ndarray:
    """Every second pixel of the 2 x 2 mean anchored at it, the image mirrored past its far edges."""
    p = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    mean = (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]) / 4
    return mean[::2, ::2]


def mef_ssim(sources: Sequence[np.ndarray], f: np.ndarray) -> float:
    """Three-scale MEF-SSIM: product of the per-scale scores to the normalised LEVEL_WEIGHTS.

    Needs sides of at least 44 so that the coarsest scale still fits an 11 x 11 patch.
    """
    f = np.asarray(f, dtype=np.float64)
    if min(f.shape) < SIDE * 4:
        raise ValueError(f"MEF-SSIM needs images of at least {SIDE * 4}x{SIDE * 4}, got {f.shape}")
    xs = [np.asarray(x, dtype=np.float64) for x in sources]
    weights = np.array(LEVEL_WEIGHTS) / sum(LEVEL_WEIGHTS)
    scores = []
    for level in range(len(weights)):
        if level:
            xs, f = [_downsample(x) for x in xs], _downsample(f)
        scores.append(mef_ssim_single_scale(xs, f))
    return float(np.prod(np.array(scores) ** weights))
