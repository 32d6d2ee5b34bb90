"""Scoring folders of fused images (evaluate.py) and the pixel-mean/max rules both evaluate.py and the
comparison score beside them. It needs the metrics and the image readers, not the training stack.
"""
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dataio.datasets import to_ir_size
from dataio.images import Range, is_image_file, read_gray
from dataio.pairs import Pair
from dataio.toolbox_readers import read_as
from evaluation.guards import image_flags, reference_fusions
from metrics.core import MetricError
from metrics.profiles import SUITE, Profile, score
from utils.errors import CrossFuseError

Scores = dict[str, dict[str, float]]  # image name -> metric -> value


def finite_mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(per_image: Scores, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-metric mean and population standard deviation over the images (inf PSNR of exact copies
    gives a mean of inf and a std of nan)."""
    mean, std = {}, {}
    for name in metrics:
        values = np.array([scores[name] for scores in per_image.values()])
        with np.errstate(invalid="ignore"):
            mean[name] = float(np.mean(values)) if values.size else math.nan
            std[name] = float(np.std(values)) if values.size else math.nan
    return {"mean": mean, "std": std}


def rule_scores(sources: Iterable[tuple[str, np.ndarray, np.ndarray]], metrics: Sequence[str],
                profile: Profile = SUITE) -> dict[str, dict[str, Any]]:
    """The pixel-mean and pixel-max rules scored on (name, IR, VIS) sources: the rows any model must beat.

    The rules fuse the sources as the profile read them (its grey levels), so they are scored under the
    same convention as the methods. {rule: {"mean", "std", "per_image"}}.
    """
    per_rule: dict[str, Scores] = {}
    for name, ir, vi in sources:
        for rule, fused in reference_fusions(ir, vi).items():
            per_rule.setdefault(rule, {})[name] = score(profile, fused.astype(ir.dtype), ir, vi, metrics,
                                                        label=f"{rule} of {name}")
    return {rule: summarize(per_image, metrics) | {"per_image": per_image} for rule, per_image in per_rule.items()}


def usable_metrics(sources: list[tuple[np.ndarray, np.ndarray]], profile: Profile) -> tuple[list[str], list[str]]:
    """The profile's metrics every test image is large enough for, and those skipped (VIF needs 41 px a side)."""
    side = min(min(ir.shape) for ir, _ in sources)
    usable = [m for m in profile.metrics if side >= profile.min_side.get(m, 1)]
    return usable, [m for m in profile.metrics if m not in usable]


# ------------------------------------------------------------------------------- folders of fused files

def index_fused(fused_dir: Path) -> dict[str, list[Path]]:
    """Images directly in the fused folder by lower-case stem (several files may share a stem)."""
    fused_dir = Path(fused_dir)
    if not fused_dir.is_dir():
        raise CrossFuseError(f"{fused_dir}: fused folder does not exist or is not a folder")
    index: dict[str, list[Path]] = {}
    for path in sorted(fused_dir.iterdir()):
        if is_image_file(path):
            index.setdefault(path.stem.lower(), []).append(path)
    return index


def fused_stems(pair: Pair) -> list[str]:
    """Stems a pair's fused image may have, in order of preference: pair name, IR stem, VIS stem."""
    return list(dict.fromkeys([pair.name, pair.ir.stem, pair.vi.stem]))


def fused_for(pair: Pair, index: dict[str, list[Path]]) -> list[Path]:
    """Candidate fused files for a pair, from the first of its stems found in the folder."""
    for stem in fused_stems(pair):
        if stem.lower() in index:
            return index[stem.lower()]
    return []


def score_folder(fused_dir: Path, pairs: Sequence[Pair], metrics: Sequence[str] | None = None,
                 desc: str | None = None, profile: Profile = SUITE, ir_range: Range | None = None) -> dict:
    """Score every pair's fused image in `fused_dir` with the profile's reader and metrics.

    Fused images are read at their true scale (16-bit / 257, float x 255), sources as fuse.py reads them
    (a high-depth IR image over ir_range when given).

    A VIS image of another size than its IR image is scored at the IR image's size, as fuse.py fuses
    such pairs. Returns {"mean": {metric: v}, "std": {...}, "per_image": {pair name: {metric: v}},
    "problems": [one line per pair that could not be scored, or fused file matching no pair],
    "missing": [every pair that could not be scored (no, several, unreadable or mis-sized fused images),
    then fused files matching no pair], "resized": pairs scored with a resized VIS image,
    "flags": {pair name: [the guards' raised flags, as text]} for the images any guard flags}.
    """
    metrics = list(profile.metrics) if metrics is None else list(metrics)
    index = index_fused(fused_dir)
    per_image: Scores = {}
    problems: list[str] = []
    missing: list[str] = []
    used: set[Path] = set()
    flags: dict[str, list[str]] = {}
    resized = 0
    for pair in tqdm(pairs, desc=desc or Path(fused_dir).name, unit="img", file=sys.stderr):
        candidates = fused_for(pair, index)
        used.update(candidates)
        if not candidates:
            stems = ", ".join(fused_stems(pair))
            problems.append(f"{pair.name}: no fused image in {fused_dir} (looked for stems {stems})")
            missing.append(pair.name)
            continue
        if len(candidates) > 1:
            names = ", ".join(map(str, candidates))
            problems.append(f"{pair.name}: several fused images share its stem ({names})")
            missing.append(f"{pair.name} (several fused images)")
            continue
        try:
            f = read_as(profile.reader, candidates[0], "fused")
            a, b = read_as(profile.reader, pair.ir, "ir", ir_range), read_as(profile.reader, pair.vi)
            resized += a.shape != b.shape
            per_image[pair.name] = score(profile, f, a, to_ir_size(a, b), metrics, label=str(candidates[0]))
            ir = read_gray(pair.ir, "ir", ir_range)
            raised = image_flags(read_gray(candidates[0], "fused"), ir, to_ir_size(ir, read_gray(pair.vi)))
        except (CrossFuseError, MetricError) as err:
            problems.append(str(err))
            missing.append(f"{pair.name} (fused image could not be scored)")
            continue
        if raised:
            flags[pair.name] = [str(flag) for flag in raised]
    unused = [path for group in index.values() for path in group if path not in used]
    problems += [f"{path}: fused image matches no IR/VIS pair" for path in unused]
    missing += [str(path) for path in unused]
    return summarize(per_image, metrics) | {"per_image": per_image, "problems": problems, "missing": missing,
                                            "resized": resized, "flags": flags}


# ------------------------------------------------------------------------ checkpoints, with a cache
