"""Transforms, datasets and loaders: shared geometry across a pair, seeded determinism, bad files."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dataio.datasets import ImageDataset, ImageTransform, PairDataset, limit, make_loader, resize_uint8
from dataio.demo_data import make_demo_dataset
from dataio.images import read_gray
from dataio.pairs import Pair, find_pairs
from dataio.training_data import training_pairs
from utils.errors import CrossFuseError


def ramp(height: int, width: int) -> np.ndarray:
    """An image with no symmetry, so any flip or shift changes it."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 7 + y * y * 3) % 256).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_pairs(root: Path, count: int, shape: tuple[int, int] = (40, 50)) -> list[Pair]:
    """Pairs whose VIS is the negative of the IR, so geometry shared by both is easy to check."""
    pairs = []
    for i in range(count):
        ir = np.roll(ramp(*shape), i * 3, axis=1)
        pairs.append(Pair(f"{i:02d}", save(root / "ir" / f"{i:02d}.png", ir),
                          save(root / "vi" / f"{i:02d}.png", 255 - ir)))
    return pairs


# --- transform --------------------------------------------------------------------------------


def test_resize_is_reference_bilinear_rounded_to_uint8():
    image = ramp(37, 53)
    out = ImageTransform(size=16)([image], None)[0]
    assert out.shape == (1, 16, 16) and out.dtype == torch.float32
    exact = F.interpolate(torch.from_numpy(image).float()[None, None], size=(16, 16), mode="bilinear",
                          align_corners=False, antialias=False)[0]
    assert torch.equal(out, exact.round().clamp(0, 255))
    assert np.array_equal(out[0].numpy(), resize_uint8(image, 16, 16))
    assert ImageTransform().size == 256


def test_flips_and_crops_are_shared_by_both_images():
    ir = ramp(30, 45)
    transform = ImageTransform(size=24, crop=True, hflip=True, vflip=True)
    seen = set()
    for index in range(16):
        out_ir, out_vi = transform([ir, 255 - ir], np.random.default_rng([0, 0, index]))
        assert torch.equal(out_vi, 255 - out_ir)
        seen.add(out_ir.numpy().tobytes())
    assert len(seen) == 16  # crops and flips really vary between items


def test_flips_happen_with_probability_one_half():
    image = ramp(8, 8)
    transform = ImageTransform(size=8, hflip=True)
    flipped = [
        torch.equal(transform([image], np.random.default_rng(i))[0][0], torch.from_numpy(image[:, ::-1].copy()).float())
        for i in range(200)
    ]
    assert 60 < sum(flipped) < 140


def test_crop_upscales_small_images_and_centres_without_rng():
    small = ramp(10, 20)
    out = ImageTransform(size=16, crop=True)([small], None)[0]
    assert out.shape == (1, 16, 16)
    upscaled = resize_uint8(small, 16, 32)
    assert np.array_equal(out[0].numpy(), upscaled[:, 8:24])


def test_crop_matches_resolution_of_registered_pair():
    ir = ramp(30, 40)
    vi_hr = resize_uint8(ir, 90, 120)  # same scene at 3x, as RoadScene's VIS
    out_ir, out_vi = ImageTransform(size=20, crop=True)([ir, vi_hr], np.random.default_rng(5))
    assert (out_ir - out_vi).abs().mean() < 8


def test_transform_determinism_by_seed_epoch_index(tmp_path):
    pairs = make_pairs(tmp_path, 6)
    transform = ImageTransform(size=16, crop=True, hflip=True, vflip=True)
    first = PairDataset(pairs, transform, seed=1)
    again = PairDataset(pairs, transform, seed=1)
    other_seed = PairDataset(pairs, transform, seed=2)
    items = [first[i][0] for i in range(6)]
    assert all(torch.equal(a, again[i][0]) for i, a in enumerate(items))
    assert any(not torch.equal(a, other_seed[i][0]) for i, a in enumerate(items))
    first.set_epoch(1)
    epoch1 = [first[i][0] for i in range(6)]
    assert any(not torch.equal(a, b) for a, b in zip(items, epoch1, strict=True))
    again.set_epoch(1)
    assert all(torch.equal(b, again[i][0]) for i, b in enumerate(epoch1))


# --- datasets ---------------------------------------------------------------------------------


def test_pair_dataset_outputs(tmp_path):
    dataset = PairDataset(make_pairs(tmp_path, 3), ImageTransform(size=32))
    ir, vi = dataset[1]
    assert len(dataset) == 3 and ir.shape == vi.shape == (1, 32, 32) and ir.dtype == torch.float32
    assert ir.max() > 1.5 and torch.equal(ir, ir.round())  # 0..255 values, not divided by 255
    assert dataset.names == ["00", "01", "02"]


