"""One reading of each image kind (docs/images.md): every row of its table, and the six ways real thermal
and camera files were misread (high-depth stretch, 16-bit grey+alpha, false colour, EXIF orientation,
symlinked data sets, fused images' scale).

    python -m pytest tests/test_image_kinds.py
"""
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import fuse
from dataio import images
from dataio.cache import build_cache
from dataio.datasets import ImageTransform, PairDataset
from dataio.images import is_color, parse_range, read_gray, read_size
from dataio.pairs import find_images, find_pairs
from evaluation.folder_scores import score_folder
from formats.checkpoint import save_model
from metrics.profiles import get_profile
from net.config import ModelConfig
from net.model import CrossFuse
from training.settings import read_settings
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, patch=2, heads=2, mlp_ratio=2)


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    """Each test sees the once-per-process notes and warnings afresh."""
    monkeypatch.setattr(images, "_noted", set())


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path / "fusetrans_epoch_1.model", CrossFuse(TINY), "crossfuse", epoch=1)


def save(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def thermal(h: int = 48, w: int = 40, low: int = 7000, span: int = 1000) -> np.ndarray:
    """16-bit counts in a narrow band, as a thermal camera stores them: a smooth scene over low..low+span."""
    y, x = np.mgrid[0:h, 0:w]
    scene = (np.sin(x / 5) * np.cos(y / 7) + 1) / 2
    return (low + span * scene).round().astype(np.uint16)


def png_gray_alpha_16(path: Path, gray: np.ndarray) -> Path:
    """A 16-bit grey+alpha PNG (colour type 4), written by hand: PIL cannot write one."""
    h, w = gray.shape
    samples = np.stack([gray, np.full_like(gray, 65535)], axis=-1).astype(">u2").reshape(h, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in samples)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def levels(image: np.ndarray) -> int:
    return len(np.unique(image))


# --- 8-bit kinds: as they are -------------------------------------------------------------------------------

def test_eight_bit_kinds_read_as_their_luma(tmp_path):
    grey = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    assert np.array_equal(read_gray(save(tmp_path / "l.png", grey)), grey)
    assert np.array_equal(read_gray(save(tmp_path / "rgb.png", rgb), "ir"), grey)  # IR stored as RGB: grey
    rgba = np.dstack([rgb, np.zeros_like(grey)])  # alpha ignored, even fully transparent
    assert np.array_equal(read_gray(save(tmp_path / "rgba.png", rgba)), grey)
    assert np.array_equal(read_gray(save(tmp_path / "la.png", np.dstack([grey, grey]))), grey)
    palette = Image.fromarray(grey).convert("P")
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_gray(tmp_path / "p.png"), np.asarray(palette.convert("L")))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    Image.fromarray(rgb).save(tmp_path / "progressive.jpg", quality=100, progressive=True)
    for jpeg in ("cmyk.jpg", "progressive.jpg"):
        assert np.abs(read_gray(tmp_path / jpeg).astype(int) - grey).max() <= 3
    Image.fromarray(grey > 127).save(tmp_path / "bilevel.png")
    assert np.array_equal(read_gray(tmp_path / "bilevel.png"), np.where(grey > 127, 255, 0))
    assert not is_color(tmp_path / "rgb.png")


# --- cause 1: high-depth sources, stretched robustly -------------------------------------------------------

def test_one_hot_pixel_does_not_decide_how_a_16_bit_ir_looks(tmp_path):
    counts = thermal()
    counts[5, 5] = 65535  # one saturated pixel
    ir = read_gray(save(tmp_path / "ir.png", counts), "ir")
    assert levels(ir) > 200  # min..max left the rest with 9 grey levels


def test_a_zero_border_does_not_squeeze_the_ir(tmp_path):
    counts = thermal()
    counts[:, :8] = 0  # the fill registration leaves
    ir = read_gray(save(tmp_path / "ir.tif", counts), "ir")
    assert ir[:, 8:].min() <= 2 and ir.max() == 255 and levels(ir[:, 8:]) > 200  # min..max gave 198..255
    assert (ir[:, :8] == 0).all()


def test_the_stretch_used_is_noted_once(tmp_path, capsys):
    for i in range(3):
        read_gray(save(tmp_path / f"{i}.png", thermal(low=7000 + i)), "ir")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0.png is a 16-bit image, stretched from 70" in err[0] and "percentiles" in err[0]


