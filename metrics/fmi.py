"""Feature mutual information (FMI; Haghighat, Aghagolzadeh and Seyedarabi 2011) in its fast form
(Haghighat and Razian, AICT 2014), on raw pixels, DCT coefficients or discrete Meyer wavelet
coefficients.

In every 3 x 3 window the features of a source and of F are min-max normalised and read as two
probability distributions over the 9 positions (in MATLAB's column-major order, which matters for
their cumulative distributions). Their joint distribution is Nelsen's mixture of independence and
the Frechet bound matching their correlation; the normalised mutual information 2 I / (H_x + H_f) of
each source is averaged. The reference MATLAB code loops over windows and window cells; here each
chunk of windows is one set of array operations.
"""
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import fft, signal

WINDOW = 3
_CELLS = WINDOW * WINDOW
_CHUNK = 16384
"""Windows per batch: keeps the batch's 18 x chunk arrays at a few MB."""
THREADS = min(2, os.cpu_count() or 1)
"""Threads for the window batches: the suite's machines have 2 cores."""
_POS = np.arange(1, _CELLS + 1, dtype=np.float64)


@functools.cache
def meyer_filter(taps: int = 101) -> np.ndarray:
    """Low-pass filter of the discrete Meyer wavelet: the Meyer scaling filter (Daubechies, Ten
    Lectures, 4.2.2) sampled at -taps//2..taps//2, unit norm, preceded by a 0 as MATLAB's 102-tap
    'dmey'. Computed from the frequency-domain definition by numerical integration.
    """
    def nu(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, 1)
        return x**4 * (35 - 84 * x + 70 * x**2 - 20 * x**3)

    omega = np.linspace(0, 2 * np.pi / 3, 20001)
    # the scaling filter's frequency response: 1 below pi/3, a smooth cosine roll-off to 0 at 2pi/3
    response = np.where(omega <= np.pi / 3, 1.0, np.cos(np.pi / 2 * nu(3 * omega / np.pi - 1)))
    n = np.arange(taps) - taps // 2
    integrand = response[None, :] * np.cos(n[:, None] * omega[None, :])
    h = np.trapezoid(integrand, omega, axis=1)
    h /= np.linalg.norm(h)
    return np.concatenate([[0.0], h])