def test_different_sizes_error_names_both_files(tmp_path):
    pairs = make_pairs(tmp_path, 3)
    save(pairs[1].vi, ramp(41, 50))
    strict = PairDataset(pairs, ImageTransform(size=16), on_error="raise", size_mismatch="error")
    with pytest.raises(CrossFuseError, match="sizes differ") as info:
        strict[1]
    assert str(pairs[1].ir) in str(info.value) and str(pairs[1].vi) in str(info.value)
    with pytest.raises(CrossFuseError, match="sizes differ"):
        strict.validate()
    lenient = PairDataset(pairs, ImageTransform(size=16))
    assert lenient[1][0].shape == (1, 16, 16) and lenient.validate() == 0


def test_skip_replaces_bad_item_and_counts_it(tmp_path, caplog):
    pairs = make_pairs(tmp_path, 3)
    pairs[1].vi.write_bytes(b"not an image at all")
    dataset = PairDataset(pairs, ImageTransform(size=16))
    with caplog.at_level(logging.WARNING):
        ir, _ = dataset[1]
    assert torch.equal(ir, dataset[2][0])
    assert dataset.skipped == 1 and str(pairs[1].vi) in caplog.text
    dataset[1]
    assert dataset.skipped == 1  # a known-bad item is not retried or counted again
    with pytest.raises(CrossFuseError, match="not a readable image"):
        PairDataset(pairs, ImageTransform(size=16), on_error="raise")[1]


def test_validate_drops_bad_items_up_front(tmp_path, caplog):
    pairs = make_pairs(tmp_path, 4)
    pairs[0].ir.write_bytes(b"")
    pairs[2].vi.unlink()
    save(pairs[3].vi, ramp(20, 20))
    dataset = PairDataset(pairs, ImageTransform(size=16), size_mismatch="error")
    with caplog.at_level(logging.WARNING):
        assert dataset.validate() == 3
    assert caplog.text.count("dropping item") == 3
    assert len(dataset) == 1 and dataset.names == ["01"]
    assert pairs[0].ir in dataset.skipped_files and pairs[2].vi in dataset.skipped_files
    with pytest.raises(CrossFuseError, match="not a readable image"):
        PairDataset(pairs, ImageTransform(size=16), on_error="raise").validate()


