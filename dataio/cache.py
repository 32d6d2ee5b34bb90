"""A decoded, resized uint8 cache of a data set, so JPEG decoding does not starve the GPU.

Decoding 20000 KAIST pairs every epoch costs far more than a training step; the cache decodes once
into a memory-mapped N x M x S x S uint8 array (M = 2 for pairs, 1 for single images).

Bit-identity with the decode path holds by construction: ImageTransform's resize rounds the
bilinear result back to uint8 (dataio.datasets.resize_uint8), the cache stores exactly those uint8
images, and the cached datasets apply the same seeded flips as PairDataset/ImageDataset. The cache
therefore serves resize mode only; a random crop needs the full image, so crop=True with a cache
is an error rather than a silently different augmentation.

Next to the .npy array a JSON index lists every source file with its byte size and mtime, plus the
settings; the cache is rebuilt when any of these change or the index is missing or unreadable.
"""
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataio.datasets import ImageTransform, item_rng
from dataio.images import Range, Role, read_gray
from dataio.pairs import Pair
from utils.atomic import atomic_write, temp_path
from utils.errors import CrossFuseError

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: high-depth images stretched by percentiles, EXIF orientation applied
_RESIZE = "bilinear, align_corners=False, no antialias, rounded to uint8"


def _groups(items: list[Pair] | list[Path]) -> tuple[list[tuple[Path, ...]], list[str]]:
    """Each item's files (ir, vi) or (file,) as absolute paths, and its name."""
    groups = [(item.ir, item.vi) if isinstance(item, Pair) else (Path(item),) for item in items]
    names = [item.name if isinstance(item, Pair) else Path(item).stem for item in items]
    return [tuple(path.absolute() for path in group) for group in groups], names


def _stat(path: Path) -> dict:
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path), "bytes": None, "mtime_ns": None}
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _Decode(Dataset):
    """Decodes one item for the build; errors come back as text so the main process reports them."""

    def __init__(self, groups: list[tuple[Path, ...]], size: int, roles: tuple[Role, ...],
                 ir_range: Range | None) -> None:
        self.groups = groups
        self.transform = ImageTransform(size=size)
        self.roles = roles
        self.ir_range = ir_range

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            files = zip(self.groups[index], self.roles, strict=True)
            images = self.transform.geometry([read_gray(path, role, self.ir_range) for path, role in files], None)
        except CrossFuseError as err:
            return index, None, str(err)
        return index, np.stack(images), None


def _unbatched(item: tuple) -> tuple:
    return item


def _index_is_current(index_path: Path, data_path: Path, expected: dict) -> bool:
    try:
        index = json.loads(index_path.read_text())
        shape = np.load(data_path, mmap_mode="r").shape
        same = all(index.get(key) == value for key, value in expected.items())
        return same and list(shape) == index.get("shape") and {"rows", "names", "sources", "size"} <= index.keys()
    except (OSError, ValueError, AttributeError):  # missing, truncated or damaged: build it again
        return False


def _build(groups: list[tuple[Path, ...]], size: int, data_path: Path, workers: int, roles: tuple[Role, ...],
           ir_range: Range | None) -> tuple[list, list]:
    """Decode everything into a temp .npy, then rename it into place; returns (good rows, errors)."""
    shape = (len(groups), len(groups[0]), size, size)
    temp = temp_path(data_path)
    loader = DataLoader(_Decode(groups, size, roles, ir_range), batch_size=None, num_workers=workers,
                        collate_fn=_unbatched)
    rows, errors = [], []
    try:
        array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
        for index, images, error in tqdm(loader, total=len(groups), desc=f"caching at {size}px", unit="item"):
            if error is None:
                array[index] = images
                rows.append(index)
            else:
                log.warning("not cached: %s", error)
                errors.append(error)
        array.flush()
        del array
        os.replace(temp, data_path)
    finally:
        temp.unlink(missing_ok=True)
    return rows, errors


