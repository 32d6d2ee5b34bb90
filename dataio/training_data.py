"""The training set a run's settings describe: its pairs or one modality's images, decoded or cached,
and the fixed preview items shown every epoch."""
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataio.cache import CachedImageDataset, CachedPairDataset, build_cache
from dataio.datasets import ImageDataset, ImageTransform, PairDataset, limit
from dataio.images import Role, parse_range
from dataio.pairs import Pair, find_images, find_pairs, split_span, take_span
from utils.args_base import Settings
from utils.cores import loader_workers
from utils.errors import CrossFuseError


def dataset_parts(dataset: str) -> list[tuple[Path, slice]]:
    """The `dataset` setting's folders, each with the slice of its pairs taken: one folder, or several
    joined by commas, e.g. "../shared/data/roadscene[:170],../shared/data/m3fd-train[:100]"."""
    return [(Path(folder), span) for folder, span in (split_span(part.strip()) for part in dataset.split(","))]


def training_pairs(config: Settings) -> list[Pair]:
    """The first train_num IR/VIS pairs of the configured dataset, its folders' pairs in the order given;
    unpaired files are reported."""
    pairs = []
    for root, span in dataset_parts(config.dataset):
        if not root.exists():
            raise CrossFuseError(f"{root}: dataset not found. Get KAIST as data/README.md explains, point "
                                 "--dataset=DIR at another set (e.g. ../shared/data/roadscene), or try --demo")
        scan = find_pairs(root)
        if scan.unpaired:
            shown = ", ".join(str(p) for p in scan.unpaired[:5])
            print(f"warning: {len(scan.unpaired)} files have no partner and are left out: {shown}"
                  + (" ..." if len(scan.unpaired) > 5 else ""), file=sys.stderr)
        pairs += take_span(scan.pairs, span, str(root))
    return limit(pairs, config.train_num)


def training_images(config: Settings, modality: str) -> list[Path]:
    """Stage-1 images: a plain folder (`images`), or one side of the dataset's pairs."""
    if getattr(config, "images", ""):
        return limit(find_images(Path(config.images)), config.train_num)
    return [getattr(p, modality) for p in training_pairs(config)]


def _cache_dir(config: Settings) -> Path:
    """Beside the data when that folder is writable, else under the output root."""
    beside = Path(getattr(config, "images", "") or dataset_parts(config.dataset)[0][0]) / ".crossfuse_cache"
    try:
        beside.mkdir(exist_ok=True)
        return beside
    except OSError:
        return Path(config.out_root) / "cache"


def make_dataset(items: list[Pair] | list[Path], config: Settings, role: Role = "vi") -> Dataset:
    """Decoding (PairDataset/ImageDataset) or memory-mapped cache datasets of the configured transform.

    Single images are read as `role` (their modality), pairs as IR and VIS; IR over the configured ir_range.
    """
    transform = ImageTransform(config.image_size, config.crop, config.hflip, config.vflip)
    pairs = bool(items) and isinstance(items[0], Pair)
    ir_range = parse_range(config.ir_range, "ir_range")
    if config.cache:
        path = build_cache(items, config.image_size, _cache_dir(config), loader_workers(config.workers), role, ir_range)
        return (CachedPairDataset if pairs else CachedImageDataset)(path, transform, config.seed)
    if pairs:
        dataset = PairDataset(items, transform, config.seed, config.on_error, ir_range=ir_range)
    else:
        dataset = ImageDataset(items, transform, config.seed, config.on_error, role, ir_range)
    skipped = dataset.validate()
    if skipped:
        print(f"warning: {skipped} unreadable or mismatched items left out (on_error=raise stops instead)",
              file=sys.stderr)
    if len(dataset) == 0:
        raise CrossFuseError(f"{config.dataset}: no usable training images")
    return dataset


def preview_batch(dataset: Dataset, config: Settings) -> tuple[torch.Tensor, ...]:
    """The first preview_images items of the test folder (held out) when one is set, else of the training set.

    Resized like the training data, so they batch together; the grid shows the same items every epoch.
    """
    if config.preview_images == 0:
        return ()
    if getattr(config, "test_dir", ""):
        pairs = find_pairs(Path(config.test_dir)).pairs[: config.preview_images]
        transform = ImageTransform(config.image_size)
        dataset = PairDataset(pairs, transform, config.seed, "raise", ir_range=parse_range(config.ir_range, "ir_range"))
    items = [dataset[i] for i in range(min(config.preview_images, len(dataset)))]
    items = [item if isinstance(item, tuple) else (item,) for item in items]
    return tuple(torch.stack(parts) for parts in zip(*items, strict=True)) if items else ()
