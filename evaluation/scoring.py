"""Scoring the comparison's checkpoints: each fused on the test set and scored, with a score cache in
the run folder, and the means across an approach's runs. Folders of fused files and the pixel rules
are scored in evaluation/folder_scores.py.
"""
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataio.images import read_gray, write_gray
from dataio.pairs import Pair
from evaluation.folder_scores import Scores, finite_mean
from evaluation.runs import Run
from inference.files import fuse_gray
from metrics.profiles import SUITE, Profile, score
from utils.atomic import atomic_write
from utils.errors import CrossFuseError


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_key(files: list[Path], pairs: list[Pair], metrics: list[str], profile: str, amp: bool = False) -> str:
    """Identifies a checkpoint's scores on a test set: changes when a file, an image, the metrics or the
    fusion's precision change."""
    parts = [*map(_stamp, files), *(f"{_stamp(p.ir)}+{_stamp(p.vi)}" for p in pairs), profile, ",".join(metrics)]
    parts += ["bf16"] if amp else []
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class Scorer:
    """Fuses and scores checkpoints on test pairs, reusing what an earlier report cached in the run folder."""

    pairs: list[Pair]
    sources: list[tuple[np.ndarray, np.ndarray]]
    metrics: list[str]
    device: torch.device
    profile: Profile = SUITE
    amp: bool = False  # fuse in bf16 (utils.device.autocast: where the device has it natively)
    warned: bool = False

    def scores(self, run: Run, epoch: int, count: int | None = None,
               images: bool = False) -> tuple[Scores, list[np.ndarray]]:
        """Per-image scores of a run's checkpoint on the first `count` pairs, and the fused images if asked."""
        pairs, sources = self.pairs[:count], self.sources[:count]
        files = [run.checkpoints[epoch], *run.encoder_files]
        key = cache_key(files, pairs, self.metrics, self.profile.name, self.amp)
        folder = run.folder / "eval" / f"{files[0].stem}_{key}"
        names = [p.name for p in pairs]
        pngs = [folder / "fused" / f"{i:04d}.png" for i in range(len(pairs))]
        if run.cache:
            cached = self._cached(folder, names, pngs if images else [])
            if cached is not None:
                return cached
        model = run.load(epoch).to(self.device)
        fused = [fuse_gray(model, ir, vi, self.device, self.amp) for ir, vi in sources]
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
