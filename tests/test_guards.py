"""The artefact guards on constructed cases built from real TNO pairs."""
from pathlib import Path

import numpy as np
import pytest

from dataio.images import read_gray
from evaluation.guards import (
    blobs,
    collapsed,
    image_flags,
    input_dependence,
    periodic,
    reference_fusions,
    seams,
    tile_period,
    token_period,
)
from net.config import ModelConfig


@pytest.fixture(scope="module")
def tno(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    irs = sorted((shared_data / "tno" / "ir").glob("*.png"))
    assert len(irs) == 25
    return [(read_gray(p), read_gray(shared_data / "tno" / "vi" / p.name)) for p in irs]


def mean_fusion(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    return reference_fusions(ir, vi)["pixel-mean"]


def dotted(image: np.ndarray, period: int = 16, amplitude: float = 30) -> np.ndarray:
    """2 x 2 bright dots every `period` pixels, as the collapsed CAM's token pattern looks."""
    out = image.astype(np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::period, dx::period] += amplitude
    return np.clip(out, 0, 255).astype(np.uint8)


def test_reference_fusions_round_and_take_the_max():
    ir = np.array([[1, 2, 250, 0]], dtype=np.uint8)
    vi = np.array([[2, 3, 255, 0]], dtype=np.uint8)
    refs = reference_fusions(ir, vi)
    np.testing.assert_array_equal(refs["pixel-mean"], [[2, 2, 252, 0]])  # rint: halves to even, no overflow
    np.testing.assert_array_equal(refs["pixel-max"], [[2, 3, 255, 0]])
    assert refs["pixel-mean"].dtype == np.uint8 == refs["pixel-max"].dtype


def test_periods_follow_the_model_config():
    assert token_period() == 16 and tile_period() == 256
    assert token_period(ModelConfig(patch=4)) == 32 and tile_period(ModelConfig(tile=16)) == 128


def test_real_fusions_are_not_flagged(tno):
    for i, (ir, vi) in enumerate(tno):
        for name, fused in reference_fusions(ir, vi).items():
            assert image_flags(fused, ir, vi) == [], f"TNO pair {i + 1}, {name}"


def test_flat_image_is_collapsed(tno):
    ir, vi = tno[0]
    flag = collapsed(np.full_like(ir, 128), ir, vi)
    assert flag.flagged and flag.value == 0


def test_outliers_do_not_hide_a_collapse(tno):
    """A few extreme pixels set a min-max stretch and squeeze the rest into a few grey levels."""
    ir, vi = tno[0]
    rng = np.random.default_rng(0)
    squeezed = (120 + rng.integers(-3, 4, ir.shape)).astype(np.uint8)
    squeezed.flat[rng.choice(squeezed.size, squeezed.size // 500, replace=False)] = 255
    assert np.std(squeezed) > 5  # what a std-based contrast would see
    assert [f.name for f in image_flags(squeezed, ir, vi)] == ["collapsed"]


def test_dotted_grid_on_a_real_fusion_is_periodic(tno):
    detected = 0
    for ir, vi in tno:
        fused = dotted(mean_fusion(ir, vi))
        assert not collapsed(fused, ir, vi).flagged
        detected += periodic(fused, ir, vi).flagged
    assert detected >= 22  # the rest are pairs whose own sources carry a strong 16 px pattern


def test_dots_at_another_period_are_not_the_cam_artefact(tno):
    ir, vi = tno[0]
    assert not periodic(dotted(mean_fusion(ir, vi), period=23), ir, vi).flagged


def test_tile_sized_stripes_show_as_seams(tno):
    ir, vi = tno[0]
    fused = mean_fusion(ir, vi).astype(np.float64)
    fused[:, (np.arange(fused.shape[1]) // 256) % 2 == 1] += 20
    fused = np.clip(fused, 0, 255).astype(np.uint8)
    assert seams(fused, ir, vi).flagged
    assert not seams(mean_fusion(ir, vi), ir, vi).flagged


def test_input_independent_output_is_flagged(tno):
    pairs = tno[:6]
    stripes = 100 + 20 * np.sin(np.arange(800) * 2 * np.pi / 16)
    pattern = dotted(np.broadcast_to(stripes, (600, 800)).astype(np.uint8))  # grey stripes and dots

    def ignores_input(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        own = pattern[: ir.shape[0], : ir.shape[1]].astype(np.float64)
        return np.clip(own + 0.05 * ir, 0, 255).astype(np.uint8)

    assert all(f.flagged for f in input_dependence(ignores_input, pairs))
    assert not any(f.flagged for f in input_dependence(mean_fusion, pairs))
    with pytest.raises(ValueError, match="at least two pairs"):
        input_dependence(mean_fusion, pairs[:1])


def test_input_dependence_fuses_only_what_it_was_not_given(tno):
    """Full-size fusions the caller holds are used where the common crop is the whole image; the rest is
    fused once per crop, and the flags are those of fusing everything afresh."""
    pairs = tno[:6]
    calls = []

    def counted(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        calls.append(ir.shape)
        return mean_fusion(ir, vi)

    fresh = input_dependence(counted, pairs)
    fresh_calls = len(calls)
    calls.clear()
    reused = input_dependence(counted, pairs, [mean_fusion(ir, vi) for ir, vi in pairs])
    assert [(f.value, f.threshold) for f in reused] == [(f.value, f.threshold) for f in fresh]
    sizes = [ir.shape for ir, _ in pairs]
    crops = {(i, min(sizes[i][0], sizes[j][0]), min(sizes[i][1], sizes[j][1]))
             for i in range(6) for j in ((i + 1) % 6, (i - 1) % 6)}
    assert fresh_calls == len(crops) < 12  # a crop shared by both neighbours is fused once
    assert len(calls) == sum(sizes[i] != (h, w) for i, h, w in crops) < fresh_calls


def sky_blob(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """The pixel-mean fusion with the pole's blob drawn into the top: a dark core beside a bright rim."""
    out = mean_fusion(ir, vi).astype(np.float64)
    out[8:20, 40:50], out[8:20, 50:56] = 0, 255
    return out.astype(np.uint8)


def test_a_dark_core_in_a_bright_sky_is_a_blob():
    rng = np.random.default_rng(0)
    ir = np.clip(60 + rng.normal(0, 2, (64, 96)), 0, 255).astype(np.uint8)  # a dark IR sky
    vi = np.clip(200 + rng.normal(0, 2, (64, 96)), 0, 255).astype(np.uint8)  # a flat bright VIS sky
    ir[40:], vi[40:] = 90, 60  # the ground
    flag = blobs(sky_blob(ir, vi), ir, vi)
    assert flag.flagged and flag.value == 12 * 16, flag  # the core (0 < 60 - 32) and the rim (255 > 200 + 32)
    assert any(f.name == "blobs" for f in image_flags(sky_blob(ir, vi), ir, vi))
    assert [f for f in image_flags(sky_blob(ir, vi), ir, vi) if f.name != "blobs"] == []  # no other guard sees it
    for fused in reference_fusions(ir, vi).values():
        assert not blobs(fused, ir, vi).flagged
    lifted = reference_fusions(ir, vi)["pixel-max"].astype(np.float64)
    lifted[:40] += 40  # the whole sky brighter than both sources: outside their range, no contrast of its own
    assert blobs(lifted.astype(np.uint8), ir, vi).value == 0


def test_a_contrast_stretch_of_a_real_fusion_is_not_a_blob(tno):
    """A 1.3x stretch of the pixel mean leaves no pixel outside the margin on any TNO pair (at 1.5x, 32
    pixels of pair 06 do: the margin is sized for fusions, which follow their sources' structure)."""
    for i, (ir, vi) in enumerate(tno):
        mean = mean_fusion(ir, vi).astype(np.float64)
        stretched = np.clip((mean - mean.mean()) * 1.3 + mean.mean(), 0, 255).astype(np.uint8)
        assert blobs(stretched, ir, vi).value == 0, f"TNO pair {i + 1}"
