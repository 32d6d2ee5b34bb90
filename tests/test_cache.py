"""The uint8 cache: batches bit-identical to decoding, and rebuilt whenever its sources change."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataio.cache import CachedImageDataset, CachedPairDataset, build_cache
from dataio.datasets import ImageDataset, ImageTransform, PairDataset, make_loader
from dataio.pairs import Pair, find_pairs
from utils.errors import CrossFuseError


def assert_same_batches(decoded, cached, seed: int, epochs: int = 2) -> None:
    for epoch in range(epochs):
        left = list(make_loader(decoded, 4, True, 0, seed=seed, epoch=epoch))
        right = list(make_loader(cached, 4, True, 0, seed=seed, epoch=epoch))
        assert len(left) == len(right) > 0
        for a, b in zip(left, right, strict=True):
            a, b = (a, b) if isinstance(a, list) else ([a], [b])
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cached_pairs_are_bit_identical_to_decoding(shared_data, tmp_path):
    pairs = find_pairs(shared_data / "roadscene").pairs[:10]
    transform = ImageTransform(size=64, hflip=True, vflip=True)
    cache = build_cache(pairs, 64, tmp_path)
    cached = CachedPairDataset(cache, transform, seed=5)
    assert cached.names == [pair.name for pair in pairs] and cached.validate() == 0
    assert_same_batches(PairDataset(pairs, transform, seed=5), cached, seed=5)


def test_cached_images_are_bit_identical_to_decoding(shared_data, tmp_path):
    files = [pair.vi for pair in find_pairs(shared_data / "tno").pairs[:8]]
    transform = ImageTransform(size=48, hflip=True)
    cache = build_cache(files, 48, tmp_path, workers=2)
    assert np.load(cache).shape == (8, 1, 48, 48)
    assert_same_batches(ImageDataset(files, transform, seed=1), CachedImageDataset(cache, transform, seed=1), 1)


def copy_pairs(shared: Path, target: Path, count: int) -> list[Pair]:
    """Copies in tmp_path, so the test may touch and rewrite them."""
    pairs = []
    for pair in find_pairs(shared / "tno").pairs[:count]:
        ir, vi = target / "ir" / pair.ir.name, target / "vi" / pair.vi.name
        for src, dst in ((pair.ir, ir), (pair.vi, vi)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        pairs.append(Pair(pair.name, ir, vi))
    return pairs


def test_cache_is_reused_then_rebuilt_when_sources_change(shared_data, tmp_path):
    pairs = copy_pairs(shared_data, tmp_path / "src", 3)
    cache = build_cache(pairs, 32, tmp_path / "cache")
    built = cache.stat().st_ino
    assert build_cache(pairs, 32, tmp_path / "cache") == cache and cache.stat().st_ino == built

    old = np.load(cache)[1, 0].copy()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(pairs[1].ir)
    stat = pairs[0].ir.stat()
    os.utime(pairs[1].ir, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert build_cache(pairs, 32, tmp_path / "cache") == cache and cache.stat().st_ino != built
    assert np.load(cache)[1, 0].max() == 0 and old.max() > 0

    rebuilt = cache.stat().st_ino
    os.utime(pairs[2].vi, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    build_cache(pairs, 32, tmp_path / "cache")
    assert cache.stat().st_ino != rebuilt


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_missing_or_corrupt_index_rebuilds(tmp_path, damage):
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(files):
        Image.fromarray(np.full((10, 12), 40 * i, np.uint8)).save(path)
    cache = build_cache(files, 8, tmp_path / "cache")
    built = cache.stat().st_ino
    index = cache.with_suffix(".json")
    if damage == "delete":
        index.unlink()
    else:
        index.write_text("{ truncated")
    build_cache(files, 8, tmp_path / "cache")
    assert cache.stat().st_ino != built and json.loads(index.read_text())["rows"] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([cache.name, index.name])


def test_other_size_or_items_get_their_own_cache(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(2)]
    for path in files:
        Image.fromarray(np.full((10, 12), 9, np.uint8)).save(path)
    paths = {build_cache(files, 8, tmp_path), build_cache(files, 16, tmp_path), build_cache(files[:1], 8, tmp_path)}
    assert len(paths) == 3


def test_unreadable_items_are_left_out(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for path in files:
        Image.fromarray(np.full((10, 12), 9, np.uint8)).save(path)
    files[1].write_bytes(b"broken")
    dataset = CachedImageDataset(build_cache(files, 8, tmp_path / "cache"), ImageTransform(size=8))
    assert len(dataset) == 2 and dataset.names == ["0", "2"]
    assert dataset.validate() == 1 and dataset.skipped_files == [files[1].absolute()]
    for path in (files[0], files[2]):
        path.write_bytes(b"broken")
    with pytest.raises(CrossFuseError, match="no item could be decoded"):
        build_cache(files, 8, tmp_path / "cache")


def test_cache_refuses_settings_it_cannot_serve(tmp_path):
    files = [tmp_path / "a.png"]
    Image.fromarray(np.full((10, 12), 9, np.uint8)).save(files[0])
    cache = build_cache(files, 8, tmp_path)
    with pytest.raises(CrossFuseError, match="random crops"):
        CachedImageDataset(cache, ImageTransform(size=8, crop=True))
    with pytest.raises(CrossFuseError, match="expected 1 at 16px"):
        CachedImageDataset(cache, ImageTransform(size=16))
    with pytest.raises(CrossFuseError, match="expected 2"):
        CachedPairDataset(cache, ImageTransform(size=8))
    with pytest.raises(CrossFuseError, match="build_cache"):
        CachedImageDataset(tmp_path / "nothing.npy", ImageTransform(size=8))