def test_float_and_big_endian_sources_are_stretched_alike(tmp_path):
    counts = thermal()
    as_16 = read_gray(save(tmp_path / "a.png", counts), "ir")
    as_float = read_gray(save(tmp_path / "f.tif", counts.astype(np.float32) / 100), "ir")
    Image.frombytes("I;16B", (40, 48), counts.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    assert np.abs(as_float.astype(int) - as_16).max() <= 1
    assert np.array_equal(read_gray(tmp_path / "b.tif", "ir"), as_16)
    assert np.array_equal(read_gray(save(tmp_path / "i32.tif", counts.astype(np.int32)), "ir"), as_16)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_a_one_line_error_naming_the_file(tmp_path, bad):
    values = thermal().astype(np.float32)
    values[1, 1:4] = bad
    path = save(tmp_path / "ir.tif", values)
    with pytest.raises(CrossFuseError, match=r"ir\.tif: 3 pixel\(s\) are NaN or infinite"):
        read_gray(path, "ir")  # was: all zeros, fused without a word


def test_fuse_refuses_nan_ir_with_exit_2(tiny_model, tmp_path, capsys):
    values = thermal().astype(np.float32)
    values[0, :3] = np.nan
    ir, vi = save(tmp_path / "ir.tif", values), save(tmp_path / "vi.png", np.zeros((48, 40), np.uint8))
    code = fuse.main(["--ir", str(ir), "--vi", str(vi), "--out", str(tmp_path / "o.png"), "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {ir}: 3 pixel(s) are NaN or infinite" in err and not (tmp_path / "o.png").exists()


def test_an_explicit_ir_range_maps_every_frame_alike(tmp_path, capsys):
    cold, warm = thermal(low=7000, span=500), thermal(low=7500, span=500)
    a = read_gray(save(tmp_path / "a.png", cold), "ir", (7000, 8000))
    b = read_gray(save(tmp_path / "b.png", warm), "ir", (7000, 8000))
    assert a.max() <= 128 <= b.min()  # one count, one grey level, in every frame
    assert np.array_equal(a, np.round((cold - 7000.0) * 255 / 1000).astype(np.uint8))
    assert read_gray(save(tmp_path / "c.png", thermal(low=9000)), "ir", (7000, 8000)).min() == 255  # clipped
    assert read_gray(tmp_path / "a.png", "vi", (7000, 8000)).max() == 255  # the range is the IR side's only
    assert "stretched" in capsys.readouterr().err  # the VIS read noted its own range; the given one is not noted
    assert parse_range("7000, 8000") == (7000.0, 8000.0) and parse_range("") is None
    for text in ("8000,7000", "7000", "a,b", "nan,1"):
        with pytest.raises(CrossFuseError, match="expected"):
            parse_range(text)


def test_ir_range_is_a_setting_and_a_fuse_option(tiny_model, tmp_path):
    from args_end_to_end import EndToEnd
    from args_two_stage import Stage1, Stage2

    for args_class in (Stage1, Stage2, EndToEnd):
        assert read_settings(args_class, ["--ir_range=7000,9000"]).ir_range == "7000,9000"
        with pytest.raises(CrossFuseError, match="ir_range"):
            read_settings(args_class, ["--ir_range=9000,7000"])
    ir, vi = save(tmp_path / "ir.png", thermal()), save(tmp_path / "vi.png", np.zeros((48, 40), np.uint8))
    args = ["--ir", str(ir), "--vi", str(vi), "--model", str(tiny_model)]
    assert fuse.main([*args, "--out", str(tmp_path / "o.png"), "--ir-range", "7000,8000"]) == 0
    result = subprocess.run([sys.executable, "fuse.py", *args, "--out", str(tmp_path / "p.png"), "--ir-range", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: --ir-range=1: expected LOW,HIGH (two " \
        "numbers, e.g. 7000,9000)"


def test_training_and_evaluate_read_the_ir_over_the_given_range(tmp_path):
    sequence_dir = tmp_path / "set"
    for i, low in enumerate((7000, 7500)):
        save(sequence_dir / "ir" / f"{i}.png", thermal(48, 48, low=low, span=500))
        save(sequence_dir / "vi" / f"{i}.png", np.full((48, 48), 100, np.uint8))
        save(tmp_path / "fused" / f"{i}.png", np.full((48, 48), 100, np.uint8))
    pairs = find_pairs(sequence_dir).pairs
    expected = [np.round((thermal(48, 48, low=low, span=500) - 7000.0) * 255 / 1000) for low in (7000, 7500)]
    dataset = PairDataset(pairs, ImageTransform(size=48), ir_range=(7000, 8000))
    assert all(np.array_equal(dataset[i][0][0].numpy(), expected[i]) for i in range(2))
    own = np.load(build_cache(pairs, 48, tmp_path / "c"))[:, 0]
    fixed = np.load(build_cache(pairs, 48, tmp_path / "c", ir_range=(7000, 8000)))[:, 0]  # rebuilt for the range
    assert np.array_equal(fixed, np.stack(expected)) and not np.array_equal(own, fixed)
    args = ["--fused", str(tmp_path / "fused"), "--ir", str(sequence_dir / "ir"), "--vi", str(sequence_dir / "vi"),
            "--metrics", "EN,SD", "--json", str(tmp_path / "s.json")]
    assert evaluate.main([*args, "--ir-range", "7000,8000"]) == 0
    assert evaluate.main([*args, "--ir-range", "8000,7000"]) == 2


# --- cause 2: 16-bit grey+alpha ---------------------------------------------------------------------------

def test_16_bit_grey_alpha_png_reads_as_16_bit_grey(tmp_path):
    counts = thermal()
    ir = read_gray(png_gray_alpha_16(tmp_path / "ir.png", counts), "ir")
    assert np.array_equal(ir, read_gray(save(tmp_path / "plain.png", counts), "ir"))  # as the grey alone
    assert levels(ir) > 200  # the high bytes alone left 4 levels


# --- cause 3: false colour IR ------------------------------------------------------------------------------

def test_false_colour_ir_is_warned_in_one_line(tmp_path, capsys):
    t = thermal().astype(float)
    t = (t - t.min()) / (t.max() - t.min())
    jet = np.clip(np.stack([1.5 - abs(4 * t - 3), 1.5 - abs(4 * t - 2), 1.5 - abs(4 * t - 1)], -1), 0, 1)
    path = save(tmp_path / "ir.png", (jet * 255).round().astype(np.uint8))
    read_gray(path, "ir")
    read_gray(path, "ir")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {path}: IR image in colour") and "palette" in err[0]
    read_gray(path, "vi")  # a colour VIS image is what VIS images are
    grey = np.stack([(t * 255).round().astype(np.uint8)] * 3, -1)
    read_gray(save(tmp_path / "grey.jpg", grey, quality=90), "ir")  # grey through JPEG: channels differ by ~1
    assert capsys.readouterr().err == ""


# --- cause 4: EXIF orientation -----------------------------------------------------------------------------

def sideways(path: Path, upright: np.ndarray, **options) -> Path:
    """Save the upright image rotated 90 degrees with EXIF orientation 6, as a phone camera does."""
    image = Image.fromarray(np.rot90(upright, 1))  # stored turned left; orientation 6 turns it back right
    exif = image.getexif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif, **options)
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_exif_orientation_is_applied_to_every_read(tmp_path, suffix):
    upright = np.zeros((40, 24), np.uint8)
    upright[:10, :8] = 255  # a bright top-left corner
    path = sideways(tmp_path / f"ir{suffix}", upright, **({"quality": 100} if suffix == ".jpg" else {}))
    assert read_size(path) == (40, 24)
    for role in ("ir", "vi", "fused"):
        image = read_gray(path, role)
        assert image.shape == (40, 24) and image[:10, :8].min() > 200 and image[12:, 10:].max() < 50


def test_a_rotated_camera_jpeg_is_fused_upright(tiny_model, tmp_path, capsys):
    ir = save(tmp_path / "ir" / "a.png", np.full((40, 24), 90, np.uint8))
    sideways(tmp_path / "vi" / "a.jpg", np.full((40, 24, 3), 160, np.uint8), quality=95)
    code = fuse.main(["--ir", str(ir.parent), "--vi", str(tmp_path / "vi"), "--out", str(tmp_path / "out"),
                      "--model", str(tiny_model)])
    assert code == 0 and "differ in size" not in capsys.readouterr().err  # was squeezed under that note


# --- cause 5: symlinked files and folders ------------------------------------------------------------------

def sequence(folder: Path, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        for side in ("ir", "vi"):
            save(folder / side / f"{i:03d}.png", np.full((16, 16), i, np.uint8))


def test_symlinked_sequence_folders_are_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    for name in ("seqB", "seqC"):
        sequence(elsewhere / name, 2)
    root = tmp_path / "set"
    sequence(root / "seqA", 2)
    for name in ("seqB", "seqC"):
        os.symlink(elsewhere / name, root / name, target_is_directory=True)
    assert len(find_pairs(root).pairs) == 6  # was "2 of 2", the others skipped silently


def test_a_root_whose_ir_and_vi_are_symlinks_is_read_for_training(tmp_path):
    sequence(tmp_path / "real", 3)
    root = tmp_path / "train"
    root.mkdir()
    for side in ("ir", "vi"):
        os.symlink(tmp_path / "real" / side, root / side, target_is_directory=True)
    assert [p.name for p in find_pairs(root).pairs] == ["000", "001", "002"]  # was "contains no images"
    os.symlink(tmp_path / "real" / "ir" / "000.png", root / "ir_extra.png")  # a symlinked file is a file
    assert len(find_images(root)) == 7


def test_symlink_loops_end_and_each_real_folder_is_read_once(tmp_path):
    sequence(tmp_path / "set", 2)
    os.symlink(tmp_path / "set", tmp_path / "set" / "ir" / "loop", target_is_directory=True)
    os.symlink(tmp_path / "set" / "vi", tmp_path / "set" / "again", target_is_directory=True)
    files = find_images(tmp_path / "set")
    assert len(files) == len({p.resolve() for p in files}) == 4


# --- cause 6: fused images at their true scale -------------------------------------------------------------

def test_the_same_fused_image_at_three_bit_depths_scores_the_same(tmp_path):
    ir = thermal(48, 48, low=0, span=255).astype(np.uint8)  # metrics such as VIF need 41 px a side
    vi = np.rot90(ir).copy()
    save(tmp_path / "ir" / "a.png", ir)
    save(tmp_path / "vi" / "a.png", vi)
    mean = ((ir.astype(float) + vi) / 2).round().astype(np.uint8)
    save(tmp_path / "8" / "a.png", mean)
    save(tmp_path / "16" / "a.png", mean.astype(np.uint16) * 257)
    save(tmp_path / "float" / "a.tif", mean.astype(np.float32) / 255)
    pairs = find_pairs(tmp_path / "ir", tmp_path / "vi").pairs
    for profile in ("suite", "vifb"):
        scores = [score_folder(tmp_path / depth, pairs, None, depth, get_profile(profile))["per_image"]["a"]
                  for depth in ("8", "16", "float")]
        assert scores[0] == scores[1] == scores[2]  # the stretch gave the 16-bit copy SD 40 against 26


def test_a_fused_image_of_ambiguous_scale_is_refused_in_one_line(tmp_path):
    save(tmp_path / "ir" / "a.png", np.zeros((16, 16), np.uint8))
    save(tmp_path / "vi" / "a.png", np.zeros((16, 16), np.uint8))
    save(tmp_path / "fused" / "a.tif", np.full((16, 16), 200, np.float32))
    pairs = find_pairs(tmp_path / "ir", tmp_path / "vi").pairs
    result = score_folder(tmp_path / "fused", pairs, ["EN"])
    assert result["problems"] == [f"{tmp_path / 'fused' / 'a.tif'}: float image with values 200..200, so its scale "
                                  "is ambiguous (a fused float image must lie in 0..1); save it as 8-bit or 16-bit"]
    wide = save(tmp_path / "wide.tif", np.full((16, 16), 70000, np.int32))
    with pytest.raises(CrossFuseError, match="wide.tif: integer image with values 70000..70000, outside 16 bits"):
        read_gray(wide, "fused")
    assert read_gray(save(tmp_path / "i32.tif", np.full((16, 16), 200 * 257, np.int32)), "fused").max() == 200


def test_names_in_any_case_with_spaces_and_unicode_are_images(tmp_path):
    for side in ("ir", "vi"):
        save(tmp_path / side / "Straße 1.PNG", np.zeros((8, 8), np.uint8))
    save(tmp_path / "ir" / ".hidden.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "vi" / "notes.txt").write_text("junk")
    assert [(p.ir.name, p.vi.name) for p in find_pairs(tmp_path).pairs] == [("Straße 1.PNG", "Straße 1.PNG")]
