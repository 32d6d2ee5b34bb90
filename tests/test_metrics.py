"""Fusion metrics against hand-computed values, limiting cases and independent implementations."""
import doctest
import math

import numpy as np
import pytest
from PIL import Image
from scipy.signal import convolve2d

import metrics
from metrics import core as M
from metrics.core import MetricError

RNG = np.random.default_rng(7)
QMAX = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))


def smooth_image(h: int = 64, w: int = 80) -> np.ndarray:
    """A textured 8-bit image with both smooth areas and edges."""
    y, x = np.mgrid[0:h, 0:w]
    img = 120 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + RNG.normal(0, 10, (h, w))
    img[h // 3 : h // 2, w // 4 : w // 2] += 50
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --- single-image metrics -------------------------------------------------------------------------


def test_constant_image_has_no_information_or_detail():
    f = np.full((20, 30), 77, np.uint8)
    assert M.entropy(f) == 0
    assert M.std_dev(f) == 0
    assert M.spatial_frequency(f) == 0
    assert M.average_gradient(f) == 0


def test_entropy_two_equiprobable_values_is_one_bit():
    assert M.entropy(np.array([[0, 255], [255, 0]], np.uint8)) == pytest.approx(1.0)


def test_entropy_hand_example():
    f = np.array([[0, 0], [0, 255]], np.uint8)
    assert M.entropy(f) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_entropy_of_float_input_matches_uint8():
    f = smooth_image()
    assert M.entropy(f.astype(np.float32)) == M.entropy(f)


def test_std_dev_hand_example():
    assert M.std_dev(np.array([[0, 2], [4, 6]], np.uint8)) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_hand_example():
    # horizontal differences 1, 2 -> RF^2 = 2.5; vertical 3, 4 -> CF^2 = 12.5
    assert M.spatial_frequency(np.array([[0, 1], [3, 5]], np.uint8)) == pytest.approx(math.sqrt(15))


def test_spatial_frequency_of_ramp_is_its_slope():
    ramp = np.tile(np.arange(0, 60, 3, dtype=np.uint8), (10, 1))
    assert M.spatial_frequency(ramp) == pytest.approx(3.0)
    assert M.spatial_frequency(ramp.T) == pytest.approx(3.0)


def test_average_gradient_of_ramp():
    ramp = np.tile(np.arange(0, 60, 3, dtype=np.uint8), (10, 1))
    assert M.average_gradient(ramp) == pytest.approx(3 / math.sqrt(2))


def test_average_gradient_one_sided_at_borders_central_inside():
    # columns 0, 1, 4: gradients 1 (one-sided), 2 (central), 3 (one-sided); no vertical change
    f = np.tile(np.array([0, 1, 4], np.uint8), (3, 1))
    assert M.average_gradient(f) == pytest.approx(2 / math.sqrt(2))


def test_average_gradient_hand_example():
    f = np.array([[0, 1], [3, 5]], np.uint8)  # gx rows: 1, 2; gy columns: 3, 4
    expected = np.mean([math.sqrt(v / 2) for v in (1 + 9, 1 + 16, 4 + 9, 4 + 16)])
    assert M.average_gradient(f) == pytest.approx(expected)


# --- correlation-based metrics --------------------------------------------------------------------

F4 = np.array([[1, 2], [3, 4]], np.uint8)
A4 = np.array([[1, 3], [2, 4]], np.uint8)  # corr(F4, A4) = 4 / 5
B4 = np.array([[4, 3], [2, 1]], np.uint8)


def test_cc_hand_example():
    assert M.cc(F4, A4, F4) == pytest.approx((0.8 + 1.0) / 2)
    assert M.cc(F4, F4, F4) == pytest.approx(1.0)
    assert M.cc(F4, A4, B4) == pytest.approx((0.8 - 1.0) / 2)


def test_correlation_with_constant_is_zero_without_warning():
    with np.errstate(all="raise"):
        assert M.correlation(F4, np.full((2, 2), 9.0)) == 0.0
        assert M.cc(np.full((2, 2), 0.3), F4, A4) == 0.0


def test_scd_hand_example():
    # F - B = [-3, -1, 1, 3] against A: 8 / sqrt(20 * 5); F - A = [0, -1, 1, 0] against B: -1 / sqrt(2 * 5)
    assert M.scd(F4, A4, B4) == pytest.approx(0.8 - 1 / math.sqrt(10))


def test_scd_with_uint8_inputs_does_not_wrap_around():
    assert M.scd(F4, A4, B4) == pytest.approx(M.scd(F4.astype(float), A4.astype(float), B4.astype(float)))


# --- mutual information ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 16, 256])
def test_mi_of_identical_images_with_k_equiprobable_levels(k):
    f = np.repeat(np.linspace(0, 255, k).round().astype(np.uint8), 3).reshape(k, 3)
    assert M.mutual_information(f, f, f) == pytest.approx(2 * math.log2(k))


def test_mi_of_independent_images_is_zero():
    f = np.array([[0, 0], [255, 255]], np.uint8)
    a = np.array([[0, 255], [0, 255]], np.uint8)
    assert M.mi_single(f, a) == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_information(f, a, f) == pytest.approx(1.0)


def test_mi_is_symmetric_and_bounded_by_entropy():
    f, a = smooth_image(), smooth_image()
    assert M.mi_single(f, a) == pytest.approx(M.mi_single(a, f))
    assert 0 < M.mi_single(f, a) < min(M.entropy(f), M.entropy(a))


# --- VIF ------------------------------------------------------------------------------------------


def test_vif_of_identical_images_is_one_each():
    a = smooth_image()
    assert M.vif_single(a, a) == pytest.approx(1.0, abs=1e-8)
    assert M.vif(a, a, a) == pytest.approx(2.0, abs=1e-8)


def test_vif_drops_with_noise_and_blur():
    a = smooth_image().astype(float)
    noisy = a + RNG.normal(0, 20, a.shape)
    very_noisy = a + RNG.normal(0, 60, a.shape)
    assert 0 < M.vif_single(a, very_noisy) < M.vif_single(a, noisy) < 1


def test_vif_of_constant_fused_or_reference_is_zero():
    a = smooth_image()
    flat = np.full(a.shape, 100.0)
    assert M.vif_single(a, flat) == 0.0
    assert M.vif_single(flat, a) == 0.0


def test_vif_contrast_stretch_exceeds_one():
    a = smooth_image().astype(float)
    assert M.vif_single(a, 128 + 1.5 * (a - 128)) > 1


def direct_vif(ref: np.ndarray, dist: np.ndarray) -> float:
    """VIF with 2-D valid convolutions and np.where, step by step as in Sheikh and Bovik's code."""
    ref, dist = ref.astype(float), dist.astype(float)
    num = den = 0.0
    for scale in (1, 2, 3, 4):
        n = 2 ** (5 - scale) + 1
        t = np.arange(n) - (n - 1) / 2
        win = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (n / 5) ** 2))
        win /= win.sum()
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, mode="valid"), convolve2d(dist, win, mode="valid")
        s1 = np.maximum(convolve2d(ref * ref, win, mode="valid") - mu1 * mu1, 0)
        s2 = np.maximum(convolve2d(dist * dist, win, mode="valid") - mu2 * mu2, 0)
        s12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g, sv, s1 = np.where(s1 < 1e-10, 0, g), np.where(s1 < 1e-10, s2, sv), np.where(s1 < 1e-10, 0, s1)
        g, sv = np.where(s2 < 1e-10, 0, g), np.where(s2 < 1e-10, 0, sv)
        sv, g = np.where(g < 0, s2, sv), np.where(g < 0, 0, g)
        sv = np.where(sv < 1e-10, 1e-10, sv)
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    return num / den