def test_all_bad_items_is_an_error(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    for pair in pairs:
        pair.ir.write_bytes(b"broken")
    with pytest.raises(CrossFuseError):
        PairDataset(pairs, ImageTransform(size=16))[0]
    with pytest.raises(CrossFuseError, match="none of the 2 items"):
        PairDataset(pairs, ImageTransform(size=16)).validate()


def test_bad_settings_are_errors(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    with pytest.raises(CrossFuseError, match="on_error"):
        PairDataset(pairs, ImageTransform(), on_error="ignore")
    with pytest.raises(CrossFuseError, match="empty"):
        PairDataset([], ImageTransform())


def test_image_dataset(tmp_path):
    files = [save(tmp_path / f"{i}.png", ramp(20 + i, 30)) for i in range(3)]
    (tmp_path / "3.png").write_bytes(b"junk")
    dataset = ImageDataset([*files, tmp_path / "3.png"], ImageTransform(size=12, hflip=True), seed=4)
    assert dataset.validate() == 1 and dataset.skipped_files == [tmp_path / "3.png"]
    image = dataset[0]
    assert image.shape == (1, 12, 12) and len(dataset) == 3
    assert torch.equal(image, ImageDataset(files, ImageTransform(size=12, hflip=True), seed=4)[0])


def test_limit():
    items = list(range(10))
    assert limit(items, 3) == [0, 1, 2]
    assert limit(items, None) == items and limit(items, 0) == items and limit(items, 50) == items
    with pytest.raises(CrossFuseError, match="train_num"):
        limit(items, -1)


def test_a_dataset_of_several_sliced_folders_joins_their_pairs_in_order(tmp_path):
    """dataset = "A[:3],B[1:]": a wider training set from two folders, with slices kept back for validation."""
    make_pairs(tmp_path / "a", 5)
    make_pairs(tmp_path / "b", 4)
    config = type("Config", (), dict(dataset=f"{tmp_path / 'a'}[:3], {tmp_path / 'b'}[1:]", train_num=0))
    pairs = training_pairs(config)
    assert [p.ir.parent.parent.name + p.name for p in pairs] == ["a00", "a01", "a02", "b01", "b02", "b03"]
    config.train_num = 4
    assert len(training_pairs(config)) == 4
    config.dataset = f"{tmp_path / 'a'},{tmp_path / 'b'}[4:]"
    with pytest.raises(CrossFuseError, match=r"b\[4:\]: no IR/VIS pairs found \(the folder holds 4\)"):
        training_pairs(config)
    config.dataset = f"{tmp_path / 'a'},{tmp_path / 'missing'}"
    with pytest.raises(CrossFuseError, match="missing: dataset not found"):
        training_pairs(config)


# --- loader -----------------------------------------------------------------------------------


def batches(loader) -> list[torch.Tensor]:
    return [ir for ir, _ in loader]


def test_loader_order_depends_only_on_seed_and_epoch(tmp_path):
    dataset = PairDataset(make_pairs(tmp_path, 8), ImageTransform(size=8, hflip=True))
    epoch0 = batches(make_loader(dataset, 2, True, 0, seed=7, epoch=0))
    assert len(epoch0) == 4 and dataset.epoch == 0
    again = batches(make_loader(dataset, 2, True, 0, seed=7, epoch=0))
    epoch1 = batches(make_loader(dataset, 2, True, 0, seed=7, epoch=1))
    assert dataset.epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(epoch0, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))
    in_workers = batches(make_loader(dataset, 2, True, 2, seed=7, epoch=1))
    assert all(torch.equal(a, b) for a, b in zip(epoch1, in_workers, strict=True))


def test_distributed_ranks_split_the_epoch(tmp_path):
    dataset = ImageDataset([save(tmp_path / f"{i}.png", np.full((4, 4), i, np.uint8)) for i in range(8)],
                           ImageTransform(size=4))
    seen = []
    for rank in range(2):
        loader = make_loader(dataset, 2, True, 0, seed=3, epoch=2, distributed=(rank, 2))
        seen += [int(value) for batch in loader for value in batch[:, 0, 0, 0]]
    assert sorted(seen) == list(range(8))


def test_batch_larger_than_data_is_an_error(tmp_path):
    dataset = PairDataset(make_pairs(tmp_path, 3), ImageTransform(size=8))
    with pytest.raises(CrossFuseError, match="batch=4"):
        make_loader(dataset, 4, True, 0, seed=0, epoch=0)
    assert len(make_loader(dataset, 4, False, 0, seed=0, epoch=0, drop_last=False)) == 1


def test_real_tno_pairs(shared_data):
    pairs = find_pairs(shared_data / "tno").pairs[:4]
    dataset = PairDataset(pairs, ImageTransform(size=64, hflip=True), on_error="raise")
    assert dataset.validate() == 0
    ir, vi = next(iter(make_loader(dataset, 4, True, 0, seed=0, epoch=0)))
    assert ir.shape == vi.shape == (4, 1, 64, 64) and 0 <= ir.min() and ir.max() <= 255


# --- demo data --------------------------------------------------------------------------------


def test_demo_dataset(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_train=4, n_test=2, size=64, seed=0)
    train, test = find_pairs(root / "train"), find_pairs(root / "test")
    assert [p.name for p in train.pairs] == ["000", "001", "002", "003"] and len(test.pairs) == 2
    ir, vi = read_gray(train.pairs[0].ir), read_gray(train.pairs[0].vi)
    assert ir.shape == vi.shape == (64, 64)
    edges = [np.abs(np.diff(image.astype(int), axis=1)).mean() for image in (ir, vi)]
    assert edges[1] > 2 * edges[0]  # VIS carries the texture, IR is smooth
    assert np.any((vi < 25) & (ir > 150))  # a warm object hidden in a dark VIS region

    written = train.pairs[0].ir.stat().st_mtime_ns
    make_demo_dataset(tmp_path / "demo", n_train=4, n_test=2, size=64, seed=0)
    assert train.pairs[0].ir.stat().st_mtime_ns == written  # complete: not generated again

    same = make_demo_dataset(tmp_path / "same", n_train=4, n_test=2, size=64, seed=0)
    assert (same / "train/vi/002.png").read_bytes() == (root / "train/vi/002.png").read_bytes()
    make_demo_dataset(tmp_path / "demo", n_train=2, n_test=2, size=64, seed=1)
    assert sorted(p.name for p in (root / "train" / "ir").iterdir()) == ["000.png", "001.png"]
    assert (root / "train/vi/000.png").read_bytes() != (same / "train/vi/000.png").read_bytes()
