"""Human-perception fusion metrics that filter images with a contrast sensitivity function (CSF).

Qcb (Chen and Blum, Image and Vision Computing 2009): how well F keeps the local band-pass contrast
of each source, weighted by the sources' contrast saliency. Higher is better.
Qcv (Chen and Varshney, Information Fusion 2007): CSF-filtered squared difference between F and
each source in 16 x 16 regions, weighted by regional edge saliency. Lower is better.

Both follow Z. Liu's widely copied implementations (used by VIFB): images are first stretched to
0..255 and rounded, the CSF is applied by multiplying the centred spectrum by a filter sampled on
MATLAB's freqspace grid, and the filtered images stay complex (the grid is not symmetric for even
sides, so a tiny imaginary part survives and is carried through as those implementations do).
"""
import numpy as np
from scipy import ndimage, signal

_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def stretch_to_255(x: np.ndarray) -> np.ndarray:
    """Min..max onto 0..255, rounded half away from zero; an all-zero image stays as it is."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if lo == 0 and hi == 0:
        return x
    return np.floor((x - lo) / (hi - lo) * 255 + 0.5)


def _radius(shape: tuple[int, int], cycles: tuple[float, float]) -> np.ndarray:
    """Frequency radius on MATLAB's freqspace grid (centred, -1..1), rows and columns scaled apart."""
    h, w = shape
    v = (np.arange(h) - h // 2) * (2 / h) * cycles[0]
    u = (np.arange(w) - w // 2) * (2 / w) * cycles[1]
    return np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)


def _csf_filter(x: np.ndarray, centred_response: np.ndarray) -> np.ndarray:
    """Multiply the centred spectrum by the response and transform back (complex result)."""
    return np.fft.ifft2(np.fft.fft2(x) * np.fft.ifftshift(centred_response))


def _gauss_same(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-padded 'same' filtering with a 31 x 31 Gaussian of the given sigma, not normalised."""
    t = np.arange(-15, 16)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return signal.fftconvolve(x, g, mode="same")


def _local_contrast(x: np.ndarray) -> np.ndarray:
    """Chen-Blum's masked contrast: |G2 * x / G4 * x - 1| passed through k C^3 / (h C^2 + Z)."""
    c = np.abs(_gauss_same(x, 2) / _gauss_same(x, 4) - 1)
    return c**3 / (c**2 + 1e-4)


def qcb(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qcb: contrast preservation of both sources in F, each pixel weighted by source saliency."""
    f, a, b = (stretch_to_255(x) for x in (f, a, b))
    cycles = (f.shape[0] / 30, f.shape[1] / 30)
    r = _radius(f.shape, cycles)
    dog = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    ca, cb, cf = (_local_contrast(_csf_filter(x, dog)) for x in (a, b, f))
    with np.errstate(divide="ignore", invalid="ignore"):
        qa = np.where(ca < cf, ca / cf, cf / ca)
        qb = np.where(cb < cf, cb / cf, cf / cb)
        saliency = ca**2 + cb**2
        return float(np.mean((ca**2 * qa + cb**2 * qb) / saliency))


def _block_sums(x: np.ndarray, side: int) -> np.ndarray:
    """Sums over side x side blocks, partial blocks at the far edges padded with zeros."""
    h, w = -(-x.shape[0] // side), -(-x.shape[1] // side)
    padded = np.zeros((h * side, w * side), dtype=x.dtype)
    padded[: x.shape[0], : x.shape[1]] = x
    return padded.reshape(h, side, w, side).sum(axis=(1, 3))


def qcv(f: np.ndarray, a: np.ndarray, b: np.ndarray, side: int = 16, alpha: float = 5) -> float:
    """Qcv: saliency-weighted mean of CSF-filtered (Mannos-Sakrison) squared differences to F.

    Region saliency is the sum of Sobel magnitude^alpha over each side x side block; the
    difference energy of a block is the mean of the squared (complex) filtered difference over the
    zero-padded block. Returns the real part of the weighted mean.
    """
    f, a, b = (stretch_to_255(x) for x in (f, a, b))
    r = _radius(f.shape, (f.shape[0] / 8, f.shape[1] / 8))
    mannos = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))

    def saliency(x: np.ndarray) -> np.ndarray:
        gx = ndimage.correlate(x, _SOBEL_X, mode="constant")
        gy = ndimage.correlate(x, _SOBEL_X.T, mode="constant")
        return _block_sums(np.sqrt(gx**2 + gy**2) ** alpha, side)

    def energy(x: np.ndarray) -> np.ndarray:
        return _block_sums(_csf_filter(x - f, mannos) ** 2, side) / side**2

    wa, wb = saliency(a), saliency(b)
    total = np.sum(wa * energy(a) + wb * energy(b)) / np.sum(wa + wb)
    return float(total.real)