def build_cache(items: list[Pair] | list[Path], size: int, cache_dir: Path, workers: int = 0, role: Role = "vi",
                ir_range: Range | None = None) -> Path:
    """The path of an up-to-date cache .npy for these items at size x size, building it if needed.

    The file name carries a hash of the source list, so different data sets can share cache_dir.
    `workers` decoding processes are used for the build (0 = in this process). Each image is resized
    on its own, as PairDataset does in resize mode, so pairs of different sizes are accepted
    (size_mismatch="resize"); unreadable items are left out with a warning and listed in the index.
    Single images are read as `role` (pairs as IR, VIS), a high-depth IR image over ir_range when given.
    """
    if not items:
        raise CrossFuseError(f"{cache_dir}: nothing to cache (no items given)")
    groups, names = _groups(items)
    kind = "pairs" if len(groups[0]) == 2 else "images"
    roles: tuple[Role, ...] = ("ir", "vi") if kind == "pairs" else (role,)
    listing = json.dumps([[str(path) for path in group] for group in groups]).encode()
    data_path = Path(cache_dir) / f"{kind}-{size}-{hashlib.sha1(listing).hexdigest()[:12]}.npy"
    index_path = data_path.with_suffix(".json")
    expected = {
        "version": CACHE_VERSION,
        "size": size,
        "resize": _RESIZE,
        "roles": list(roles),
        "ir_range": list(ir_range) if ir_range else None,
        "names": names,
        "sources": [[_stat(path) for path in group] for group in groups],
    }
    if _index_is_current(index_path, data_path, expected):
        return data_path
    log.info("building cache %s for %d items", data_path, len(groups))
    try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
        index_path.unlink(missing_ok=True)
        rows, errors = _build(groups, size, data_path, workers, roles, ir_range)
    except OSError as err:
        raise CrossFuseError(f"{data_path}: cannot write the cache ({err})") from err
    if not rows:
        raise CrossFuseError(f"{data_path}: no item could be decoded (first error: {errors[0]})")
    shape = [len(groups), len(groups[0]), size, size]
    index = {**expected, "shape": shape, "rows": rows, "errors": errors}
    atomic_write(index_path, lambda temp: temp.write_text(json.dumps(index, indent=1)))
    return data_path


class _CachedDataset(Dataset):
    """Rows of a built cache, flipped with the same per-item rng as the decode-path datasets."""

    modalities = 0

    def __init__(self, cache_path: Path, transform: ImageTransform, seed: int = 0) -> None:
        self.cache_path = Path(cache_path)
        try:
            index = json.loads(self.cache_path.with_suffix(".json").read_text())
        except (OSError, ValueError) as err:
            raise CrossFuseError(f"{self.cache_path}: no readable cache index; run build_cache first") from err
        if transform.crop:
            raise CrossFuseError(
                f"{self.cache_path}: the cache holds resized images and cannot serve random crops; "
                "turn off the cache or the crop"
            )
        if transform.size != index["size"] or index["shape"][1] != self.modalities:
            raise CrossFuseError(
                f"{self.cache_path}: cache holds {index['shape'][1]} image(s) per item at {index['size']}px, "
                f"expected {self.modalities} at {transform.size}px"
            )
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.rows = index["rows"]
        self.names = [index["names"][row] for row in self.rows]
        self.skipped = 0
        dropped = [group for i, group in enumerate(index["sources"]) if i not in set(self.rows)]
        self.skipped_files = [Path(entry["path"]) for group in dropped for entry in group]
        self._dropped = len(dropped)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        # A pickled memmap would copy the whole array into every spawned worker: reopen it there.
        return {**self.__dict__, "_array": None}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random flips __getitem__ produces."""
        self.epoch = epoch

    def validate(self) -> int:
        """Items dropped when the cache was built (already excluded); for parity with the decode path."""
        return self._dropped

    def load(self, index: int) -> list[torch.Tensor]:
        if self._array is None:
            self._array = np.load(self.cache_path, mmap_mode="r")
        images = list(self._array[self.rows[index]])
        return self.transform.flip(images, item_rng(self.seed, self.epoch, index))


class CachedPairDataset(_CachedDataset):
    """PairDataset's (ir, vi) output read from a cache built from Pairs."""

    modalities = 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ir, vi = self.load(index)
        return ir, vi


class CachedImageDataset(_CachedDataset):
    """ImageDataset's output read from a cache built from image files."""

    modalities = 1

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(index)[0]
