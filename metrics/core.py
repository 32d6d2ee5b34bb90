"""Standard image-fusion metrics on 8-bit grayscale images.

F is the fused image, A the infrared source and B the visible source. Inputs may be uint8 or float
arrays holding 0..255 values; all arithmetic is float64. Histogram-based metrics (EN, MI) round the
values to the 256 integer levels first.

Degenerate inputs are given defined values instead of NaN so that tables stay readable:
a correlation with a constant image is 0.0, VIF with a flat reference is 0.0, Qabf with no edges in
either source is 0.0, and PSNR of a fused image equal to both sources is +inf.
"""
from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage


class MetricError(ValueError):
    """Images or a request the metrics cannot score (sizes, unknown names, unknown profile), in one line.
    Defined here so metrics/ stands alone; the suite's scripts report it as they report CrossFuseError."""


_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _size(x: np.ndarray) -> str:
    """width x height (the suite's order everywhere), then any further axes."""
    return "x".join(map(str, (*x.shape[1::-1], *x.shape[2:]))) if x.ndim >= 2 else "x".join(map(str, x.shape))


def levels(x: np.ndarray) -> np.ndarray:
    """The 8-bit level of each pixel, so float inputs histogram like their uint8 originals."""
    return np.clip(np.rint(as_float(x)), 0, 255).astype(np.intp).ravel()


def gauss1d(n: int, sigma: float) -> np.ndarray:
    """1-D Gaussian of length n summing to 1; its outer product is MATLAB's fspecial('gaussian')."""
    t = np.arange(n) - (n - 1) / 2
    w = np.exp(-(t**2) / (2 * sigma**2))
    return w / w.sum()


def filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering with the window outer(w, w): only positions where it fits fully."""
    lo = len(w) // 2
    hi = len(w) - 1 - lo
    y = ndimage.correlate1d(x, w, axis=0)[lo : x.shape[0] - hi]
    return ndimage.correlate1d(y, w, axis=1)[:, lo : x.shape[1] - hi]


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either image is constant (undefined, but NaN spoils tables)."""
    x = as_float(x).ravel()
    y = as_float(y).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    x = x - x.mean()
    y = y - y.mean()
    return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))


def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of F."""
    p = np.bincount(levels(f), minlength=256) / np.size(f)
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def std_dev(f: np.ndarray) -> float:
    """SD: population standard deviation of F (contrast)."""
    return float(np.std(as_float(f)))


def spatial_frequency(f: np.ndarray) -> float:
    """SF: sqrt(RF^2 + CF^2), the mean squared horizontal and vertical neighbour differences."""
    f = as_float(f)
    rf2 = np.mean(np.diff(f, axis=1) ** 2)
    cf2 = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray) -> float:
    """AG: mean of sqrt((Gx^2 + Gy^2) / 2), central differences inside, one-sided at the borders."""
    gy, gx = np.gradient(as_float(f))
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def mi_single(x: np.ndarray, y: np.ndarray) -> float:
    """Mutual information in bits between two images, from their 256 x 256 joint histogram."""
    joint = np.bincount(levels(x) * 256 + levels(y), minlength=256 * 256).reshape(256, 256)
    p = joint / joint.sum()
    px = p.sum(axis=1, keepdims=True)
    py = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / (px * py)[nz])))


def mutual_information(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI: MI(F;A) + MI(F;B) in bits."""
    return mi_single(f, a) + mi_single(f, b)


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD: corr(F - B, A) + corr(F - A, B), how much of each source F carries beyond the other."""
    f, a, b = as_float(f), as_float(a), as_float(b)
    return correlation(f - b, a) + correlation(f - a, b)


VIF_MIN_SIDE = 41
"""Smallest image side for which all four VIF scales still have a full window."""


def vif_single(ref: np.ndarray, dist: np.ndarray) -> float:
    """Sheikh and Bovik's pixel-domain VIF of a distorted image against its reference.

    Four scales with Gaussian windows of side 17, 9, 5, 3 (sigma side / 5); from scale 2 on, both
    images are filtered with that scale's window (valid) and decimated by 2. Noise variance is 2.
    A reference with no local variance anywhere gives 0.0 instead of 0 / 0.
    """
    ref, dist = as_float(ref), as_float(dist)
    if min(ref.shape) < VIF_MIN_SIDE:
        raise ValueError(f"VIF needs images of at least {VIF_MIN_SIDE}x{VIF_MIN_SIDE}, got {_size(ref)}")
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = gauss1d(n, n / 5)
        if scale > 1:
            ref = filter_valid(ref, win)[::2, ::2]
            dist = filter_valid(dist, win)[::2, ::2]
        mu1 = filter_valid(ref, win)
        mu2 = filter_valid(dist, win)
        s1 = np.maximum(filter_valid(ref * ref, win) - mu1**2, 0)
        s2 = np.maximum(filter_valid(dist * dist, win) - mu2**2, 0)
        s12 = filter_valid(ref * dist, win) - mu1 * mu2

        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        flat_ref = s1 < 1e-10
        g[flat_ref] = 0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0
        flat_dist = s2 < 1e-10
        g[flat_dist] = 0
        sv[flat_dist] = 0
        negative = g < 0
        sv[negative] = s2[negative]
        g[negative] = 0
        sv = np.maximum(sv, 1e-10)

        num += np.sum(np.log10(1 + g**2 * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    return float(num / den) if den > 0 else 0.0


def vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF: VIF(A, F) + VIF(B, F), each source as the reference and F as the distorted image."""
    return vif_single(a, f) + vif_single(b, f)