def _dwt_axis(x: np.ndarray, h: np.ndarray, axis: int) -> np.ndarray:
    """One DWT step along an axis as MATLAB's dwt does it: half-sample symmetric extension by
    len(h) - 1, the part of the full convolution that needs no padding, every second sample from
    the second on (output length (n + len(h) - 1) // 2)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (len(h) - 1, len(h) - 1)
    shape = [1] * x.ndim
    shape[axis] = len(h)
    y = signal.fftconvolve(np.pad(x, pad, mode="symmetric"), h.reshape(shape), mode="valid", axes=axis)
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(1, None, 2)
    return y[tuple(keep)]


def highpass(lo: np.ndarray) -> np.ndarray:
    """Decomposition high-pass of an orthogonal wavelet from its low-pass, with MATLAB's signs
    (orthfilt: Haar's [0.71, 0.71] gives [-0.71, 0.71])."""
    return lo[::-1] * (-1.0) ** np.arange(1, len(lo) + 1)


def dwt2_mosaic(x: np.ndarray) -> np.ndarray:
    """One-level 2-D discrete Meyer DWT arranged as [[cA, cH], [cV, cD]] (as the FMI code does)."""
    lo = meyer_filter()
    hi = highpass(lo)
    rows_lo, rows_hi = _dwt_axis(x, lo, 1), _dwt_axis(x, hi, 1)
    ca, ch = _dwt_axis(rows_lo, lo, 0), _dwt_axis(rows_lo, hi, 0)
    cv, cd = _dwt_axis(rows_hi, lo, 0), _dwt_axis(rows_hi, hi, 0)
    return np.block([[ca, ch], [cv, cd]])


def _rerange(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return np.ones_like(x) if hi == lo else (x - lo) / (hi - lo)


def features(x: np.ndarray, feature: str) -> np.ndarray:
    """The feature image FMI compares: 'pixel' (raw values), 'dct' (orthonormal 2-D DCT) or 'wavelet'."""
    x = np.asarray(x, dtype=np.float64)
    if feature == "pixel":
        return x
    if feature == "dct":
        return fft.dctn(x, type=2, norm="ortho")
    if feature == "wavelet":
        return _rerange(dwt2_mosaic(x))
    raise ValueError(f"unknown FMI feature {feature!r}; choose pixel, dct or wavelet")


def _windows(x: np.ndarray) -> np.ndarray:
    """Every 3 x 3 window as a column of 9 values in column-major order (9 x windows: reductions
    over a window's positions then run along the long axis, much faster than across it)."""
    h, w = x.shape[0] - WINDOW + 1, x.shape[1] - WINDOW + 1
    out = np.empty((_CELLS, h * w))
    for k in range(_CELLS):
        col, row = divmod(k, WINDOW)
        out[k] = x[row : row + h, col : col + w].ravel()
    return out


def _xlog2x(x: np.ndarray) -> np.ndarray:
    """x log2 |x|, 0 at 0 (MATLAB's real(x log2 x) also for the negative masses the mixture can give)."""
    return x * np.log2(np.maximum(np.abs(x), 1e-300))


def _distributions(v: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per window (column): probabilities (min-max normalised values over their sum; uniform when
    flat), their log2 (finite at 0), cumulative distribution, entropy in bits, standard deviation
    over positions 1..9, and whether the window is flat."""
    lo = v.min(axis=0)
    span = v.max(axis=0) - lo
    norm = np.divide(v - lo, span, out=np.ones_like(v), where=span > 0)
    pdf = norm / norm.sum(axis=0)
    cdf = np.cumsum(pdf, axis=0)
    log_pdf = np.log2(np.maximum(pdf, 1e-300))
    entropy = -np.einsum("ij,ij->j", pdf, log_pdf)
    mean = _POS @ pdf
    sd = np.sqrt(np.maximum(_POS**2 @ pdf - mean**2, 0))
    return pdf, log_pdf, cdf, entropy, sd, span == 0


def _gather(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """table[rows[k, j], j] for every k, j."""
    return table.take(rows.astype(np.intp) * table.shape[1] + np.arange(table.shape[1]))


def _frechet_cells(cf: np.ndarray, cx: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero cells of the Frechet-bound coupling of two distributions on 9 positions.

    The upper bound (comonotone, CDF min(F, X)) puts on cell (i, j) the overlap of F's interval
    [F_i-1, F_i] with X's [X_j-1, X_j]; the lower bound (countermonotone, CDF max(F + X - 1, 0)) the
    overlap with X's interval reflected, [1 - X_j, 1 - X_j-1]. Merging the two sorted lists of
    interval ends lists every overlap, each ending at one of the 18 ends: at most 18 cells instead
    of 81. Returns per window (column) the cells' mass and 0-based row (F) and column (X) indices.
    """
    ends_x = cx.copy()
    if lower.any():
        ends_x[:, lower] = np.concatenate([1 - cx[-2::-1, lower], np.ones((1, lower.sum()))])
    # merged order puts an F end before an equal X end
    x_before_f = np.zeros(cf.shape, dtype=np.int8)  # small counters keep the loop in cache
    f_upto_x = np.zeros(cf.shape, dtype=np.int8)
    for k in range(_CELLS):
        x_before_f += ends_x[k] < cf
        f_upto_x += cf[k] <= ends_x
    zero = np.zeros((1, cf.shape[1]))
    f_prev = np.concatenate([zero, cf])  # f_prev[k] = F_k-1, 0 before the first
    x_prev = np.concatenate([zero, ends_x])
    mass_f = cf - np.maximum(f_prev[:-1], _gather(x_prev, x_before_f))
    mass_x = ends_x - np.maximum(x_prev[:-1], _gather(f_prev, f_upto_x))
    positions = np.broadcast_to(np.arange(_CELLS)[:, None], cf.shape)
    mass = np.concatenate([mass_f, mass_x])
    row = np.concatenate([positions, f_upto_x])
    col = np.concatenate([x_before_f, positions])
    col = np.where(lower, _CELLS - 1 - col, col)
    return mass, np.minimum(row, _CELLS - 1), np.maximum(np.minimum(col, _CELLS - 1), 0)


def _fmi_windows(xv: np.ndarray, fv: np.ndarray, f_dist: tuple) -> np.ndarray:
    """Normalised feature MI of one source with F for a batch of windows (1 where they are equal).

    The joint distribution mixes independence (outer product of the two distributions) with the
    Frechet bound matching the sign of their correlation, in the proportion that gives the observed
    correlation. Its entropy is the mixture's dense independent part in closed form plus a
    correction on the bound's few non-zero cells.
    """
    px, lpx, cx, hx, sx, flat_x = _distributions(xv)
    pf, lpf, cf, hf, sf, flat_f = f_dist
    xt, ft = px - px.mean(axis=0), pf - pf.mean(axis=0)
    dot = np.einsum("ij,ij->j", xt, ft)
    # a flat window's distribution is uniform: no correlation. (The MATLAB code's mean of nine 1/9
    # is not exactly 1/9, and the rounding noise correlates perfectly: it scores two flat windows 1.)
    uncorrelated = (dot == 0) | flat_x | flat_f
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(uncorrelated, 0.0, dot / np.sqrt(np.einsum("ij,ij->j", xt, xt) * np.einsum("ij,ij->j", ft, ft)))
    mass, row, col = _frechet_cells(cf, cx, c < 0)
    # covariance of the positions under the bound coupling (Hoeffding): what correlation c is scaled by
    cov_bound = np.einsum("ij,ij->j", mass, (row + 1.0) * (col + 1)) - (_POS @ pf) * (_POS @ px)
    with np.errstate(divide="ignore", invalid="ignore"):
        mix = np.where((c == 0) | (sf == 0) | (sx == 0), 0.0, c * sf * sx / cov_bound)
    keep = 1 - mix
    log_keep = np.log2(np.maximum(np.abs(keep), 1e-300))
    independent = keep * _gather(pf, row) * _gather(px, col)
    log_independent = log_keep + _gather(lpf, row) + _gather(lpx, col)
    joint = independent + mix * mass
    # all 81 cells of the independent part in closed form, then the bound's cells corrected
    h_independent = keep * (hf + hx - log_keep)
    h_joint = h_independent - np.sum(_xlog2x(joint) - independent * log_independent, axis=0)
    mi = hx + hf - h_joint
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mi == 0, 0.0, 2 * mi / (hx + hf))
    return np.where(np.all(xv == fv, axis=0), 1.0, out)


def _chunk_sum(wa: np.ndarray, wb: np.ndarray, wf: np.ndarray) -> float:
    f_dist = _distributions(wf)
    return float(np.sum(_fmi_windows(wa, wf, f_dist) + _fmi_windows(wb, wf, f_dist)))


def feature_mi(fa: np.ndarray, fb: np.ndarray, ff: np.ndarray) -> float:
    """FMI of feature image ff with source feature images fa and fb: mean over 3 x 3 windows.

    Batches of windows run on THREADS threads (numpy releases the GIL inside each operation).
    """
    wa, wb, wf = (_windows(x) for x in (fa, fb, ff))
    n = wf.shape[1]
    parts = [slice(start, start + _CHUNK) for start in range(0, n, _CHUNK)]
    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(lambda part: _chunk_sum(wa[:, part], wb[:, part], wf[:, part]), parts))
    return total / (2 * n)


def fmi(f: np.ndarray, a: np.ndarray, b: np.ndarray, feature: str = "pixel") -> float:
    """FMI of F with sources A and B on the chosen feature (see features), 3 x 3 windows.

    Needs sides of at least 3. Higher is better (1 when F equals both sources).
    """
    return feature_mi(*(features(x, feature) for x in (a, b, f)))