def test_vif_matches_direct_convolutions():
    a = smooth_image(70, 61).astype(float)
    a[:, :20] = 90  # a flat strip exercises the sigma1 < 1e-10 branch
    dists = [a + RNG.normal(0, 15, a.shape), 255 - a + RNG.normal(0, 5, a.shape), np.full(a.shape, 3.0)]
    for dist in dists:
        assert M.vif_single(a, dist) == pytest.approx(direct_vif(a, dist), rel=1e-9, abs=1e-12)


def test_vif_needs_41_pixel_sides():
    M.vif_single(np.zeros((41, 50)), np.zeros((41, 50)))
    with pytest.raises(ValueError, match="41x41"):
        M.vif_single(np.zeros((40, 50)), np.zeros((40, 50)))


# --- Qabf -----------------------------------------------------------------------------------------


def test_qabf_of_identical_images_is_the_normalisation_limit():
    a = smooth_image()
    # G = 1 and A = 1 at every edge pixel: 0.9994 / (1 + e^-7.5) * 0.9879 / (1 + e^-4.4)
    assert QMAX == pytest.approx(0.974794, abs=1e-6)
    assert M.qabf(a, a, a) == pytest.approx(QMAX, rel=1e-12)


def test_qabf_half_contrast_hand_value():
    # Sobel of a / 2 is exactly half: G = 0.5 everywhere, orientation unchanged
    a = smooth_image().astype(float)
    expected = 0.9994 / 2 * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert M.qabf(a / 2, a, a) == pytest.approx(expected, rel=1e-12)