def _sobel(x: np.ndarray, toolbox: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and orientation; orientation is pi/2 where the horizontal response is 0.

    toolbox: the vertical response with the MATLAB code's sign (conv2 with [1 2 1; 0 0 0; -1 -2 -1]),
    which flips every orientation except the pi/2 given to pixels without horizontal response.
    """
    sx = ndimage.convolve(x, _SOBEL_X, mode="constant")
    sy = ndimage.convolve(x, -_SOBEL_X.T if toolbox else _SOBEL_X.T, mode="constant")
    vertical = sx == 0
    alpha = np.where(vertical, np.pi / 2, np.arctan(sy / np.where(vertical, 1.0, sx)))
    return np.sqrt(sx**2 + sy**2), alpha


def _edge_preservation(
    g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray, toolbox: bool = False
) -> np.ndarray:
    """Q_XF: how well F keeps the strength and orientation of each edge pixel of a source.

    toolbox: where source and F edge strengths are equal, the strength itself is the relative
    strength instead of 1, as in the MATLAB code VIFB, Tang and MMIF-CDDFuse share.
    """
    hi = np.maximum(g_src, g_f)
    g_rel = np.divide(np.minimum(g_src, g_f), hi, out=np.zeros_like(hi), where=hi > 0)
    if toolbox:
        g_rel = np.where(g_src == g_f, g_f, g_rel)
    a_rel = 1 - np.abs(a_src - a_f) / (np.pi / 2)
    q_g = 0.9994 / (1 + np.exp(-15 * (g_rel - 0.5)))
    q_a = 0.9879 / (1 + np.exp(-22 * (a_rel - 0.8)))
    return q_g * q_a


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray, toolbox: bool = False) -> float:
    """Qabf: Xydeas and Petrovic's edge preservation, weighted by source edge strength.

    Sobel responses use zero padding and keep the input size. Sources without any edge give 0.0.
    toolbox: as the MATLAB code of VIFB and Tang (and CDDFuse's port) computes it, with its
    orientation sign and its relative strength of equal edges (see _sobel, _edge_preservation).
    """
    g_a, al_a = _sobel(as_float(a), toolbox)
    g_b, al_b = _sobel(as_float(b), toolbox)
    g_f, al_f = _sobel(as_float(f), toolbox)
    weight = np.sum(g_a + g_b)
    if weight == 0:
        return 0.0
    q_a = _edge_preservation(g_a, al_a, g_f, al_f, toolbox)
    q_b = _edge_preservation(g_b, al_b, g_f, al_f, toolbox)
    kept = q_a * g_a + q_b * g_b
    return float(np.sum(kept) / weight)


def _sobel_mirrored(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and orientation of Petrovic's Nabf code: Sobel / 8, image mirrored at borders.

    The sums run in the MATLAB code's order (window columns top to bottom, then across), so that
    F's and a source's strengths tie exactly where that code's do: on non-integer inputs rounding
    decides ties, and ties decide which pixels count as artefacts. Orientation is
    atan(horizontal / vertical response), +-pi/2 where the vertical one is 0 and 0 where both are.
    """
    p = np.pad(x, 1, mode="reflect")
    h, w = x.shape

    def at(i: int, j: int, weight: float) -> np.ndarray:
        return p[i : i + h, j : j + w] * weight

    left = at(0, 0, -0.125) + at(1, 0, -0.25) + at(2, 0, -0.125)
    gx = left + (at(0, 2, 0.125) + at(1, 2, 0.25) + at(2, 2, 0.125))
    middle = at(0, 1, -0.25) + at(2, 1, 0.25)
    gy = ((at(0, 0, -0.125) + at(2, 0, 0.125)) + middle) + (at(0, 2, -0.125) + at(2, 2, 0.125))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.arctan(gx / gy)
    return np.sqrt(gy**2 + gx**2), np.where((gx == 0) & (gy == 0), 0.0, alpha)


def _nabf_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Nabf's edge preservation: sqrt of strength and orientation sigmoids (gains 19 and 22)."""
    hi = np.maximum(g_src, g_f)
    g_rel = np.divide(np.minimum(g_src, g_f), hi, out=np.zeros_like(hi), where=np.minimum(g_src, g_f) > 0)
    a_rel = np.abs(np.abs(a_src - a_f) - np.pi / 2) * 2 / np.pi
    q_g = 0.9999 / (1 + np.exp(-19 * (g_rel - 0.5)))
    q_a = 0.9995 / (1 + np.exp(-22 * (a_rel - 0.5)))
    return np.sqrt(q_g * q_a)


def nabf(f: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float = 2.0) -> float:
    """Nabf: fusion artefacts, the edge loss at pixels where F's edge beats both sources' edges.

    Kumar's modified noise measure (Signal, Image and Video Processing 2013) as Petrovic's code
    computes it: sources' edge strengths g >= threshold are weighted g^1.5, weaker ones 0.001.
    The threshold is in image units, so the same images scaled to 0..1 (as RFN-Nest passes them)
    fall below it everywhere and every pixel weighs the same. Lower is better.
    """
    g_a, al_a = _sobel_mirrored(as_float(a))
    g_b, al_b = _sobel_mirrored(as_float(b))
    g_f, al_f = _sobel_mirrored(as_float(f))
    w_a = np.where(g_a >= threshold, g_a**1.5, 0.001)
    w_b = np.where(g_b >= threshold, g_b**1.5, 0.001)
    artefact = (g_f > g_a) & (g_f > g_b)
    loss = (1 - _nabf_preservation(g_a, al_a, g_f, al_f)) * w_a + (1 - _nabf_preservation(g_b, al_b, g_f, al_f)) * w_b
    return float(np.sum(loss[artefact]) / np.sum(w_a + w_b))


def cross_entropy(f: np.ndarray, src: np.ndarray) -> float:
    """Relative entropy in bits of a source's 256-bin histogram to F's, over levels both use.

    The fusion literature calls it cross entropy (Bulanon et al. 2009); 0 when the histograms match.
    """
    p = np.bincount(levels(src), minlength=256) / np.size(src)
    q = np.bincount(levels(f), minlength=256) / np.size(f)
    both = (p > 0) & (q > 0)
    return float(np.sum(p[both] * np.log2(p[both] / q[both])))


def edge_intensity(f: np.ndarray) -> float:
    """EI: mean Sobel gradient magnitude, borders replicated (as MATLAB's imfilter 'replicate')."""
    f = as_float(f)
    gx = ndimage.correlate(f, _SOBEL_X, mode="nearest")
    gy = ndimage.correlate(f, _SOBEL_X.T, mode="nearest")
    return float(np.mean(np.sqrt(gx**2 + gy**2)))


def _ssim_maps(x: np.ndarray, y: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and contrast-structure maps of SSIM with a side x side Gaussian (sigma 1.5), valid."""
    w = gauss1d(side, 1.5)
    mu1 = filter_valid(x, w)
    mu2 = filter_valid(y, w)
    s1 = filter_valid(x * x, w) - mu1**2
    s2 = filter_valid(y * y, w) - mu2**2
    s12 = filter_valid(x * y, w) - mu1 * mu2
    lum = (2 * mu1 * mu2 + _C1) / (mu1**2 + mu2**2 + _C1)
    cs = (2 * s12 + _C2) / (s1 + s2 + _C2)
    return lum, cs


def ssim_single(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): 11 x 11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, L 255.

    Population (co)variances under the window; the map covers only positions where the window fits
    (valid filtering) and the result is its mean.
    """
    lum, cs = _ssim_maps(as_float(x), as_float(y), 11)
    return float(np.mean(lum * cs))


def ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM: SSIM(F, A) + SSIM(F, B)."""
    return ssim_single(f, a) + ssim_single(f, b)


def _halve(x: np.ndarray) -> np.ndarray:
    """2 x 2 block average; an odd last row or column is dropped."""
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))


def ms_ssim_single(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM (Wang et al. 2003) over 5 scales with weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333.

    Scales 1-4 contribute the mean contrast-structure term, scale 5 the mean luminance * cs; images
    are 2 x 2 averaged between scales. Where an image side drops below 11 the Gaussian window shrinks
    to that side (sigma stays 1.5), so 16 x 16 images still reach scale 5. Negative terms are clipped
    to 0 before the fractional power, which would otherwise be undefined.
    """
    x, y = as_float(x), as_float(y)
    if min(x.shape) < 16:
        raise ValueError(f"MS-SSIM needs images of at least 16x16, got {_size(x)}")
    result = 1.0
    for scale, weight in enumerate(_MS_SSIM_WEIGHTS):
        lum, cs = _ssim_maps(x, y, min(11, *x.shape))
        term = np.mean(cs) if scale < len(_MS_SSIM_WEIGHTS) - 1 else np.mean(lum * cs)
        result *= max(float(term), 0.0) ** weight
        x, y = _halve(x), _halve(y)
    return result


def ms_ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM: MS-SSIM(F, A) + MS-SSIM(F, B)."""
    return ms_ssim_single(f, a) + ms_ssim_single(f, b)


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """PSNR: 10 log10(255^2 / mean of MSE(F, A) and MSE(F, B)); +inf when F equals both sources."""
    f, a, b = as_float(f), as_float(a), as_float(b)
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(255.0**2 / mse))


def cc(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CC: (corr(F, A) + corr(F, B)) / 2."""
    return (correlation(f, a) + correlation(f, b)) / 2


Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]

METRICS: dict[str, Metric] = {
    "EN": lambda f, a, b: entropy(f),
    "SD": lambda f, a, b: std_dev(f),
    "SF": lambda f, a, b: spatial_frequency(f),
    "AG": lambda f, a, b: average_gradient(f),
    "MI": mutual_information,
    "SCD": scd,
    "VIF": vif,
    "Qabf": qabf,
    "SSIM": ssim,
    "MS-SSIM": ms_ssim,
    "PSNR": psnr,
    "CC": cc,
}
"""All metrics, called as metric(f, a, b), in the order tables show them."""

MIN_SIDE: dict[str, int] = {"SF": 2, "AG": 2, "VIF": VIF_MIN_SIDE, "SSIM": 11, "MS-SSIM": 16}
"""Smallest image side each metric accepts; metrics not listed accept any size."""


def score_pair(
    f: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    metrics: Iterable[str] | None = None,
    label: str = "fused image",
    table: dict[str, Metric] = METRICS,
    min_side: dict[str, int] = MIN_SIDE,
) -> dict[str, float]:
    """Compute the chosen metrics (all of `table` by default) for one fused image and its IR/VIS sources.

    Checks up front that the three are 2-D, equally sized and large enough, raising MetricError
    with `label` (e.g. the file name) in the message rather than failing inside a metric. `table`
    and `min_side` default to this suite's metrics; metrics.profiles passes a toolbox's.
    """
    names = list(table) if metrics is None else list(metrics)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise MetricError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    f, a, b = as_float(f), as_float(a), as_float(b)
    sizes = f"fused {_size(f)}, IR {_size(a)}, VIS {_size(b)}"
    if f.ndim != 2 or a.ndim != 2 or b.ndim != 2:
        raise MetricError(f"{label}: metrics need 2-D grayscale images, got {sizes}")
    if not f.shape == a.shape == b.shape:
        raise MetricError(f"{label}: image sizes differ ({sizes})")
    need = max((min_side.get(n, 1) for n in names), default=1)
    if min(f.shape) < need:
        raise MetricError(f"{label}: {_size(f)} is too small, {', '.join(names)} need sides >= {need}")
    return {n: float(table[n](f, a, b)) for n in names}
