"""Metric profiles against the toolboxes' own numbers, and the new metrics against known answers.

The toolbox values in ../shared/reference/metric_profiles/*.csv were produced by the unmodified MATLAB
toolboxes (GNU Octave) and MMIF-CDDFuse's Python evaluator for the mean and max fusions of TNO pairs.
Every value is reproduced here; the tolerance is far tighter than the 0.5% the profiles promise.
"""
import csv
import itertools
import math

import numpy as np
import pytest
from scipy import fft

from dataio.toolbox_readers import READERS, read_matlab, read_opencv
from metrics import core as M
from metrics.core import MetricError
from metrics.csf import qcb, qcv, stretch_to_255
from metrics.fmi import dwt2_mosaic, feature_mi, features, fmi, highpass, meyer_filter
from metrics.mef_ssim import mef_ssim, mef_ssim_single_scale
from metrics.profiles import PROFILES, get_profile, score
from tests.conftest import DATA, REFERENCE
from utils.errors import CrossFuseError

PROFILE_CSVS = REFERENCE / "metric_profiles"
TOLERANCE = {"rel": 1e-4, "abs": 1e-12}
RNG = np.random.default_rng(11)


def texture(h: int = 48, w: int = 56, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 128 + 60 * np.sin(x / (3 + seed)) * np.cos(y / 5) + rng.normal(0, 15, (h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --- the toolboxes' numbers -----------------------------------------------------------------------


def reference_rows(profile: str) -> list[dict[str, str]]:
    path = PROFILE_CSVS / f"{profile}.csv"
    if not path.is_file() or not (DATA / "tno" / "ir").is_dir():
        pytest.skip(f"toolbox reference values or TNO pairs not found under {PROFILE_CSVS.parent.parent}")
    with path.open() as rows:
        return list(csv.DictReader(rows))


class Scores:
    """Per (rule, pair) images and scores, computed once for the whole module.

    A metric function that several profiles share (MEF-SSIM, VIF, the toolbox Qabf, ...) is
    computed once per image: the TNO pairs are gray, so every profile's reader gives the same values.
    """

    def __init__(self) -> None:
        self.cache: dict[tuple, object] = {}

    def images(self, profile: str, rule: str, pair: str) -> tuple[np.ndarray, ...]:
        key = ("images", profile, rule, pair)
        if key not in self.cache:
            read = READERS[get_profile(profile).reader]
            a, b = read(DATA / "tno" / "ir" / f"{pair}.png"), read(DATA / "tno" / "vi" / f"{pair}.png")
            a8, b8 = a.astype(np.uint8), b.astype(np.uint8)
            # the fused images of the reference README: round half to even, or the pixel maximum
            f = np.round((a8.astype(np.float64) + b8) / 2).astype(np.uint8) if rule == "mean" else np.maximum(a8, b8)
            self.cache[key] = (f.astype(a.dtype), a, b)
        return self.cache[key]

    def value(self, profile: str, rule: str, pair: str, metric: str) -> float:
        key = (get_profile(profile).metrics[metric], rule, pair)
        if key not in self.cache:
            f, a, b = self.images(profile, rule, pair)
            self.cache[key] = score(get_profile(profile), f, a, b, [metric])[metric]
        return self.cache[key]


@pytest.fixture(scope="module")
def scores() -> Scores:
    return Scores()


@pytest.mark.parametrize("profile", ["vifb", "tang", "crossfuse", "cddfuse"])
def test_profile_names_its_metrics_as_the_toolbox_does(profile):
    header = [c for c in reference_rows(profile)[0] if c not in ("rule", "pair")]
    names = list(get_profile(profile).metrics)
    extra = ["FMI_pixel", "FMI_dct", "FMI_w"] if profile == "crossfuse" else []  # not in the toolbox run
    assert names == header + extra


@pytest.mark.parametrize("profile", ["vifb", "tang", "crossfuse", "cddfuse"])
def test_profile_reproduces_every_toolbox_value(profile, scores):
    mismatches = []
    for row in reference_rows(profile):
        for metric, expected in row.items():
            if metric in ("rule", "pair"):
                continue
            got = scores.value(profile, row["rule"], row["pair"], metric)
            if got != pytest.approx(float(expected), **TOLERANCE):
                mismatches.append(f"{row['rule']} {row['pair']} {metric}: {got!r} != {expected}")
    assert not mismatches, "\n".join(mismatches)


def test_profiles_really_differ_on_the_same_images(scores):
    """The reason profiles exist: one image, five conventions, different numbers."""
    rule, pair = "max", "01"
    tang_mi = scores.value("tang", rule, pair, "MI")
    cdd_mi = scores.value("cddfuse", rule, pair, "MI")
    assert tang_mi > cdd_mi / math.log(2) > cdd_mi  # saturation bug raises it; nats lower it
    assert scores.value("crossfuse", rule, pair, "MI") == pytest.approx(2 * scores.value("crossfuse", rule, pair, "EN"))
    assert scores.value("vifb", rule, pair, "Ssim") > 1 > scores.value("tang", rule, pair, "SSIM")


# --- readers --------------------------------------------------------------------------------------


def test_readers_follow_matlab_and_opencv_luma(tmp_path):
    from PIL import Image

    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 31], [7, 7, 7]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    # MATLAB rgb2gray: 0.2989 R + 0.5870 G + 0.1140 B rounded; OpenCV: 0.299, 0.587, 0.114 in float32
    assert read_matlab(tmp_path / "c.png").tolist() == [[76, 150, 29, 124, 7]]
    opencv = read_opencv(tmp_path / "c.png")
    assert opencv.dtype == np.float32 and opencv.tolist() == [[76, 150, 29, 124, 7]]
    assert read_matlab(tmp_path / "g.png").tolist() == [rgb[0, :, 0].tolist()]
    with pytest.raises(CrossFuseError, match="no such file"):
        read_opencv(tmp_path / "nope.png")


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(MetricError, match="unknown metric profile 'matlab'; choose from suite, vifb"):
        get_profile("matlab")
    assert list(PROFILES) == ["suite", "vifb", "tang", "crossfuse", "cddfuse"]


def test_suite_profile_is_the_suite():
    f, a, b = texture(seed=1), texture(seed=2), texture(seed=3)
    assert score(get_profile("suite"), f, a, b) == M.score_pair(f, a, b)


def test_profile_checks_sizes_before_scoring():
    small = texture(40, 40)
    with pytest.raises(MetricError, match="too small, MS_SSIM need sides >= 44"):
        score(get_profile("tang"), small, small, small, ["MS_SSIM"])


# --- known answers: simple new metrics ------------------------------------------------------------


def test_cross_entropy_hand_example():
    src = np.array([[0, 0, 255, 255]], np.uint8)
    f = np.array([[0, 255, 255, 255]], np.uint8)
    # 0.5 log2(0.5 / 0.25) + 0.5 log2(0.5 / 0.75)
    assert M.cross_entropy(f, src) == pytest.approx(0.5 + 0.5 * math.log2(2 / 3))
    assert M.cross_entropy(src, src) == 0


def test_edge_intensity_of_a_ramp():
    ramp = np.tile(np.arange(0, 30, 3.0), (6, 1))  # slope 3 per column
    # Sobel response 8 * 3 inside, 4 * 3 in the replicated first and last columns
    assert M.edge_intensity(ramp) == pytest.approx((24 * 8 + 12 * 2) / 10)
    assert M.edge_intensity(np.full((5, 5), 9.0)) == 0


def test_vifb_rmse_and_psnr_use_root_sum_of_squares_per_pixel():
    vifb = get_profile("vifb").metrics
    f = np.zeros((2, 2))
    a = np.array([[3.0, 0], [0, 4]])  # sqrt(9 + 16) / 4 = 1.25
    b = np.zeros((2, 2))
    assert vifb["Rmse"](f, a, b) == pytest.approx((1.25 + 0) / 2)
    assert vifb["Psnr"](f, a, b) == pytest.approx(20 * math.log10(255 / math.sqrt(0.625)))


def test_nabf_counts_only_edges_stronger_than_both_sources():
    a = b = np.full((8, 10), 50.0)
    f = a.copy()
    f[:, 5:] = 150  # a vertical step only F has
    assert M.nabf(a, a, a) == 0
    # flat sources weigh 0.001 everywhere; at F's edge pixels the strength ratio is 0 and the
    # orientation (pi/2: no vertical response) differs from the sources' (0) by pi/2
    q = math.sqrt(0.9999 / (1 + math.exp(19 * 0.5)) * 0.9995 / (1 + math.exp(22 * 0.5)))
    artefact = 2 * 8 / f.size  # columns 4 and 5 see the step
    assert M.nabf(f, a, b) == pytest.approx(artefact * (1 - q))


def test_nabf_threshold_makes_weights_uniform_on_a_0_to_1_scale():
    f, a, b = (texture(seed=s) / 255 for s in (1, 2, 3))
    assert M.nabf(f, a, b) == M.nabf(f, a, b, threshold=math.inf)
    assert M.nabf(f * 255, a * 255, b * 255) != pytest.approx(M.nabf(f * 255, a * 255, b * 255, threshold=math.inf))


def test_toolbox_qabf_differs_from_the_suite_only_by_its_two_quirks():
    f, a, b = texture(seed=1), texture(seed=2), texture(seed=3)
    assert M.qabf(f, a, b, toolbox=True) != M.qabf(f, a, b)
    # a perfect copy: every edge pixel has equal strengths, so its relative strength is the strength
    g = M._sobel(a.astype(float))[0]
    q = 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert M.qabf(a, a, a, toolbox=True) == pytest.approx(np.sum(q * g) / np.sum(g))
    assert M.qabf(a, a, a) == pytest.approx(0.9994 / (1 + math.exp(-7.5)) * 0.9879 / (1 + math.exp(-22 * 0.2)))


# --- known answers: Qcb, Qcv ----------------------------------------------------------------------


def test_stretch_to_255_rounds_half_up():
    assert stretch_to_255(np.array([[10.0, 11.0, 12.0]])).tolist() == [[0, 128, 255]]  # 127.5 -> 128
    assert stretch_to_255(np.zeros((2, 2))).tolist() == [[0, 0], [0, 0]]


def test_qcb_of_a_perfect_copy_is_one_and_drops_for_a_flat_fusion():
    a, b = texture(seed=1), texture(seed=2)
    assert qcb(a, a, a) == pytest.approx(1.0)
    assert qcb(((a / 2.0 + b / 2.0)).round(), a, b) < 1
    blurred = np.full_like(a, 100)
    blurred[::7] = 101
    assert qcb(blurred, a, b) < qcb(((a / 2.0 + b / 2.0)).round(), a, b)


def test_qcv_is_zero_for_a_perfect_copy_and_grows_with_the_difference():
    a, b = texture(seed=1), texture(seed=2)
    assert qcv(a, a, a) == 0
    mid = (a / 2.0 + b / 2.0).round()
    assert 0 < qcv(mid, a, b) < qcv(np.clip(mid + RNG.normal(0, 40, mid.shape), 0, 255).round(), a, b)


# --- known answers: MEF-SSIM -----------------------------------------------------------------------


def mef_ssim_direct(sources: list[np.ndarray], f: np.ndarray) -> float:
    """MEF-SSIM at one scale patch by patch, as Ma et al. define it (slow, for checking)."""
    side, half = 11, 5
    g = M.gauss1d(side, 1.5)
    window = np.outer(g, g).ravel()
    eps = np.finfo(float).eps
    xs = [s.astype(float) for s in sources]
    f = f.astype(float)
    scores = []
    for i, j in itertools.product(range(half, f.shape[0] - half), range(half, f.shape[1] - half)):
        patches = [x[i - half : i + half + 1, j - half : j + half + 1].ravel() for x in xs]
        means = [p.mean() for p in patches]
        norms = [np.linalg.norm(p - m) for p, m in zip(patches, means, strict=True)]
        contrast = np.array(norms) + 0.001
        total = sum(patches)
        r = (np.linalg.norm(total - total.mean()) + eps) / (sum(norms) + eps)
        r = min(max(r, eps), 1 - eps) if r != 1 else r
        power = min(math.tan(math.pi / 2 * r), 10)
        w = (contrast / side) ** power + eps
        w /= w.sum()
        desired = sum(wk * (p - m) / c for wk, p, m, c in zip(w, patches, means, contrast, strict=True))
        if np.linalg.norm(desired) > 0:
            desired = desired / np.linalg.norm(desired) * contrast.max()
        fp = f[i - half : i + half + 1, j - half : j + half + 1].ravel()
        m1, m2 = window @ desired, window @ fp
        s1, s2 = window @ (desired - m1) ** 2, window @ (fp - m2) ** 2
        s12 = window @ ((desired - m1) * (fp - m2))
        c = (0.03 * 255) ** 2
        scores.append((2 * s12 + c) / (s1 + s2 + c))
    return float(np.mean(scores))


def test_mef_ssim_matches_the_patch_by_patch_definition():
    a, b = texture(22, 26, seed=1), texture(22, 26, seed=2)
    f = np.maximum(a, b)
    assert mef_ssim_single_scale([a, b], f) == pytest.approx(mef_ssim_direct([a, b], f), rel=1e-9)
    flat = np.full((22, 26), 90, np.uint8)
    assert mef_ssim_single_scale([flat, a], f) == pytest.approx(mef_ssim_direct([flat, a], f), rel=1e-9)


def test_mef_ssim_known_values():
    flat = np.full((48, 48), 40.0)
    assert mef_ssim([flat, flat + 20], flat + 5) == pytest.approx(1.0)  # no structure anywhere
    a = texture(seed=4)
    assert mef_ssim([a, a], a) == pytest.approx(1.0, abs=1e-4)  # 0.001 added to contrast
    assert mef_ssim_single_scale([a, a], 255 - a) < 0  # inverted structure
    with pytest.raises(ValueError, match="at least 44x44"):
        mef_ssim([flat[:43], flat[:43]], flat[:43])


# --- known answers: FMI ---------------------------------------------------------------------------


def fmi_direct(x: np.ndarray, f: np.ndarray) -> float:
    """Normalised FMI of one source, window by window with the full 9 x 9 joint distribution."""
    values = []
    for i, j in itertools.product(range(1, f.shape[0] - 1), range(1, f.shape[1] - 1)):
        xs = x[i - 1 : i + 2, j - 1 : j + 2].ravel(order="F")
        fs = f[i - 1 : i + 2, j - 1 : j + 2].ravel(order="F")
        if np.array_equal(xs, fs):
            values.append(1.0)
            continue
        pdfs = []
        for v in (xs, fs):
            v = np.ones(9) if v.max() == v.min() else (v - v.min()) / (v.max() - v.min())
            pdfs.append(v / v.sum())
        px, pf = pdfs
        cx, cf = np.cumsum(px), np.cumsum(pf)
        c = np.corrcoef(px, pf)[0, 1] if np.ptp(px) and np.ptp(pf) else 0.0
        pos = np.arange(1, 10)
        sx = math.sqrt(max(px @ pos**2 - (px @ pos) ** 2, 0))
        sf = math.sqrt(max(pf @ pos**2 - (pf @ pos) ** 2, 0))
        cdf = np.minimum.outer(cf, cx) if c >= 0 else np.maximum(np.add.outer(cf, cx) - 1, 0)
        cov = np.sum(cdf - np.outer(cf, cx))
        mix = 0.0 if c == 0 or sx == 0 or sf == 0 else c / (cov / (sf * sx))
        bound = np.diff(np.diff(np.pad(cdf, ((1, 0), (1, 0))), axis=0), axis=1)
        joint = mix * bound + (1 - mix) * np.outer(pf, px)
        nz = joint != 0
        h_joint = -np.sum(joint[nz] * np.log2(np.abs(joint[nz])))
        hx = -np.sum(px[px > 0] * np.log2(px[px > 0]))
        hf = -np.sum(pf[pf > 0] * np.log2(pf[pf > 0]))
        mi = hx + hf - h_joint
        values.append(0.0 if mi == 0 else 2 * mi / (hx + hf))
    return float(np.mean(values))


@pytest.mark.parametrize("feature", ["pixel", "dct"])
def test_fmi_matches_the_window_by_window_definition(feature):
    a, b = texture(14, 17, seed=1), texture(14, 17, seed=2)
    f = (a / 2.0 + b / 2.0).round()
    f[3:6, 4:8] = a[3:6, 4:8]  # some windows equal to a source
    fa, fb, ff = (features(x, feature) for x in (a, b, f))
    expected = (fmi_direct(fa, ff) + fmi_direct(fb, ff)) / 2
    assert fmi(f, a, b, feature) == pytest.approx(expected, rel=1e-10)


def test_fmi_wavelet_compares_the_coefficient_mosaics():
    a, b = texture(14, 17, seed=1), texture(14, 17, seed=2)
    f = np.maximum(a, b)
    mosaics = [dwt2_mosaic(x.astype(float)) for x in (a, b, f)]
    ranged = [(m - m.min()) / (m.max() - m.min()) for m in mosaics]
    assert fmi(f, a, b, "wavelet") == pytest.approx(feature_mi(*ranged), rel=1e-12)
    crop = [m[40:60, 50:75] for m in ranged]  # the window engine itself, on a piece of the mosaic
    assert feature_mi(*crop) == pytest.approx((fmi_direct(crop[0], crop[2]) + fmi_direct(crop[1], crop[2])) / 2)


def test_fmi_known_values():
    a = texture(seed=3)
    assert fmi(a, a, a) == 1.0
    assert fmi(np.full((6, 6), 3.0), np.full((6, 6), 7.0), np.full((6, 6), 9.0)) == 0.0  # flat: independent
    f, b = texture(seed=4), texture(seed=5)
    assert 0 < fmi(f, a, b) < 1


def test_fmi_features_dct_and_meyer_wavelet():
    x = texture(16, 20, seed=6).astype(float)
    assert np.allclose(features(x, "dct"), fft.dctn(x, norm="ortho"))
    h = meyer_filter()
    assert len(h) == 102 and h[0] == 0 and np.allclose(h[1:], h[1:][::-1])  # MATLAB's dmey layout
    assert h.sum() == pytest.approx(math.sqrt(2), rel=1e-5) and h @ h == pytest.approx(1)
    assert all(abs(h[: -2 * k] @ h[2 * k :]) < 1e-8 for k in range(1, 10))  # orthogonal to even shifts
    haar = np.full(2, math.sqrt(0.5))
    assert highpass(haar) == pytest.approx([-math.sqrt(0.5), math.sqrt(0.5)])
    assert highpass(h) @ h == pytest.approx(0, abs=1e-12)
    flat = dwt2_mosaic(np.full((40, 50), 7.0))
    rows, cols = (40 + 101) // 2, (50 + 101) // 2
    assert flat.shape == (2 * rows, 2 * cols)
    assert np.allclose(flat[:rows, :cols], 14, rtol=1e-4)  # low-pass gain sqrt(2) per axis
    assert np.allclose(flat[rows:], 0, atol=1e-3) and np.allclose(flat[:, cols:], 0, atol=1e-3)
    with pytest.raises(ValueError, match="unknown FMI feature"):
        features(x, "edge")
