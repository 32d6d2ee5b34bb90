"""Metric profiles: the same fused images scored as a given toolbox scores them, number for number.

A profile fixes how images are read, which metrics are reported under which names, and each
metric's convention (scale of the inputs, log base, how two sources are combined, which toolbox bug
changes the number). The README's "Metric profiles" table lists the differences and why they exist.
Metric functions are called as metric(f, a, b) with A the infrared and B the visible source.

- suite: this project's own definitions (evaluation.metrics), the default.
- vifb: VIFB benchmark MATLAB code (Zhang et al., CVPRW 2020).
- tang: Evaluation-for-Image-Fusion MATLAB code (Tang; SeAFusion, PIAFusion).
- crossfuse: RFN-Nest analysis_matlab (the CrossFuse authors' code) plus FMI.
- cddfuse: utils/Evaluator.py of MMIF-CDDFuse, images read as its test script reads them.
"""
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from dataio.images import Range, Role, read_gray, read_rgb
from evaluation import metrics as M
from evaluation.csf_metrics import qcb, qcv
from evaluation.fmi import fmi
from evaluation.mef_ssim import mef_ssim
from utils.errors import CrossFuseError

Metric = M.Metric
Reader = Callable[..., np.ndarray]  # (path, role="vi", ir_range=None) as dataio.images.read_gray


# --- reading images -------------------------------------------------------------------------------


