"""Image reading/writing and pair discovery on small synthetic trees, plus the real RoadScene/TNO sets."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataio.images import (
    IMAGE_EXTENSIONS,
    is_color,
    read_gray,
    read_size,
    read_ycbcr,
    write_gray,
    write_ycbcr_as_rgb,
)
from dataio.pairs import Pair, find_images, find_pairs, pair_single
from utils.errors import CrossFuseError


def save(path: Path, array: np.ndarray | None = None, mode: str | None = None) -> Path:
    """Write a small image (random gray 8x6 unless given) creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.random.default_rng(len(str(path))).integers(0, 256, (8, 6), dtype=np.uint8)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def raises_one_line(path: Path, call, *args) -> str:
    """Run call(*args), expecting a single-line CrossFuseError that names `path`."""
    with pytest.raises(CrossFuseError) as info:
        call(*args)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


# --- images -----------------------------------------------------------------------------------


def test_read_gray_uses_itu601_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = read_gray(save(tmp_path / "c.png", rgb))
    expected = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert gray.dtype == np.uint8 and gray.shape == (5, 7)
    assert np.abs(gray - expected).max() <= 1.0


def test_read_gray_stretches_16_bit_to_its_range(tmp_path):
    counts = np.linspace(7000, 7400, 20).astype(np.uint16).reshape(4, 5)
    gray = read_gray(save(tmp_path / "thermal.png", counts))
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray.ravel().astype(int)) >= 0)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "1"])
def test_read_gray_handles_palette_alpha_and_bilevel(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    path = save(tmp_path / f"{mode}.png", rgb, mode)
    gray = read_gray(path)
    assert gray.shape == (6, 6) and gray.dtype == np.uint8
    assert np.array_equal(gray, np.asarray(Image.open(path).convert("RGB").convert("L")))


def test_read_gray_errors_name_the_file(tmp_path):
    raises_one_line(tmp_path / "missing.png", read_gray, tmp_path / "missing.png")
    raises_one_line(tmp_path, read_gray, tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    raises_one_line(empty, read_gray, empty)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8 definitely not a jpeg " * 20)
    raises_one_line(garbage, read_gray, garbage)
    truncated = tmp_path / "truncated.jpg"
    save(tmp_path / "whole.jpg", np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8))
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    raises_one_line(truncated, read_gray, truncated)
    raises_one_line(garbage, read_size, garbage)


def test_read_ycbcr_and_is_color(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 200
    gray_rgb = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1), 3, axis=2)
    assert is_color(save(tmp_path / "colour.png", colour))
    assert not is_color(save(tmp_path / "gray_rgb.png", gray_rgb))
    assert not is_color(save(tmp_path / "gray.png"))
    ycbcr = read_ycbcr(tmp_path / "colour.png")
    assert ycbcr.shape == (4, 4, 3) and ycbcr.dtype == np.uint8
    assert np.abs(ycbcr[..., 0].astype(int) - read_gray(tmp_path / "colour.png")).max() <= 1


def test_writers_round_trip_atomically(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (9, 11), dtype=np.uint8)
    target = tmp_path / "deep" / "er" / "out.png"
    write_gray(target, gray)
    assert np.array_equal(read_gray(target), gray)
    rgb = np.random.default_rng(4).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    write_ycbcr_as_rgb(tmp_path / "colour.png", ycbcr)
    back = np.asarray(Image.open(tmp_path / "colour.png"))
    assert back.shape == (9, 11, 3) and np.abs(back.astype(int) - rgb).max() <= 3
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["colour.png", "out.png"]
    with pytest.raises(ValueError):
        write_gray(tmp_path / "bad.png", gray.astype(np.float32))


def test_image_extensions():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS


# --- pairs ------------------------------------------------------------------------------------


def names(scan) -> list[str]:
    return [pair.name for pair in scan.pairs]


def make_kaist(root: Path) -> Path:
    for seq in ("set00/V000", "set00/V001", "set01/V000"):
        for frame in ("I00000", "I00001"):
            save(root / seq / "lwir" / f"{frame}.jpg")
            save(root / seq / "visible" / f"{frame}.jpg")
    return save(root / "set01/V000/lwir/I00002.jpg")


def test_kaist_layout_from_any_level(tmp_path):
    orphan = make_kaist(tmp_path / "KAIST")
    scan = find_pairs(tmp_path / "KAIST")
    assert len(scan.pairs) == 6 and scan.unpaired == [orphan]
    assert names(scan)[0] == "set00_V000_I00000"
    first = scan.pairs[0]
    assert first.ir == tmp_path / "KAIST/set00/V000/lwir/I00000.jpg"
    assert first.vi == tmp_path / "KAIST/set00/V000/visible/I00000.jpg"
    assert names(find_pairs(tmp_path / "KAIST" / "set00")) == [
        "V000_I00000", "V000_I00001", "V001_I00000", "V001_I00001"
    ]
    assert names(find_pairs(tmp_path / "KAIST", tmp_path / "KAIST")) == names(scan)


def test_mirrored_trees_pair_by_relative_path(tmp_path):
    for side in ("ir_tree", "vi_tree"):
        save(tmp_path / side / "set00" / "V000" / "a.png")
        save(tmp_path / side / "set00" / "V001" / "a.png")
    scan = find_pairs(tmp_path / "ir_tree", tmp_path / "vi_tree")
    assert names(scan) == ["set00_V000_a", "set00_V001_a"]


