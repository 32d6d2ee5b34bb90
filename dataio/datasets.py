"""Torch datasets of grayscale images (0..255 floats, 1 x S x S) for the two training stages.

Randomness is a pure function of (seed, epoch, index), so a resumed run, any worker count and any
process layout produce the same batches.
"""
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from dataio.images import Range, Role, read_gray, read_size
from dataio.pairs import Pair
from utils.errors import CrossFuseError

log = logging.getLogger(__name__)
_ON_ERROR = ("skip", "raise")
_SIZE_MISMATCH = ("resize", "error")


def resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (align_corners=False, no antialias, as the reference) rounded back to uint8.

    Rounding here means the decoded path and the uint8 cache (dataio.cache) give identical values.
    """
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return out[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def to_ir_size(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """The VIS image at the IR image's size, as training reads a registered pair captured at two
    resolutions (RoadScene's VIS is about 2.8 times its IR): bilinear, rounded to the grey levels it holds."""
    if vi.shape == ir.shape:
        return vi
    return resize_uint8(np.asarray(vi).round().clip(0, 255).astype(np.uint8), *ir.shape).astype(vi.dtype)


@dataclass
class ImageTransform:
    """The same geometric op for every image of an item: resize (default) or random crop, then flips.

    Without an rng (evaluation) a crop is taken from the centre and nothing is flipped.
    """

    size: int = 256
    crop: bool = False
    hflip: bool = False
    vflip: bool = False

    def __call__(self, images: list[np.ndarray], rng: np.random.Generator | None) -> list[torch.Tensor]:
        return self.flip(self.geometry(images, rng), rng)

    def geometry(self, images: list[np.ndarray], rng: np.random.Generator | None) -> list[np.ndarray]:
        """Resize each image to size x size, or crop all at one random place (uint8 in and out)."""
        if not self.crop:
            return [resize_uint8(image, self.size, self.size) for image in images]
        height, width = images[0].shape
        # Registered pairs may differ only in resolution (RoadScene's VIS is ~3x its IR): match the first.
        images = [im if im.shape == (height, width) else resize_uint8(im, height, width) for im in images]
        short = min(height, width)
        if short < self.size:
            scale = self.size / short
            height, width = max(self.size, round(height * scale)), max(self.size, round(width * scale))
            images = [resize_uint8(image, height, width) for image in images]
        if rng is None:
            top, left = (height - self.size) // 2, (width - self.size) // 2
        else:
            top, left = int(rng.integers(0, height - self.size + 1)), int(rng.integers(0, width - self.size + 1))
        return [image[top : top + self.size, left : left + self.size] for image in images]

    def flip(self, images: list[np.ndarray], rng: np.random.Generator | None) -> list[torch.Tensor]:
        """1 x S x S float tensors, flipped together; one draw per enabled flip keeps rng use fixed."""
        tensors = [torch.from_numpy(np.array(image, dtype=np.float32))[None] for image in images]
        if rng is None:
            return tensors
        if self.hflip and rng.random() < 0.5:
            tensors = [t.flip(-1) for t in tensors]
        if self.vflip and rng.random() < 0.5:
            tensors = [t.flip(-2) for t in tensors]
        return tensors


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: the same in every worker, process and resumed run."""
    return np.random.default_rng([seed, epoch, index])


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CrossFuseError(f"{name}={value!r}: must be one of {', '.join(choices)}")


class _FileDataset(Dataset):
    """Items are tuples of image files; shared by the pair and single-image datasets."""

    def __init__(self, items: list[tuple], names: list[str], transform: ImageTransform, seed: int,
                 on_error: str, size_mismatch: str = "resize", roles: tuple[Role, ...] = ("ir", "vi"),
                 ir_range: Range | None = None) -> None:
        _check_choice("on_error", on_error, _ON_ERROR)
        _check_choice("size_mismatch", size_mismatch, _SIZE_MISMATCH)
        if not items:
            raise CrossFuseError("data set is empty: no images to load")
        self.items = list(items)
        self.names = list(names)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.size_mismatch = size_mismatch
        self.roles = roles  # what each file of an item is, which decides how it is read
        self.ir_range = ir_range
        self.skipped = 0
        self.skipped_files: list[Path] = []
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops/flips __getitem__ produces."""
        self.epoch = epoch

    def _check_sizes(self, files: tuple, shapes: list[tuple[int, int]]) -> None:
        if self.size_mismatch == "error" and len(set(shapes)) > 1:
            sizes = " vs ".join(f"{w}x{h}" for h, w in shapes)
            raise CrossFuseError(f"{' and '.join(map(str, files))}: sizes differ ({sizes})")

    def _load(self, index: int) -> list[torch.Tensor]:
        files = self.items[index]
        images = [read_gray(path, role, self.ir_range) for path, role in zip(files, self.roles, strict=True)]
        self._check_sizes(files, [image.shape for image in images])
        return self.transform(images, item_rng(self.seed, self.epoch, index))

    def load(self, index: int) -> list[torch.Tensor]:
        """The item's tensors; a bad item is replaced by the next good one when skipping.

        `skipped` counts bad items met in this process only: DataLoader workers keep their own
        counts, which is why validate() exists to catch bad files up front.
        """
        for offset in range(len(self.items)):
            candidate = (index + offset) % len(self.items)
            if candidate in self._bad:
                continue
            try:
                return self._load(candidate)
            except CrossFuseError as err:
                if self.on_error == "raise":
                    raise
                log.warning("skipping item: %s", err)
                self._bad.add(candidate)
                self.skipped += 1
        raise CrossFuseError(f"{self.items[index][0]}: every item of the data set is unreadable")

    def validate(self) -> int:
        """Drop items whose headers are unreadable (or sizes differ, if that is an error); returns the count.

        Only headers are read, so this is cheap enough to run over a whole data set before training.
        The files of dropped items are kept in `skipped_files`.
        """
        good = []
        for name, files in zip(self.names, self.items, strict=True):
            try:
                self._check_sizes(files, [read_size(path) for path in files])
            except CrossFuseError as err:
                if self.on_error == "raise":
                    raise
                log.warning("dropping item: %s", err)
                self.skipped_files.extend(files)
                continue
            good.append((name, files))
        dropped = len(self.items) - len(good)
        if not good:
            raise CrossFuseError(f"{self.items[0][0]}: none of the {len(self.items)} items is readable")
        self.names = [name for name, _ in good]
        self.items = [files for _, files in good]
        self._bad.clear()
        return dropped


class PairDataset(_FileDataset):
    """(ir, vi) tensors for stage 2.

    size_mismatch="resize" accepts pairs registered at different resolutions (RoadScene: every VIS
    is the larger HR capture); "error" treats a size difference as a bad pair.
    """

    def __init__(self, pairs: list[Pair], transform: ImageTransform, seed: int = 0, on_error: str = "skip",
                 size_mismatch: str = "resize", ir_range: Range | None = None) -> None:
        super().__init__([(pair.ir, pair.vi) for pair in pairs], [pair.name for pair in pairs], transform,
                         seed, on_error, size_mismatch, ("ir", "vi"), ir_range)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ir, vi = self.load(index)
        return ir, vi


class ImageDataset(_FileDataset):
    """Single-image tensors for stage 1 (each modality's auto-encoder); role says which modality."""

    def __init__(self, files: list[Path], transform: ImageTransform, seed: int = 0, on_error: str = "skip",
                 role: Role = "vi", ir_range: Range | None = None) -> None:
        super().__init__([(Path(path),) for path in files], [Path(path).stem for path in files], transform,
                         seed, on_error, roles=(role,), ir_range=ir_range)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(index)[0]


def limit(items: list, train_num: int | None) -> list:
    """The first train_num items, as the reference takes the head of its file list; None or 0 = all."""
    if train_num is not None and train_num < 0:
        raise CrossFuseError(f"train_num={train_num}: must be >= 0 (0 or unset means all)")
    return list(items[:train_num] if train_num else items)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator determined by (seed, epoch): the shuffle order of that epoch."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class EpochSampler(Sampler[int]):
    """This rank's share of the (seed, epoch) order, whole batches only, minus the first `skip` batches.

    A pure function of its arguments, so a resumed run restarts mid-epoch on exactly the batches an
    uninterrupted one would have seen next.
    """

    def __init__(self, n: int, batch: int, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                 world: int = 1, drop_last: bool = True, skip: int = 0):
        order = torch.randperm(n, generator=epoch_generator(seed, epoch)).tolist() if shuffle else list(range(n))
        mine = order[rank: n - n % world: world]
        self.batches = len(mine) // batch if drop_last else -(-len(mine) // batch)
        self.indices = mine[skip * batch: self.batches * batch]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, batch: int, shuffle: bool, workers: int, seed: int, epoch: int,
                distributed: tuple[int, int] | None = None, drop_last: bool = True,
                skip_batches: int = 0) -> DataLoader:
    """A DataLoader whose batches depend only on (seed, epoch), also across ranks and worker counts.

    skip_batches leaves out the epoch's first batches (resuming); pinned memory on CUDA machines.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    rank, world = distributed or (0, 1)
    sampler = EpochSampler(len(dataset), batch, shuffle, seed, epoch, rank, world, drop_last, skip_batches)
    if sampler.batches == 0:
        raise CrossFuseError(
            f"batch={batch}: larger than the {len(dataset) // world} items per process, so every batch "
            "would be dropped; lower the batch size or add data"
        )
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available())