def read_matlab(path: Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """uint8 gray as MATLAB's imread + rgb2gray gives it (rgb2gray's coefficients, rounded); grey and
    high-depth images as read_gray reads them."""
    gray = read_gray(path, role, ir_range)
    rgb = read_rgb(path)
    if rgb is None:
        return gray
    y = rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def read_opencv(path: Path, role: Role = "vi", ir_range: Range | None = None) -> np.ndarray:
    """float32 gray as cv2.imread + cvtColor(BGR2GRAY) on float32 + numpy.round (CDDFuse's reader); grey and
    high-depth images as read_gray reads them."""
    gray = read_gray(path, role, ir_range)
    rgb = read_rgb(path)
    if rgb is None:
        return gray.astype(np.float32)
    rgb = rgb.astype(np.float32)
    coef = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(rgb @ coef).astype(np.float32)


# --- conventions the toolboxes do not share -------------------------------------------------------


def _mse(f: np.ndarray, src: np.ndarray) -> float:
    return float(np.mean((M.as_float(f) - M.as_float(src)) ** 2))


def _mean_mse(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return (_mse(f, a) + _mse(f, b)) / 2


def _root_sse_per_pixel(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIFB's "mse": sqrt(sum of squared errors) / pixel count (not a mean square), mean of two."""
    def one(src: np.ndarray) -> float:
        return math.sqrt(_mse(f, src) * np.size(f)) / np.size(f)

    return (one(a) + one(b)) / 2


def _matlab_gradient(f: np.ndarray) -> float:
    """AG with MATLAB's gradient, summed and divided by (rows - 1) * (cols - 1) (VIFB, Tang)."""
    gy, gx = np.gradient(M.as_float(f))
    return float(np.sum(np.sqrt((gx**2 + gy**2) / 2)) / ((f.shape[0] - 1) * (f.shape[1] - 1)))


def _sf_per_pixel(f: np.ndarray) -> float:
    """VIFB's SF: squared neighbour differences summed and divided by the full pixel count."""
    f = M.as_float(f)
    return float(np.sqrt((np.sum(np.diff(f, axis=1) ** 2) + np.sum(np.diff(f, axis=0) ** 2)) / f.size))


def _stretched_levels(x: np.ndarray) -> np.ndarray:
    """VIFB's MI input: min..max onto 0..255 rounded half up; a constant image becomes 0."""
    x = M.as_float(x)
    span = np.ptp(x)
    if span == 0:
        return np.zeros_like(x)
    return np.floor((x - x.min()) / span * 255 + 0.5)


def _vifb_mi(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIFB Mutinf: MI in nats of each min-max stretched source with the stretched F, summed."""
    fs = _stretched_levels(f)
    return (M.mi_single(_stretched_levels(a), fs) + M.mi_single(_stretched_levels(b), fs)) * math.log(2)


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _tang_mi(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Tang MI in bits: marginals from all 256 levels, but the joint histogram indexes uint8 + 1,
    which saturates, so levels 254 and 255 share a bin there (a bug that raises MI)."""
    def joint_entropy(x: np.ndarray, y: np.ndarray) -> float:
        lx, ly = np.minimum(M.levels(x), 254), np.minimum(M.levels(y), 254)
        return _entropy_bits(np.bincount(lx * 256 + ly, minlength=256 * 256))

    h_f = M.entropy(f)
    return M.entropy(a) + h_f - joint_entropy(f, a) + M.entropy(b) + h_f - joint_entropy(f, b)


def _ssim_matlab(x: np.ndarray, y: np.ndarray, dynamic_range: float) -> float:
    """MATLAB's ssim with its documented defaults: 11 x 11 Gaussian (sigma 1.5), borders replicated,
    map the size of the image; a double image's DynamicRange is 1 whatever its values."""
    g = M.gauss1d(11, 1.5)

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(z, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    x, y = M.as_float(x), M.as_float(y)
    return _ssim_from_moments(x, y, blur, (0.01 * dynamic_range) ** 2, (0.03 * dynamic_range) ** 2, 1.0, 0)


def _ssim_skimage(x: np.ndarray, y: np.ndarray, data_range: float = 2.0) -> float:
    """scikit-image's structural_similarity defaults: 7 x 7 uniform window, mirrored borders,
    sample (n - 1) covariances, 3-pixel border left out of the mean. CDDFuse passes no data_range
    for float images, which older scikit-image took as 2 (the -1..1 float range)."""
    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(z, size=7, mode="reflect")

    x, y = M.as_float(x), M.as_float(y)
    return _ssim_from_moments(x, y, blur, (0.01 * data_range) ** 2, (0.03 * data_range) ** 2, 49 / 48, 3)


def _ssim_from_moments(x, y, blur, c1: float, c2: float, cov_norm: float, crop: int) -> float:
    mx, my = blur(x), blur(y)
    vx = cov_norm * (blur(x * x) - mx * mx)
    vy = cov_norm * (blur(y * y) - my * my)
    vxy = cov_norm * (blur(x * y) - mx * my)
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    if crop:
        s = s[crop:-crop, crop:-crop]
    return float(np.mean(s))


def _toolbox_qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return M.qabf(f, a, b, toolbox=True)


def _fused_entropy(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return M.entropy(f)


def _fused_std(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return M.std_dev(f)


def _mef_ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return mef_ssim([a, b], f)


def _cddfuse_psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CDDFuse PSNR: the peak is F's own maximum, not 255."""
    return float(10 * np.log10(np.max(M.as_float(f)) ** 2 / _mean_mse(f, a, b)))


# --- the profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A named convention: reader, metrics in display order, and the smallest side each accepts."""

    name: str
    source: str
    read: Reader
    metrics: dict[str, Metric]
    min_side: dict[str, int] = field(default_factory=dict)


def _fmi_metrics() -> dict[str, Metric]:
    return {
        f"FMI_{suffix}": (lambda f, a, b, feature=feature: fmi(f, a, b, feature))
        for suffix, feature in (("pixel", "pixel"), ("dct", "dct"), ("w", "wavelet"))
    }


SUITE = Profile("suite", "this project (evaluation/metrics.py)", read_gray, dict(M.METRICS), dict(M.MIN_SIDE))

VIFB = Profile(
    "vifb",
    "VIFB benchmark, MATLAB metrics/metrics*.m",
    read_matlab,
    {
        "Entropy": _fused_entropy,
        "Variance": _fused_std,
        "Spatial_frequency": lambda f, a, b: _sf_per_pixel(f),
        "Avg_gradient": lambda f, a, b: _matlab_gradient(f),
        "Mutinf": _vifb_mi,
        "Cross_entropy": lambda f, a, b: (M.cross_entropy(f, b) + M.cross_entropy(f, a)) / 2,
        "Edge_intensity": lambda f, a, b: M.edge_intensity(f),
        "Psnr": lambda f, a, b: 20 * math.log10(255 / math.sqrt(_root_sse_per_pixel(f, a, b))),
        "Rmse": _root_sse_per_pixel,
        "Ssim": M.ssim,
        "Qabf": _toolbox_qabf,
        "Qcb": qcb,
        "Qcv": qcv,
    },
    {"Spatial_frequency": 2, "Avg_gradient": 2, "Ssim": 11},
)

TANG = Profile(
    "tang",
    "Evaluation-for-Image-Fusion (Tang), MATLAB analysis_Reference.m",
    read_matlab,
    {
        "EN": _fused_entropy,
        "SF": lambda f, a, b: M.spatial_frequency(f),
        "SD": _fused_std,
        "PSNR": lambda f, a, b: 20 * math.log10(255 / math.sqrt(_mean_mse(f, a, b) / 255**2)),
        "MSE": lambda f, a, b: _mean_mse(f, a, b) / 255**2,
        "MI": _tang_mi,
        "VIF": M.vif,
        "AG": lambda f, a, b: _matlab_gradient(f),
        "CC": M.cc,
        "SCD": M.scd,
        "Qabf": _toolbox_qabf,
        # the toolbox calls analysis_nabf(IR, VIS, F) on a function declared (F, A, B)
        "Nabf": lambda f, a, b: M.nabf(a, b, f),
        "SSIM": lambda f, a, b: (_ssim_matlab(f, a, 1.0) + _ssim_matlab(f, b, 1.0)) / 2,
        "MS_SSIM": _mef_ssim,
    },
    {"SF": 2, "AG": 2, "VIF": M.VIF_MIN_SIDE, "MS_SSIM": 44},
)

CROSSFUSE = Profile(
    "crossfuse",
    "RFN-Nest analysis_matlab (CrossFuse authors), FMI after Haghighat and Razian",
    read_matlab,
    {
        "EN": _fused_entropy,
        "SD": lambda f, a, b: M.std_dev(f) * math.sqrt(np.size(f)) / 255,
        # JointEntropy() histograms row indices as if they were 0..1 intensities: both joint terms
        # are 0 and each MI(F, X) collapses to the entropy of F
        "MI": lambda f, a, b: 2 * M.entropy(f),
        "Nabf": lambda f, a, b: M.nabf(*(M.as_float(x) / 255 for x in (f, a, b))),
        "SCD": M.scd,
        "MS_SSIM": _mef_ssim,
        **_fmi_metrics(),
    },
    {"MS_SSIM": 44, "FMI_pixel": 3, "FMI_dct": 3, "FMI_w": 3},
)

CDDFUSE = Profile(
    "cddfuse",
    "MMIF-CDDFuse utils/Evaluator.py",
    read_opencv,
    {
        "EN": _fused_entropy,
        "SD": _fused_std,
        "SF": lambda f, a, b: M.spatial_frequency(f),
        "AG": lambda f, a, b: M.average_gradient(f),
        "MI": lambda f, a, b: M.mutual_information(f, a, b) * math.log(2),
        "SCD": M.scd,
        "VIF": M.vif,
        "Qabf": _toolbox_qabf,
        "SSIM": lambda f, a, b: _ssim_skimage(f, a) + _ssim_skimage(f, b),
        "MSE": _mean_mse,
        "CC": M.cc,
        "PSNR": _cddfuse_psnr,
    },
    {"SF": 2, "AG": 2, "VIF": M.VIF_MIN_SIDE, "SSIM": 7},
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SUITE, VIFB, TANG, CROSSFUSE, CDDFUSE)}
"""Every profile by name; 'suite' first (the default)."""


def score(
    profile: Profile, f: np.ndarray, a: np.ndarray, b: np.ndarray, metrics: list[str] | None = None,
    label: str = "fused image",
) -> dict[str, float]:
    """The profile's metrics (all by default) for images read with profile.read; see metrics.score_pair."""
    return M.score_pair(f, a, b, metrics, label, profile.metrics, profile.min_side)


LOWER_IS_BETTER = frozenset({"Cross_entropy", "Rmse", "MSE", "Nabf", "Qcv"})  # errors, noise, distortion


def higher_is_better(metric: str) -> bool:
    """The direction of a metric of any profile: most grow with fusion quality, LOWER_IS_BETTER shrink."""
    return metric not in LOWER_IS_BETTER


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a CrossFuseError listing the choices."""
    if name not in PROFILES:
        raise CrossFuseError(f"unknown metric profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