@pytest.mark.parametrize(
    "ir_name, vi_name",
    [("ir", "vi"), ("IR", "VIS"), ("infrared", "visible"), ("lwir", "vis"), ("Infrared", "Visible")],
)
def test_subfolder_aliases(tmp_path, ir_name, vi_name):
    for stem in ("b", "a", "c"):
        save(tmp_path / ir_name / f"{stem}.png")
        save(tmp_path / vi_name / f"{stem}.png")
    scan = find_pairs(tmp_path)
    assert names(scan) == ["a", "b", "c"] and scan.unpaired == []
    assert scan.pairs[0] == Pair("a", tmp_path / ir_name / "a.png", tmp_path / vi_name / "a.png")


def test_tno_names_in_one_folder(tmp_path):
    for ir, vi in (("IR1.png", "VIS1.png"), ("IR_2.bmp", "VIS_2.bmp"), ("ir10.png", "vi10.png")):
        save(tmp_path / ir)
        save(tmp_path / vi)
    extra = save(tmp_path / "IR7.png")
    scan = find_pairs(tmp_path)
    assert names(scan) == ["1", "2", "10"] and scan.unpaired == [extra]
    assert scan.pairs[1].ir.name == "IR_2.bmp" and scan.pairs[1].vi.name == "VIS_2.bmp"


def test_same_stem_with_other_extension_and_case(tmp_path):
    save(tmp_path / "a" / "Scene.PNG")
    save(tmp_path / "b" / "scene.jpg")
    save(tmp_path / "a" / "ir01.png")
    save(tmp_path / "b" / "vi01.png")
    scan = find_pairs(tmp_path / "a", tmp_path / "b")
    assert names(scan) == ["01", "Scene"]
    assert scan.pairs[1].vi == tmp_path / "b" / "scene.jpg"


def test_unpaired_files_are_reported_sorted(tmp_path):
    for stem in ("1", "2"):
        save(tmp_path / "ir" / f"{stem}.png")
        save(tmp_path / "vi" / f"{stem}.png")
    only_ir, only_vi = save(tmp_path / "ir" / "9.png"), save(tmp_path / "vi" / "3.png")
    scan = find_pairs(tmp_path / "ir", tmp_path / "vi")
    assert names(scan) == ["1", "2"] and scan.unpaired == sorted([only_ir, only_vi])


def test_folder_errors(tmp_path):
    save(tmp_path / "vi" / "a.png")
    raises_one_line(tmp_path / "nope", find_pairs, tmp_path / "nope", tmp_path / "vi")
    raises_one_line(tmp_path / "vi" / "a.png", find_pairs, tmp_path / "vi" / "a.png", tmp_path / "vi")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    assert "no images" in raises_one_line(tmp_path / "empty", find_pairs, tmp_path / "empty", tmp_path / "vi")
    raises_one_line(tmp_path / "empty", find_images, tmp_path / "empty")
    raises_one_line(tmp_path / "nope", find_pairs, tmp_path / "nope")
    raises_one_line(tmp_path / "empty", find_pairs, tmp_path / "empty")


def test_nothing_pairs(tmp_path):
    save(tmp_path / "ir" / "a.png")
    save(tmp_path / "vi" / "b.png")
    message = raises_one_line(tmp_path / "ir", find_pairs, tmp_path / "ir", tmp_path / "vi")
    assert "no IR/VIS pairs" in message


def test_ambiguous_names_are_an_error(tmp_path):
    save(tmp_path / "ir" / "a.png")
    save(tmp_path / "vi" / "a.png")
    save(tmp_path / "vi" / "a.jpg")
    message = raises_one_line(tmp_path / "vi", find_pairs, tmp_path / "ir", tmp_path / "vi")
    assert "ambiguous" in message


def test_unrecognised_layout_lists_what_was_tried(tmp_path):
    save(tmp_path / "photos" / "cat.png")
    message = raises_one_line(tmp_path, find_pairs, tmp_path)
    assert "KAIST" in message and "IRn/VISn" in message and "ir/vi subfolders" in message


def test_find_images_recursive_skips_hidden(tmp_path):
    nested, ten, one = save(tmp_path / "x" / "img2.png"), save(tmp_path / "img10.JPG"), save(tmp_path / "img1.tif")
    save(tmp_path / "._img1.png")
    save(tmp_path / ".cache" / "img3.png")
    (tmp_path / "notes.txt").write_text("-")
    assert find_images(tmp_path) == [one, ten, nested]


def test_pair_single(tmp_path):
    ir, vi = save(tmp_path / "IR_street.png"), save(tmp_path / "VIS_street.png")
    assert pair_single(ir, vi) == Pair("street", ir, vi)
    assert pair_single(save(tmp_path / "x y.png"), vi).name == "x_y"
    raises_one_line(tmp_path / "gone.png", pair_single, ir, tmp_path / "gone.png")


# --- real data --------------------------------------------------------------------------------


def test_real_data_sets(shared_data):
    roadscene = find_pairs(shared_data / "roadscene")
    tno = find_pairs(shared_data / "tno")
    assert len(roadscene.pairs) == 221 and roadscene.unpaired == []
    assert len(tno.pairs) == 25 and tno.unpaired == []
    assert names(tno)[:3] == ["01", "02", "03"]
    assert len(set(names(roadscene))) == 221
    assert all(pair.ir.name == pair.vi.name for pair in roadscene.pairs)
    assert read_gray(roadscene.pairs[0].vi).ndim == 2 and is_color(roadscene.pairs[0].vi)
    assert not is_color(tno.pairs[0].vi)
