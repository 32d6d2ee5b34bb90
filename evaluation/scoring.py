"""Scoring fused images: folders of fused files (evaluate.py), checkpoints fused on a test set with a
score cache in the run folder (the comparison), and the pixel-mean/max rules both score beside them.
"""
import hashlib
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dataio.datasets import to_ir_size
from dataio.images import Range, is_image_file, read_gray, write_gray
from dataio.pairs import Pair
from evaluation.guards import image_flags, reference_fusions
from evaluation.metric_profiles import SUITE, Profile, score
from evaluation.runs import Run
from inference.files import fuse_gray
from utils.atomic import atomic_write
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
            f, a, b = profile.read(candidates[0], "fused"), profile.read(pair.ir, "ir", ir_range), profile.read(pair.vi)
            resized += a.shape != b.shape
            per_image[pair.name] = score(profile, f, a, to_ir_size(a, b), metrics, label=str(candidates[0]))
            ir = read_gray(pair.ir, "ir", ir_range)
            raised = image_flags(read_gray(candidates[0], "fused"), ir, to_ir_size(ir, read_gray(pair.vi)))
        except CrossFuseError as err:
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

def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_key(files: list[Path], pairs: list[Pair], metrics: list[str], profile: str) -> str:
    """Identifies a checkpoint's scores on a test set: changes when a file, an image or the metrics change."""
    parts = [*map(_stamp, files), *(f"{_stamp(p.ir)}+{_stamp(p.vi)}" for p in pairs), profile, ",".join(metrics)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class Scorer:
    """Fuses and scores checkpoints on test pairs, reusing what an earlier report cached in the run folder."""

    pairs: list[Pair]
    sources: list[tuple[np.ndarray, np.ndarray]]
    metrics: list[str]
    device: torch.device
    profile: Profile = SUITE
    warned: bool = False

    def scores(self, run: Run, epoch: int, count: int | None = None,
               images: bool = False) -> tuple[Scores, list[np.ndarray]]:
        """Per-image scores of a run's checkpoint on the first `count` pairs, and the fused images if asked."""
        pairs, sources = self.pairs[:count], self.sources[:count]
        files = [run.checkpoints[epoch], *run.encoder_files]
        folder = run.folder / "eval" / f"{files[0].stem}_{cache_key(files, pairs, self.metrics, self.profile.name)}"
        names = [p.name for p in pairs]
        pngs = [folder / "fused" / f"{i:04d}.png" for i in range(len(pairs))]
        if run.cache:
            cached = self._cached(folder, names, pngs if images else [])
            if cached is not None:
                return cached
        model = run.load(epoch).to(self.device)
        fused = [fuse_gray(model, ir, vi, self.device) for ir, vi in sources]
        per_image = {n: score(self.profile, f, ir, vi, self.metrics, label=n)
                     for n, f, (ir, vi) in zip(names, fused, sources, strict=True)}
        if run.cache:
            self._store(folder, pngs if images else [], fused, {"checkpoint": str(files[0]), "names": names,
                                                                  "metrics": self.metrics, "per_image": per_image})
        return per_image, fused

    def _cached(self, folder: Path, names: list[str], pngs: list[Path]) -> tuple[Scores, list[np.ndarray]] | None:
        """What an earlier report stored, or None when it is absent, stale or damaged (then it is recomputed)."""
        try:
            cached = json.loads((folder / "scores.json").read_text())
            per_image = cached["per_image"]
            if cached.get("names") != names or any(set(per_image[n]) != set(self.metrics) for n in names):
                return None
            return per_image, [read_gray(p, "fused") for p in pngs]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, CrossFuseError):
            return None

    def _store(self, folder: Path, pngs: list[Path], fused: list[np.ndarray], scores: dict) -> None:
        """Write the cache; a read-only run folder only costs the speed-up."""
        try:
            for path, image in zip(pngs, fused, strict=False):
                write_gray(path, image)
            atomic_write(folder / "scores.json", lambda temp: temp.write_text(json.dumps(scores)))
        except (OSError, CrossFuseError) as e:
            if not self.warned:
                print(f"warning: cannot cache scores in {folder} ({e}); the next report recomputes them",
                      file=sys.stderr)
                self.warned = True


def approach_scores(per_run: list[Scores], names: list[str], metrics: list[str]) -> dict[str, Any]:
    """Run means and, across runs, their mean and standard deviation (nan for one run); `arrays` holds the
    (runs x images) scores the statistics take."""
    run_means = [{m: finite_mean(s[n][m] for n in names) for m in metrics} for s in per_run]
    arrays = {m: np.array([[s[n][m] for n in names] for s in per_run]) for m in metrics}
    return {"run_means": run_means,
            "mean": {m: float(np.mean([r[m] for r in run_means])) for m in metrics},
            "sd": {m: float(np.std([r[m] for r in run_means], ddof=1)) if len(run_means) > 1 else math.nan
                   for m in metrics},
            "arrays": arrays}