def test_qabf_ignores_a_source_without_edges():
    a = smooth_image()
    flat = np.zeros_like(a)  # zero, so that even the zero padding adds no border edge
    assert M.qabf(a, a, flat) == pytest.approx(QMAX)
    assert M.qabf(flat, flat, flat) == 0.0


def test_qabf_flat_fused_image_keeps_almost_nothing():
    a = smooth_image()
    assert M.qabf(np.zeros_like(a), a, a) < 0.01


def direct_qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf one pixel at a time: Sobel sums over a zero-padded 3 x 3 neighbourhood, then the formula."""
    kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]

    def sobel(img, i, j):
        pad = np.pad(img.astype(float), 1)
        sx = sy = 0.0
        for di in range(3):
            for dj in range(3):
                # convolution flips the kernel; the flip cancels in Sy / Sx and in the strength
                sx += kx[di][dj] * pad[i + di, j + dj]
                sy += kx[dj][di] * pad[i + di, j + dj]
        alpha = math.pi / 2 if sx == 0 else math.atan(sy / sx)
        return math.hypot(sx, sy), alpha

    def q(gs, als, gf, alf):
        g = 0.0 if gs == gf == 0 else min(gs, gf) / max(gs, gf)
        ang = 1 - abs(als - alf) / (math.pi / 2)
        return 0.9994 / (1 + math.exp(-15 * (g - 0.5))) * 0.9879 / (1 + math.exp(-22 * (ang - 0.8)))

    num = den = 0.0
    for i in range(f.shape[0]):
        for j in range(f.shape[1]):
            (ga, ala), (gb, alb), (gf, alf) = sobel(a, i, j), sobel(b, i, j), sobel(f, i, j)
            num += q(ga, ala, gf, alf) * ga + q(gb, alb, gf, alf) * gb
            den += ga + gb
    return num / den


def test_qabf_matches_direct_per_pixel_computation():
    a, b = smooth_image(12, 15), smooth_image(12, 15)
    b[:, :5] = 0  # zero area: both strengths 0 inside, where G is defined as 0
    f = np.maximum(a, b)
    assert M.qabf(f, a, b) == pytest.approx(direct_qabf(f, a, b), rel=1e-12)


def test_qabf_zero_padding_sees_image_border_as_edge():
    # a constant non-zero image has Sobel responses only on its border, where padding is zero
    f = np.full((8, 8), 10.0)
    assert M.qabf(f, f, f) == pytest.approx(QMAX)
    assert M.qabf(f, f, np.zeros_like(f)) == pytest.approx(QMAX)


# --- SSIM / MS-SSIM -------------------------------------------------------------------------------


def gaussian_window(side: int, sigma: float = 1.5) -> np.ndarray:
    t = np.arange(side) - (side - 1) / 2
    w = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    return w / w.sum()


def direct_ssim_terms(x: np.ndarray, y: np.ndarray, side: int) -> tuple[float, float]:
    """Mean luminance*cs and mean cs, one window at a time, straight from Wang et al.'s formulas."""
    x, y = x.astype(float), y.astype(float)
    w = gaussian_window(side)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssims, css = [], []
    for i in range(x.shape[0] - side + 1):
        for j in range(x.shape[1] - side + 1):
            px, py = x[i : i + side, j : j + side], y[i : i + side, j : j + side]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * (px - mx) ** 2), np.sum(w * (py - my) ** 2)
            cov = np.sum(w * (px - mx) * (py - my))
            cs = (2 * cov + c2) / (vx + vy + c2)
            ssims.append((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs)
            css.append(cs)
    return float(np.mean(ssims)), float(np.mean(css))


def test_ssim_of_identical_images_is_one_each():
    a = smooth_image()
    assert M.ssim_single(a, a) == pytest.approx(1.0)
    assert M.ssim(a, a, a) == pytest.approx(2.0)


def test_ssim_matches_direct_windowed_sums():
    x = smooth_image(19, 23)
    y = np.clip(x.astype(float) * 0.7 + RNG.normal(20, 15, x.shape), 0, 255)
    expected, _ = direct_ssim_terms(x, y, 11)
    assert M.ssim_single(x, y) == pytest.approx(expected, rel=1e-10)
    assert M.ssim(y, x, x) == pytest.approx(2 * expected, rel=1e-10)


def test_ssim_is_lower_for_a_worse_copy():
    a = smooth_image().astype(float)
    assert M.ssim_single(a, a + RNG.normal(0, 40, a.shape)) < M.ssim_single(a, a + RNG.normal(0, 5, a.shape))


def test_ms_ssim_of_identical_images_is_one_each():
    a = smooth_image()
    assert M.ms_ssim(a, a, a) == pytest.approx(2.0)


def halve(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return (x[0:h:2, 0:w:2] + x[1:h:2, 0:w:2] + x[0:h:2, 1:w:2] + x[1:h:2, 1:w:2]) / 4


def test_ms_ssim_matches_direct_computation_with_shrinking_window():
    # 36 x 41 -> 18 x 20 -> 9 x 10 -> 4 x 5 -> 2 x 2: windows 11, 11, 9, 4, 2
    x0 = smooth_image(36, 41).astype(float)
    y0 = np.clip(x0 * 0.8 + RNG.normal(15, 12, x0.shape), 0, 255)
    expected, x, y = 1.0, x0, y0
    for scale, weight in enumerate((0.0448, 0.2856, 0.3001, 0.2363, 0.1333)):
        s, cs = direct_ssim_terms(x, y, min(11, *x.shape))
        expected *= (cs if scale < 4 else s) ** weight
        x, y = halve(x), halve(y)
    assert M.ms_ssim_single(x0, y0) == pytest.approx(expected, rel=1e-10)


def test_ms_ssim_clips_anticorrelated_structure_to_zero():
    a = smooth_image().astype(float)
    assert M.ms_ssim_single(a, 255 - a) == 0.0


def test_ms_ssim_needs_16_pixel_sides():
    a = smooth_image(16, 16)
    assert M.ms_ssim_single(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="16x16"):
        M.ms_ssim_single(a[:15], a[:15])


# --- PSNR -----------------------------------------------------------------------------------------


def test_psnr_hand_example():
    f = np.zeros((4, 5), np.uint8)
    a, b = np.full_like(f, 10), np.full_like(f, 20)  # MSEs 100 and 400
    assert M.psnr(f, a, b) == pytest.approx(10 * math.log10(255**2 / 250))


def test_psnr_is_infinite_when_fused_equals_both_sources():
    a = smooth_image()
    assert M.psnr(a, a, a) == math.inf
    assert math.isfinite(M.psnr(a, a, 255 - a))


# --- score_pair -----------------------------------------------------------------------------------


def test_score_pair_computes_all_metrics_in_display_order():
    a, b = smooth_image(), smooth_image()
    f = ((a.astype(float) + b) / 2).round().astype(np.uint8)
    scores = M.score_pair(f, a, b)
    names = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "MS-SSIM", "PSNR", "CC"]
    assert list(scores) == names
    assert list(scores) == list(M.METRICS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["SSIM"] == pytest.approx(M.ssim(f, a, b))
    assert M.score_pair(f.astype(float), a.astype(float), b.astype(float)) == pytest.approx(scores)


def test_score_pair_subset_and_small_images():
    tiny = np.array([[0, 1], [3, 5]], np.uint8)
    assert M.score_pair(tiny, tiny, tiny, ["SF", "PSNR"]) == {"SF": math.sqrt(15), "PSNR": math.inf}


@pytest.mark.parametrize(
    ("shapes", "metrics", "match"),
    [
        (((50, 50), (50, 50), (50, 51)), None, "sizes differ"),
        (((50, 50, 3), (50, 50, 3), (50, 50, 3)), None, "2-D"),
        (((30, 50), (30, 50), (30, 50)), None, "too small"),
        (((30, 50), (30, 50), (30, 50)), ["EN", "NOPE"], "unknown metric"),
    ],
)
def test_score_pair_rejects_bad_input_with_one_line(shapes, metrics, match):
    images = [np.zeros(s, np.uint8) for s in shapes]
    with pytest.raises(MetricError, match=match) as info:
        M.score_pair(*images, metrics, label="07.png")
    assert "\n" not in str(info.value)


def test_real_tno_pair_scores_are_plausible(shared_data):
    a = np.asarray(Image.open(shared_data / "tno" / "ir" / "01.png").convert("L"))
    b = np.asarray(Image.open(shared_data / "tno" / "vi" / "01.png").convert("L"))
    f = ((a.astype(float) + b) / 2).round().astype(np.uint8)
    s = M.score_pair(f, a, b)
    assert all(math.isfinite(v) for v in s.values())
    assert 0 < s["EN"] <= 8
    assert 0 < s["SD"] < 128
    assert 0 < s["SF"] < 50 and 0 < s["AG"] < 50
    assert 0 < s["MI"] < 2 * s["EN"]
    assert 0 < s["SCD"] < 2
    assert 0 < s["VIF"] < 2
    assert 0 < s["Qabf"] < QMAX
    assert 0 < s["SSIM"] < 2 and 0 < s["MS-SSIM"] < 2
    assert 10 < s["PSNR"] < 40
    assert 0 < s["CC"] < 1


def test_the_front_docstring_example_runs_as_it_stands():
    result = doctest.testmod(metrics)
    assert result.attempted and not result.failed
