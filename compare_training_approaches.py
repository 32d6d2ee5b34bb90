"""Does end-to-end training of CrossFuse beat the paper's two-stage training? Compare k approaches x n runs.

    python compare_training_approaches.py --study runs/demo            # every arm and seed of a study.py study
    python compare_training_approaches.py --run two-stage=runs/a/two-stage --run end-to-end=models/end_to_end
    python compare_training_approaches.py                              # one run each under models/ (as before)
    python compare_training_approaches.py --demo                       # models/demo and data/demo/test

Each run's final (or chosen) checkpoint is fused on the test set and scored; fused images and
per-image scores are cached in the run folder, keyed by checkpoint and test set, so a second report
costs seconds. Per metric, every approach is set against a baseline (two-stage by default): the
difference of means with a 95% interval from a hierarchical bootstrap (runs within an approach, then
test images), a Wilcoxon signed-rank p on the per-image values averaged over runs, Holm's correction
across metrics, and a verdict. Every saved epoch is also scored on the first --curve-images pairs to
plot quality against training time (stage 1 included for the approaches that use it). The report
folder holds report.md, report.json, table.tex, table.csv and the PNG figures.
"""
import argparse
import csv
import hashlib
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cli.entry import run_main
from dataio.images import read_gray, write_gray
from dataio.pairs import Pair, find_pairs
from evaluation import guards, metric_profiles, report_plots, stats
from evaluation.metric_profiles import SUITE, Profile, higher_is_better
from formats import run_layout
from formats.checkpoint import find_reference, load_crossfuse, read_checkpoint
from formats.run_layout import END_TO_END, LAYOUTS, STAGE1, TWO_STAGE, WARM_START, LossLog
from inference.files import fuse_gray, read_pair
from net.config import ModelConfig
from net.encoder import Encoder, pad_small
from net.model import CrossFuse
from utils.atomic import atomic_write, check_writable
from utils.device import pick_device
from utils.errors import CrossFuseError
from utils.tables import format_table

REFERENCE = "reference"
KNOWN_ORDER = (TWO_STAGE, END_TO_END, WARM_START)
ENCODER_WIDTHS = ("shallow", "growth", "dense_layers", "deep")  # what stage 1 decides for the later stages
GRID_PAIRS = 4
CKA_PIXELS = 2048  # pixels sampled per image and layer for CKA; keeps big test images cheap
SINGLE_RUN_NOTE = ("one run per approach: run-to-run variation (initialisation, data order) is not measured, so the "
                   "intervals and verdicts cover test-image variation only and a difference may be training noise")


@dataclass
class Run:
    """One trained model of an approach: its folder, checkpoints by epoch, the chosen one and its history."""

    approach: str
    label: str
    folder: Path
    checkpoints: dict[int, Path]
    epoch: int
    log: LossLog | None  # None for the paper's released model
    config: ModelConfig
    encoder_files: tuple[Path, ...] = ()  # only for reference-layout fusion files
    stage1: dict[str, LossLog] = field(default_factory=dict)
    from_stage1: bool = False  # its encoders came from stage 1 (two-stage, warm start)
    layout: str = END_TO_END  # whose file names it uses: TWO_STAGE or END_TO_END
    cache: bool = True

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints[self.epoch]

    def load(self, epoch: int | None = None) -> CrossFuse:
        return load_crossfuse(self.checkpoints[epoch or self.epoch], *self.encoder_files)


# ---------------------------------------------------------------- finding runs


def _args_default(module: str, cls: str, name: str, fallback: Any) -> Any:
    """A default from the args files when they import; the flags must work without them."""
    try:
        return getattr(getattr(__import__(module), cls), name, fallback)
    except (ImportError, AttributeError, SyntaxError):
        return fallback


def job_folder(path: Path) -> tuple[Path, str] | None:
    """The training-job folder at or directly under `path` and its file layout (TWO_STAGE or END_TO_END)."""
    found = [(folder, layout) for folder in (path, *(path / LAYOUTS[a].folder for a in KNOWN_ORDER))
             for layout in (TWO_STAGE, END_TO_END) if run_layout.fusion_checkpoints(folder, layout)]
    if len({f for f, _ in found}) > 1:
        raise CrossFuseError(f"{path}: holds several runs ({', '.join(str(f) for f, _ in found)}); name one")
    return found[0] if found else None


def check_config(cfg: ModelConfig, config: dict[str, Any], checkpoint: Path, log_path: Path, hint: str,
                 keys: tuple[str, ...] | None = None) -> None:
    """Fail when a checkpoint was built with other widths than the run that wrote the loss file."""
    model = cfg.to_dict()
    differ = [f"{k} {config[k]!r} vs {model[k]!r}" for k in (keys or model) if k in config and config[k] != model[k]]
    if differ:
        raise CrossFuseError(f"{checkpoint} was built with another configuration than {log_path} says "
                             f"({', '.join(differ)}): files of different runs are mixed; {hint}")


def stage1_logs(folder: Path, meta: dict[str, Any], layout: str, cfg: ModelConfig, checkpoint: Path) -> dict:
    """Stage-1 loss files of a run that started from stage-1 encoders: where its checkpoint says they came
    from, else the `autoencoder/` beside a two-stage run."""
    sources = meta.get("encoders") or meta.get("encoders_from") or []
    candidates = [Path(sources[0]).parent] if sources else []
    if sources and folder.parent.name.startswith("seed_"):  # a study moved or read from another folder
        candidates.append(run_layout.run_dir(folder.parents[2] / STAGE1 / folder.parent.name, STAGE1))
    if layout == TWO_STAGE:
        candidates.append(run_layout.run_dir(folder.parent, STAGE1))
    logs = {}
    for stage1 in candidates:
        for modality in run_layout.MODALITIES:
            job = f"autoencoder_{modality}"
            if modality not in logs and run_layout.loss_files(stage1, job):
                log = run_layout.latest_losses(stage1, job, "run train_autoencoder.py again")
                check_config(cfg, log.config, checkpoint, log.path, "train again on these encoders", ENCODER_WIDTHS)
                logs[modality] = log
    return logs


def load_run(approach: str, label: str, folder: Path, epoch: int | None) -> Run:
    """Checkpoints and loss history of one run, with a message saying what to run when absent."""
    layout = TWO_STAGE if approach == TWO_STAGE else END_TO_END
    hint = LAYOUTS.get(approach, LAYOUTS[layout]).hint
    if not folder.is_dir():
        raise CrossFuseError(f"no {approach} run in {folder}: {hint}")
    found = job_folder(folder)
    folder, layout = found if found else (folder, layout)
    checkpoints = run_layout.fusion_checkpoints(folder, layout)
    if not checkpoints:
        stem = LAYOUTS[layout].fusion.format(epoch="N")
        raise CrossFuseError(f"no {approach} checkpoint ({stem}) in {folder}: {hint}")
    if epoch is None:
        epoch = max(checkpoints)
    elif epoch not in checkpoints:
        raise CrossFuseError(f"{folder}: no {approach} checkpoint for epoch {epoch} "
                             f"(epochs saved: {', '.join(map(str, sorted(checkpoints)))})")
    log = run_layout.latest_losses(folder, LAYOUTS[layout].job, hint)
    ckpt = read_checkpoint(checkpoints[epoch])
    if ckpt.kind != "crossfuse":
        raise CrossFuseError(f"{ckpt.path}: expected a fusion checkpoint of this suite, found {ckpt.kind}")
    check_config(ckpt.config, log.config, ckpt.path, log.path, hint)
    return Run(approach, label, folder, checkpoints, epoch, log, ckpt.config,
               stage1=stage1_logs(folder, ckpt.meta, layout, ckpt.config, ckpt.path),
               from_stage1=layout == TWO_STAGE or bool(ckpt.meta.get("encoders_from")), layout=layout)


def runs_in(approach: str, path: Path, epoch: int | None) -> list[Run]:
    """One run per seed_*/ folder of a study arm, or the single run at `path`."""
    seeds = sorted((p for p in path.glob("seed_*") if p.is_dir()), key=lambda p: (len(p.name), p.name))
    if seeds:
        return [load_run(approach, p.name, p, epoch) for p in seeds]
    return [load_run(approach, path.name, path, epoch)]


def study_arms(study: Path) -> dict[str, Path]:
    """The arm folders of a study.py study, known approaches first."""
    if not study.is_dir():
        raise CrossFuseError(f"--study {study}: folder not found")
    arms = {p.name: p for p in study.iterdir() if p.is_dir() and any(p.glob("seed_*"))
            and p.name not in (STAGE1, "report")}
    if not arms:
        raise CrossFuseError(f"--study {study}: no ARM/seed_K run folders (run study.py first)")
    return {a: arms[a] for a in sorted(arms, key=lambda a: (a not in KNOWN_ORDER, KNOWN_ORDER.index(a)
                                                             if a in KNOWN_ORDER else 0, a))}


def approach_paths(args: argparse.Namespace) -> dict[str, Path]:
    if args.study:
        return study_arms(args.study)
    if args.run:
        return dict(args.run)
    return {TWO_STAGE: args.two_stage or args.root / LAYOUTS[TWO_STAGE].folder,
            END_TO_END: args.end_to_end or args.root / LAYOUTS[END_TO_END].folder}


def load_runs(args: argparse.Namespace) -> dict[str, list[Run]]:
    """Every run of every approach; when several fail, one line names everything to run first."""
    runs, problems = {}, []
    for approach, path in approach_paths(args).items():
        try:
            runs[approach] = runs_in(approach, path, args.epoch.get(approach))
        except CrossFuseError as e:
            problems.append(str(e))
    if problems:
        raise CrossFuseError("; and ".join(problems))
    if args.reference:
        ir, vi, fusion = find_reference(args.reference)
        cfg = load_crossfuse(fusion, ir, vi).cfg
        runs[REFERENCE] = [Run(REFERENCE, "released", args.reference, {0: fusion}, 0, None, cfg, (ir, vi),
                               cache=False)]
    if args.baseline not in runs:
        raise CrossFuseError(f"--baseline {args.baseline}: not among the approaches ({', '.join(runs)})")
    return runs


def find_test_pairs(args: argparse.Namespace, runs: list[Run]) -> tuple[list[Pair], str]:
    """The test pairs and where they came from: flags, else the runs' configured test folder."""
    if args.test_ir or args.test_vi:
        if not (args.test_ir and args.test_vi):
            raise CrossFuseError("--test-ir and --test-vi go together; or give --test DIR with ir/ and vi/ inside")
        scan, source = find_pairs(args.test_ir, args.test_vi), f"{args.test_ir} + {args.test_vi}"
    else:
        configured = [r.log.config.get("test_dir") for r in runs if r.log] + [
            _args_default("args_end_to_end", "EndToEnd", "test_dir", None),
            _args_default("args_two_stage", "Stage2", "test_dir", None)]
        test = args.test or next((Path(t) for t in configured if t), None)
        if test is None:
            raise CrossFuseError("no test set configured: pass --test DIR (a folder with ir/ and vi/ subfolders, "
                                 "e.g. TNO) or --test-ir DIR --test-vi DIR")
        scan, source = find_pairs(test), str(test)
    for path in scan.unpaired:
        print(f"warning: no partner for {path}", file=sys.stderr)
    if not scan.pairs:
        raise CrossFuseError(f"{source}: no IR/VIS pairs found")
    return scan.pairs[: args.max_images] if args.max_images else scan.pairs, source


# ---------------------------------------------------------------- scoring, cached


def usable_metrics(sources: list[tuple[np.ndarray, np.ndarray]], profile: Profile) -> tuple[list[str], list[str]]:
    """The profile's metrics every test image is large enough for, and those skipped (VIF needs 41 px a side)."""
    side = min(min(ir.shape) for ir, _ in sources)
    usable = [m for m in profile.metrics if side >= profile.min_side.get(m, 1)]
    return usable, [m for m in profile.metrics if m not in usable]


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
               images: bool = False) -> tuple[dict[str, dict[str, float]], list[np.ndarray]]:
        """Per-image scores of a run's checkpoint on the first `count` pairs, and the fused images if asked."""
        pairs, sources = self.pairs[:count], self.sources[:count]
        files = [run.checkpoints[epoch], *run.encoder_files]
        folder = run.folder / "eval" / f"{files[0].stem}_{cache_key(files, pairs, self.metrics, self.profile.name)}"
        names = [p.name for p in pairs]
        pngs = [folder / "fused" / f"{i:04d}.png" for i in range(len(pairs))]
        if run.cache and (folder / "scores.json").is_file() and (not images or all(p.is_file() for p in pngs)):
            cached = json.loads((folder / "scores.json").read_text())
            if cached.get("names") == names:
                return cached["per_image"], [read_gray(p) for p in pngs] if images else []
        model = run.load(epoch).to(self.device)
        fused = [fuse_gray(model, ir, vi, self.device) for ir, vi in sources]
        per_image = {n: metric_profiles.score(self.profile, f, ir, vi, self.metrics, label=n)
                     for n, f, (ir, vi) in zip(names, fused, sources, strict=True)}
        if run.cache:
            self._store(folder, pngs if images else [], fused, {"checkpoint": str(files[0]), "names": names,
                                                                  "metrics": self.metrics, "per_image": per_image})
        return per_image, fused

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


def finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def approach_scores(per_run: list[dict[str, dict[str, float]]], names: list[str],
                    metrics: list[str]) -> dict[str, Any]:
    """Run means and, across runs, their mean and standard deviation (nan for one run)."""
    run_means = [{m: finite_mean([s[n][m] for n in names]) for m in metrics} for s in per_run]
    arrays = {m: np.array([[s[n][m] for n in names] for s in per_run]) for m in metrics}
    summary = {"run_means": run_means,
               "mean": {m: float(np.mean([r[m] for r in run_means])) for m in metrics},
               "sd": {m: float(np.std([r[m] for r in run_means], ddof=1)) if len(run_means) > 1 else math.nan
                      for m in metrics}}
    return summary | {"arrays": arrays}


# ---------------------------------------------------------------- guards


def reference_rule_scores(sources: list[tuple[np.ndarray, np.ndarray]], names: list[str], metrics: list[str],
                          profile: Profile) -> dict[str, dict[str, dict[str, float]]]:
    """Mean scores of the pixel-mean and pixel-max rules on the test pairs: what any model must beat."""
    per_rule: dict[str, dict[str, dict[str, float]]] = {}
    for name, (ir, vi) in zip(names, sources, strict=True):
        for rule, image in guards.reference_fusions(ir, vi).items():
            per_rule.setdefault(rule, {})[name] = metric_profiles.score(profile, image, ir, vi, metrics, label=name)
    return {rule: {"mean": {m: finite_mean([scores[m] for scores in per_image.values()]) for m in metrics}}
            for rule, per_image in per_rule.items()}


def mark_flag_driven(results: dict[str, dict[str, Any]], base: dict[str, np.ndarray], new: dict[str, np.ndarray],
                     names: list[str], flagged: set[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Test again without the images any guard flagged; a difference that does not survive is theirs.

    `flag_driven` and `verdict_without_flagged` are added to every metric's result; the verdict itself
    is kept, and the report shows a better/worse verdict withheld where only flagged images carry it.
    """
    keep = [k for k, n in enumerate(names) if n not in flagged]
    clean = None
    if flagged and len(keep) >= 2:
        clean = stats.compare_metrics({m: a[:, keep] for m, a in base.items()}, {m: a[:, keep] for m, a in new.items()},
                                      args.alpha, {m: higher_is_better(m) for m in base}, args.bootstrap)
    for m, result in results.items():
        without = clean[m]["verdict"] if clean else (result["verdict"] if not flagged else None)
        result["verdict_without_flagged"] = without
        result["flag_driven"] = result["verdict"] in (stats.BETTER, stats.WORSE) and without != result["verdict"]
    return results


# ---------------------------------------------------------------- quality against compute


def stage1_time(run: Run) -> float:
    return float(sum(log.epoch_time.sum() for log in run.stage1.values()))


def quality_curve(run: Run, scorer: Scorer, count: int) -> dict[str, Any]:
    """Mean metrics on the first `count` pairs after every saved epoch, with cumulative training time."""
    times = np.cumsum(run.log.epoch_time) + stage1_time(run)
    epochs = [e for e in sorted(run.checkpoints) if e <= times.size]
    scores = {m: [] for m in scorer.metrics}
    for epoch in epochs:
        per_image, _ = scorer.scores(run, epoch, count)
        for m in scorer.metrics:
            scores[m].append(finite_mean([s[m] for s in per_image.values()]))
    return {"run": run.label, "epoch": epochs, "time_s": [float(times[e - 1]) for e in epochs],
            "stage1_time_s": stage1_time(run), "scores": scores}


def mean_curve(curves: list[dict[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean time and mean score across runs at each epoch all of them saved."""
    epochs = sorted(set.intersection(*(set(c["epoch"]) for c in curves)))
    time = [np.mean([c["time_s"][c["epoch"].index(e)] for c in curves]) for e in epochs]
    score = [np.mean([c["scores"][metric][c["epoch"].index(e)] for c in curves]) for e in epochs]
    return np.array(time), np.array(score)


def time_to_reach(curves: list[dict[str, Any]], metric: str, target: float) -> float | None:
    """Training seconds after which the mean curve first reaches `target` (metric direction aware); None if never."""
    time, score = mean_curve(curves, metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    reached = np.flatnonzero(sign * score >= sign * target)
    return float(time[reached[0]]) if reached.size else None


def compute_to_reach(curves: dict[str, list[dict]], baseline: str, metrics: list[str]) -> dict[str, Any]:
    """Per approach pair (each vs the baseline, both ways) and metric: time to reach the other's final quality."""
    result = {}
    for other in (a for a in curves if a != baseline):
        for a, b in ((other, baseline), (baseline, other)):
            rows = {}
            for m in metrics:
                target = mean_curve(curves[b], m)[1][-1]
                own_total = mean_curve(curves[a], m)[0][-1]
                reach = time_to_reach(curves[a], m, target)
                rows[m] = {"target": float(target), "time_s": reach, "own_total_s": float(own_total),
                           "other_total_s": float(mean_curve(curves[b], m)[0][-1])}
            result[f"{a} to reach {b}"] = rows
    return result


def reach_sentence(key: str, rows: dict[str, dict[str, Any]]) -> str:
    a, b = key.split(" to reach ")
    reached = {m: r for m, r in rows.items() if r["time_s"] is not None}
    if not reached:
        return f"{a} does not reach {b}'s final quality on any metric within its training."
    share = [r["time_s"] / r["other_total_s"] for r in reached.values() if r["other_total_s"] > 0]
    other = next(iter(rows.values()))["other_total_s"]
    return (f"{a} reaches {b}'s final quality on {len(reached)} of {len(rows)} metrics; where it does, after a median "
            f"{_duration(float(np.median([r['time_s'] for r in reached.values()])))} of training "
            f"({100 * float(np.median(share)):.0f}% of the {_duration(other)} {b} used).")


# ---------------------------------------------------------------- encoder analysis


@torch.inference_mode()
def encoder_features(encoder: Encoder, image: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """C x H x W features after the shallow conv, dense block 1 (pooled, hooked) and dense block 2 (deep)."""
    captured = {}
    handle = encoder.dense1.register_forward_hook(lambda _m, _i, out: captured.update(dense1=out))
    try:
        shallow, deep = encoder(pad_small(torch.from_numpy(image).float()[None, None].to(device)))
    finally:
        handle.remove()
    return {"shallow": shallow[0], "dense1": F.max_pool2d(captured["dense1"], 2)[0], "deep": deep[0]}


def encoder_cka(a: CrossFuse, b: CrossFuse, sources: list[tuple[np.ndarray, np.ndarray]],
                device: torch.device) -> dict[str, dict[str, float]]:
    """CKA per modality and layer between two models' encoders on the same pixels."""
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], tuple[list, list]] = {}
    for ir, vi in sources:
        for modality, image in (("ir", ir), ("vi", vi)):
            fa = encoder_features(getattr(a, f"{modality}_encoder").to(device), image, device)
            fb = encoder_features(getattr(b, f"{modality}_encoder").to(device), image, device)
            for layer in report_plots.LAYERS:
                xa, xb = (f[layer].flatten(1).T.double().cpu().numpy() for f in (fa, fb))
                pick = np.sort(rng.choice(len(xa), min(len(xa), CKA_PIXELS), replace=False))
                rows.setdefault((modality, layer), ([], []))[0].append(xa[pick])
                rows[modality, layer][1].append(xb[pick])
    return {modality: {layer: stats.linear_cka(np.concatenate(rows[modality, layer][0]),
                                               np.concatenate(rows[modality, layer][1]))
                       for layer in report_plots.LAYERS} for modality in run_layout.MODALITIES}


def feature_rows(models: dict[str, CrossFuse], pair: tuple[np.ndarray, np.ndarray],
                 device: torch.device) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    rows = []
    for k, modality in enumerate(run_layout.MODALITIES):
        for name, model in models.items():
            features = encoder_features(getattr(model, f"{modality}_encoder").to(device), pair[k], device)
            rows.append((f"{report_plots.MODALITY[modality]} {name}", pair[k],
                         {layer: features[layer].float().cpu().numpy() for layer in ("shallow", "deep")}))
    return rows


# ---------------------------------------------------------------- training summaries


def final_epoch(log: LossLog) -> np.ndarray:
    """Losses of the last epoch (the last 10% of steps when epochs were not logged)."""
    if "epoch" in log.series:
        return log.loss[log.series["epoch"] == log.series["epoch"].max()]
    return log.loss[-max(1, log.loss.size // 10):]


def loss_summary(log: LossLog) -> dict[str, Any]:
    loss, last = log.loss, final_epoch(log)
    return {"steps": int(loss.size), "epochs": int(log.series["epoch"].max()) if "epoch" in log.series else None,
            "first_loss": float(loss[0]), "final_mean": float(last.mean()), "final_std": float(last.std()),
            "min_smoothed": float(report_plots.smooth(loss)[0].min()),
            "final_terms": {t: float(log.series[t][-last.size:].mean()) for t in log.terms},
            "final_temperature": float(log.series["temperature"][-1]) if "temperature" in log.series else None,
            "loss_file": str(log.path)}


def stage_cost(log: LossLog) -> dict[str, Any]:
    times = log.epoch_time
    return {"epochs": int(times.size), "total_time_s": float(times.sum()), "epoch_time_s": times.tolist(),
            "time_per_epoch_s": float(times.mean()) if times.size else math.nan,
            "peak_memory_bytes": float(log.peak_memory.max()) if log.peak_memory.size else math.nan,
            "memory_kind": log.memory_kind}


def training_cost(run: Run) -> dict[str, Any]:
    """Per-stage and total time and peak memory; stage 1 counts for the runs that started from it."""
    stages = {f"stage 1 ({report_plots.MODALITY[m]})": stage_cost(log) for m, log in run.stage1.items()}
    stages["stage 2" if run.layout == TWO_STAGE else run.approach] = stage_cost(run.log)
    peaks = [s["peak_memory_bytes"] for s in stages.values() if math.isfinite(s["peak_memory_bytes"])]
    return {"run": run.label, "stages": stages, "total_time_s": sum(s["total_time_s"] for s in stages.values()),
            "peak_memory_bytes": max(peaks) if peaks else math.nan,
            "memory_kind": "/".join(sorted({s["memory_kind"] for s in stages.values()}))}


def run_warnings(runs: dict[str, list[Run]], baseline: str) -> list[str]:
    """What a reader must know: mixed model sizes, checkpoints newer than their loss file, missing stage 1."""
    notes = []
    base = runs[baseline][0].config.to_dict()
    for approach, group in runs.items():
        other = group[0].config.to_dict()
        differ = [f"{k} {base[k]!r} vs {other[k]!r}" for k in base if base[k] != other[k] and k != "temperature"]
        if differ:
            notes.append(f"the models of {baseline} and {approach} differ ({', '.join(differ)}), so the comparison "
                         "mixes model size with the training approach")
        if other["temperature"] != base["temperature"]:
            notes.append(f"cross-attention temperature: {baseline} {base['temperature']}, "
                         f"{approach} {other['temperature']}")
        for run in group:
            if run.log is None:
                continue
            logged = int(run.log.series["epoch"].max()) if "epoch" in run.log.series else run.epoch
            if run.epoch > logged:
                notes.append(f"{run.checkpoint} is from epoch {run.epoch} but {run.log.path} ends at epoch {logged}: "
                             "a run stopped between the two writes, or files of an older run are mixed in")
            if run.from_stage1 and not run.stage1:
                notes.append(f"{run.folder}: no stage-1 loss files found, so its training time leaves stage 1 out")
    return list(dict.fromkeys(notes))


# Training settings that make a fight unfair when they differ between arms (data, budget, optimiser);
# where the files, logging and hardware go is not among them.
TRAINING_KEYS = ("preset", "dataset", "train_num", "image_size", "crop", "hflip", "vflip", "batch_size", "epochs", "lr",
                 "lr_schedule", "lr_step_epochs", "lr_gamma", "lr_min", "weight_decay", "optimizer", "warmup_epochs",
                 "grad_clip", "w_int", "w_grad", "feature_norm", "cam_gate", "temperature", "amp", "seed")


def training_differences(runs: dict[str, list[Run]]) -> dict[str, dict[str, Any]]:
    """The fusion-stage settings in which the arms' first runs differ: {setting: {approach: value}}."""
    configs = {a: group[0].log.config for a, group in runs.items() if group[0].log is not None}
    differ = {}
    for key in TRAINING_KEYS:
        values = {a: c.get(key) for a, c in configs.items()}
        if len({json.dumps(v) for v in values.values()}) > 1 and key != "seed":
            differ[key] = values
    return differ


# ---------------------------------------------------------------- report


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy arrays and scalars to Python, non-finite floats to null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None or math.isnan(value) else str(value)
    return f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _mean_sd(mean: float, sd: float) -> str:
    return _num(mean) + (f" ± {_num(sd, 2)}" if math.isfinite(sd) else "")


def best_per_metric(report: dict) -> dict[str, str]:
    """The approach with the best mean per metric (direction aware)."""
    means = {a: s["mean"] for a, s in report["scores"].items()}
    return {m: max(means, key=lambda a: (1 if higher_is_better(m) else -1) * _finite_or(means[a][m]))
            for m in report["test"]["metrics"]}


def _finite_or(value: float) -> float:
    return value if value is not None and math.isfinite(value) else -math.inf


def quality_rows(report: dict) -> list[list[str]]:
    """Approaches, then the pixel-mean/max rules as reference columns (what any model must beat)."""
    approaches, rules = list(report["scores"]), report.get("reference_rules", {})
    rows = [["metric", *(f"{a} (n={len(report['runs'][a])})" for a in approaches), *(f"rule: {r}" for r in rules)]]
    for m in report["test"]["metrics"]:
        rows.append([m, *(_mean_sd(report["scores"][a]["mean"][m], report["scores"][a]["sd"][m]) for a in approaches),
                     *(_num(r["mean"][m]) for r in rules.values())])
    return rows


def differences_box(report: dict) -> list[str]:
    """A highlighted box with every training setting in which the arms differ: is the fight fair?"""
    differ = report["training_differences"]
    if not differ:
        return ["> **Trained alike:** the arms share every training setting (data, batch, epochs, optimiser, "
                "lr, schedule, weight decay, loss weights).", ""]
    approaches = list(next(iter(differ.values())))
    return ["> [!WARNING]", "> **The arms were not trained alike.** Differences in their fusion-stage settings:",
            ">", *(f"> {line}" for line in markdown([["setting", *approaches],
                                                      *([k, *(str(v[a]) for a in approaches)]
                                                        for k, v in differ.items())]).splitlines()), ""]


def flagged_section(report: dict) -> list[str]:
    """The guards' findings: which fused images metrics misjudge, with thumbnails, and what that does to verdicts."""
    flagged = [(a, name, what) for a, by_name in report["flags"].items() for name, what in by_name.items()]
    if not flagged:
        return ["Guards (evaluation/guards.py: collapsed contrast, periodic pattern at the token period, tile seams, "
                "output independent of the input): no fused image flagged.", ""]
    driven = [f"{a} {m}" for a, by_metric in report["comparison"].items() for m, r in by_metric.items()
              if r.get("flag_driven")]
    lines = ["## Flagged images", "",
             f"> **Warning:** {len(flagged)} fused image(s) are flagged by the guards (evaluation/guards.py). Metrics "
             "reward grids and noise and punish flat images, so their scores say little; look at them."
             + (f" Verdicts that only hold with them are withheld: {', '.join(driven)}." if driven else ""), "",
             markdown([["approach", "image", "flags"], *([a, n, "<br>".join(w)] for a, n, w in flagged)]), ""]
    if "flagged" in report["plots"]:
        lines += [f"![flagged images]({report['plots']['flagged']})", ""]
    return lines


def comparison_rows(report: dict) -> list[list[str]]:
    level = round(100 * (1 - report["alpha"]))
    rows = [["approach", "metric", "difference", f"{level}% CI", "Wilcoxon p", "Holm p", "verdict"]]
    for approach, by_metric in report["comparison"].items():
        for m, r in by_metric.items():
            rows.append([approach, m, f"{r['diff']:+.4g}" if math.isfinite(r["diff"]) else "n/a",
                         f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]", _num(r["p_value"], 2),
                         _num(r["p_holm"], 2), f"withheld: {r['verdict']} only with flagged images "
                         f"(without them: {r['verdict_without_flagged'] or 'too few images'})" if r.get("flag_driven")
                         else r["verdict"]])
    return rows


def cost_rows(costs: dict[str, list[dict]]) -> list[list[str]]:
    rows = [["approach", "runs", "stages", "total time (mean ± sd)", "peak memory"]]
    for approach, runs in costs.items():
        totals = [c["total_time_s"] for c in runs]
        sd = float(np.std(totals, ddof=1)) if len(totals) > 1 else math.nan
        peak = max(c["peak_memory_bytes"] for c in runs)
        rows.append([approach, str(len(runs)), " + ".join(runs[0]["stages"]),
                     _duration(float(np.mean(totals))) + (f" ± {_duration(sd)}" if math.isfinite(sd) else ""),
                     f"{peak / 2**20:.0f} MiB ({runs[0]['memory_kind']})" if math.isfinite(peak) else "n/a"])
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: temp.write_text(text))


def write_tables(report: dict, out: Path) -> None:
    """table.tex (booktabs, mean ± sd across runs, best per metric in bold) and table.csv with the same numbers."""
    approaches, best = list(report["scores"]), best_per_metric(report)

    def cell(a: str, m: str) -> str:
        s = report["scores"][a]
        text = f"{_num(s['mean'][m])}" + (f" $\\pm$ {_num(s['sd'][m], 2)}" if math.isfinite(s["sd"][m]) else "")
        return f"\\textbf{{{text}}}" if best[m] == a else text

    lines = [f"% metric profile: {report['test']['profile']} ({report['test']['profile_source']})",
             "\\begin{tabular}{l" + "c" * len(approaches) + "}", "\\toprule",
             "Metric & " + " & ".join(f"{a} ($n={len(report['runs'][a])}$)" for a in approaches) + " \\\\",
             "\\midrule", *(f"{m} & " + " & ".join(cell(a, m) for a in approaches) + " \\\\"
                            for m in report["test"]["metrics"]), "\\bottomrule", "\\end{tabular}", ""]
    _write_text(out / "table.tex", "\n".join(lines))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", *(f"{a} {k}" for a in approaches for k in ("mean", "sd", "runs"))])
    for m in report["test"]["metrics"]:
        writer.writerow([m, *(v for a in approaches for v in (report["scores"][a]["mean"][m],
                                                               report["scores"][a]["sd"][m], len(report["runs"][a])))])
    _write_text(out / "table.csv", buffer.getvalue())


def write_markdown(report: dict, out: Path) -> None:
    plots, alpha, test, baseline = report["plots"], report["alpha"], report["test"], report["baseline"]
    lower = [m for m in test["metrics"] if not higher_is_better(m)]
    lines = ["# CrossFuse training approaches: " + " vs ".join(report["runs"]), "",
             "| approach | run | checkpoint | epoch | loss file |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {r['label']} | `{r['checkpoint']}` | {r['epoch'] or 'released'} | "
              + (f"`{r['loss_file']}` |" if r["loss_file"] else "- |")
              for a, runs in report["runs"].items() for r in runs]
    lines += ["", *differences_box(report), *(f"> **Note:** {w}\n" for w in report["warnings"]),
              "## Fusion quality", "",
              f"Test set: `{test['source']}`, {test['pairs']} pairs. Metric profile: `{test['profile']}` "
              f"({test['profile_source']}). Mean ± standard deviation across runs of each run's mean score (no ± "
              "with a single run); "
              + (f"lower is better for {', '.join(lower)}, higher for the others." if lower
                 else "every metric is higher-is-better."),
              "",
              markdown(quality_rows(report)), "", f"### Against {baseline}", "",
              f"Difference of means (approach − {baseline}) with a {round(100 * (1 - alpha))}% interval from a "
              "hierarchical bootstrap (runs resampled within each approach, then test images), a two-sided Wilcoxon "
              "signed-rank p-value on the per-image scores averaged over runs, and Holm's correction across the "
              f"metrics. A verdict of better or worse needs Holm p < {alpha} and an interval that excludes zero; "
              f"\"too little data\" means fewer than {stats.min_pairs(alpha)} images differ at all.", ""]
    if report["single_run"]:
        lines += [f"> **Note:** {SINGLE_RUN_NOTE}.", ""]
    lines += [markdown(comparison_rows(report)), "", "Summary: " + "; ".join(
        f"{a}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) for a, counts in report["verdicts"].items())
        + ".", ""]
    if test["skipped_metrics"]:
        lines += [f"Skipped (test images too small): {', '.join(test['skipped_metrics'])}.", ""]
    lines += [f"![fused images]({plots['grid']})", ""]
    lines += flagged_section(report)
    if report["curves"]:
        lines += ["## Quality against compute", "",
                  f"Every saved epoch of every run scored on the first {report['curve_images']} test pairs, against "
                  "cumulative training time (stage 1 included for the approaches that start from it) and against "
                  "epoch; lines are means across runs, bands their range.", "",
                  *(f"- {reach_sentence(k, rows)}" for k, rows in report["compute_to_reach"].items()), "",
                  f"![quality vs time]({plots['quality_time']})", "", f"![quality vs epoch]({plots['quality_epoch']})",
                  ""]
    if report["loss"]:
        lines += ["## Training", "", f"The {TWO_STAGE} curves are stage 2's fusion loss, the loss the end-to-end "
                  "approaches minimise; stage 1 (a reconstruction loss) counts in the training cost only.", "",
                  "| approach | run | steps | first loss | final-epoch loss | final temperature |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {a} | {label} | {s['steps']} | {_num(s['first_loss'])} | {_num(s['final_mean'])} ± "
                  f"{_num(s['final_std'], 2)} | {_num(s['final_temperature'])} |"
                  for a, by_run in report["loss"].items() for label, s in by_run.items()]
        lines += ["", *(f"![{k}]({plots[k]})" for k in ("loss", "terms", "temperature", "lr") if k in plots), "",
                  "### Training cost", "", markdown(cost_rows(report["training_cost"])), "",
                  f"![training cost]({plots['cost']})", ""]
    if report["cka"]:
        lines += ["## Encoder analysis", "",
                  f"Linear CKA (Kornblith et al. 2019) between each approach's encoders and {baseline}'s (first run "
                  "of each), on the same test pixels: 1 means the same features up to rotation and scale, near 0 "
                  "unrelated ones.", "",
                  "| approach | encoder | " + " | ".join(report_plots.LAYERS) + " |",
                  "|---|---|" + "---|" * len(report_plots.LAYERS)]
        lines += [f"| {a} | {report_plots.MODALITY[m]} | " + " | ".join(_num(v) for v in layers.values()) + " |"
                  for a, by_modality in report["cka"].items() for m, layers in by_modality.items()]
        lines += ["", f"![CKA]({plots['cka']})", "", f"![feature maps]({plots['features']})", ""]
    lines += ["Tables for a thesis: `table.tex` (booktabs), `table.csv`; every number: `report.json`.", ""]
    _write_text(out / "report.md", "\n".join(lines))


def compare(args: argparse.Namespace) -> dict:
    """Everything: load, fuse, score, test, analyse, plot; writes the report and returns its numbers."""
    out, baseline = args.out, args.baseline
    check_writable(out, "report folder")
    device = pick_device(args.device)
    runs = load_runs(args)
    trained = {a: group for a, group in runs.items() if group[0].log is not None}
    pairs, source = find_test_pairs(args, [r for group in runs.values() for r in group])
    sources = [read_pair(p) for p in pairs]
    profile = metric_profiles.get_profile(args.profile)
    metrics, skipped = usable_metrics(sources, profile)
    scorer = Scorer(pairs, sources, metrics, device, profile)
    names = [p.name for p in pairs]
    all_runs = [r for group in runs.values() for r in group]
    per_run, fused, first_images = {}, {}, {}
    flags: dict[str, dict[str, list[str]]] = {a: {} for a in runs}  # approach -> image -> "run: what"
    thumbs: dict[str, dict[str, np.ndarray]] = {a: {} for a in runs}  # a flagged fused image of each
    for run in tqdm(all_runs, desc="scoring runs", unit="run", file=sys.stderr, disable=len(all_runs) < 2):
        per_run[run.approach, run.label], images = scorer.scores(run, run.epoch, images=True)
        fused.setdefault(run.approach, images[:GRID_PAIRS])
        first_images.setdefault(run.approach, images)
        for name, image, (ir, vi) in zip(names, images, sources, strict=True):
            if raised := guards.image_flags(image, ir, vi, run.config):
                flags[run.approach].setdefault(name, []).append(f"{run.label}: " + "; ".join(map(str, raised)))
                thumbs[run.approach].setdefault(name, image)
    count = min(args.curve_images, len(pairs))
    first = {a: group[0].load().to(device) for a, group in runs.items()}
    if len(pairs) >= 2:  # does each model's output follow its input? (first run of each approach)
        for a, model in first.items():
            checked = guards.input_dependence(lambda ir, vi, m=model: fuse_gray(m, ir, vi, device),
                                              sources[: max(2, count)])
            for k, (name, flag) in enumerate(zip(names, checked, strict=False)):
                if flag.flagged:
                    flags[a].setdefault(name, []).append(f"{runs[a][0].label}: {flag}")
                    thumbs[a].setdefault(name, first_images[a][k])
    summaries = {a: approach_scores([per_run[a, r.label] for r in group], names, metrics) for a, group in runs.items()}
    comparison = {a: mark_flag_driven(stats.compare_metrics(
        summaries[baseline]["arrays"], summaries[a]["arrays"], args.alpha, {m: higher_is_better(m) for m in metrics},
        args.bootstrap), summaries[baseline]["arrays"], summaries[a]["arrays"], names,
        set(flags[a]) | set(flags[baseline]), args) for a in runs if a != baseline}
    rules = reference_rule_scores(sources, names, metrics, profile)
    curves = {a: [quality_curve(r, scorer, count) for r in tqdm(
        group, desc=f"quality curve ({a})", unit="run", file=sys.stderr, disable=None)]
              for a, group in trained.items()} if args.curve_images else {}
    cka_sources = sources[: max(1, count)]
    cka = {a: encoder_cka(first[baseline], model, cka_sources, device) for a, model in first.items() if a != baseline}
    costs = {a: [training_cost(r) for r in group] for a, group in trained.items()}
    single = all(len(group) == 1 for group in runs.values())
    floor = len(metrics) * stats.smallest_p(len(pairs))
    power = [f"with {len(pairs)} test pairs and {len(metrics)} metrics no difference can be significant after "
             f"Holm's correction (the smallest possible adjusted p is {floor:.2g}); use more test pairs"
             ] if floor >= args.alpha and len(runs) > 1 else []
    try:
        plots = report_plots.plot_losses({a: [r.log for r in group] for a, group in trained.items()}, out)
        plots["cost"] = report_plots.plot_cost(costs, out)
        plots["grid"] = report_plots.plot_grid(names[:GRID_PAIRS], sources[:GRID_PAIRS], fused, baseline, out)
        plots["features"] = report_plots.plot_features(feature_rows(first, sources[0], device), out)
        plots["cka"] = report_plots.plot_cka(cka, baseline, out)
        if any(flags.values()):
            plots["flagged"] = report_plots.plot_flagged(thumbs, dict(zip(names, sources, strict=True)), out)
        if curves:
            plots["quality_time"] = report_plots.plot_quality_curves(curves, metrics, "time_s", "training time (min)",
                                                                     out, "quality_vs_time.png")
            plots["quality_epoch"] = report_plots.plot_quality_curves(curves, metrics, "epoch", "epoch", out,
                                                                      "quality_vs_epoch.png")
        report = {
            "alpha": args.alpha, "baseline": baseline, "single_run": single, "bootstrap": args.bootstrap,
            "warnings": run_warnings(runs, baseline) + power + ([SINGLE_RUN_NOTE] if single else []),
            "runs": {a: [{"label": r.label, "folder": str(r.folder), "checkpoint": str(r.checkpoint),
                          "epoch": r.epoch, "loss_file": str(r.log.path) if r.log else None,
                          "model_config": r.config.to_dict(),
                          "stage1_loss_files": {m: str(log.path) for m, log in r.stage1.items()}} for r in group]
                     for a, group in runs.items()},
            "test": {"source": source, "pairs": len(pairs), "names": names, "profile": profile.name,
                     "profile_source": profile.source, "metrics": metrics, "skipped_metrics": skipped},
            "scores": {a: {k: v for k, v in s.items() if k != "arrays"} for a, s in summaries.items()},
            "reference_rules": rules, "flags": flags, "training_differences": training_differences(trained),
            "per_image": {a: {r.label: per_run[a, r.label] for r in group} for a, group in runs.items()},
            "comparison": comparison,
            "verdicts": {a: {v: sum(r["verdict"] == v for r in c.values()) for v in stats.VERDICTS}
                         for a, c in comparison.items()},
            "curve_images": count, "curves": curves,
            "compute_to_reach": compute_to_reach(curves, baseline, metrics) if baseline in curves else {},
            "cka": cka, "loss": {a: {r.label: loss_summary(r.log) for r in group} for a, group in trained.items()},
            "training_cost": costs, "plots": plots,
        }
        _write_text(out / "report.json", json.dumps(_clean(report), indent=2) + "\n")
        write_tables(report, out)
        write_markdown(report, out)
    except (OSError, CrossFuseError) as e:
        raise CrossFuseError(f"{out}: cannot write the report ({getattr(e, 'strerror', None) or e})") from None
    return report


def summary(report: dict, out: Path) -> str:
    quality, comparison = quality_rows(report), comparison_rows(report)
    lines = [f"test set {report['test']['source']} ({report['test']['pairs']} pairs); approaches: "
             + ", ".join(f"{a} x {len(r)} runs" for a, r in report["runs"].items()), "",
             format_table(quality[0], quality[1:]), "",
             f"against {report['baseline']}: hierarchical bootstrap {round(100 * (1 - report['alpha']))}% CI, "
             "Wilcoxon signed-rank, Holm across metrics", format_table(comparison[0], comparison[1:])]
    lines += [reach_sentence(k, rows) for k, rows in report["compute_to_reach"].items()]
    if report["training_cost"]:
        cost = cost_rows(report["training_cost"])
        lines += ["", "training cost:", format_table(cost[0], cost[1:])]
    lines += [f"note: {w}" for w in report["warnings"]]
    differ = report["training_differences"]
    lines += ["NOT TRAINED ALIKE: " + "; ".join(f"{k} " + ", ".join(f"{a}={v[a]!r}" for a in v)
                                                for k, v in differ.items())] if differ else ["trained alike"]
    flagged = sum(len(by_name) for by_name in report["flags"].values())
    lines += [f"guards: {flagged} fused image(s) flagged (see report.md)"] if flagged else []
    return "\n".join(lines + ["", f"report written to {out / 'report.md'}"])


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR")
    return name, Path(path)


def _epoch(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected APPROACH=N")
    return name, int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(_args_default("args_end_to_end", "EndToEnd", "out_root", "models"))
    parser.add_argument("--study", type=Path, help="a study.py folder: every ARM/seed_K run in it")
    parser.add_argument("--run", type=_named, action="append", metavar="NAME=DIR",
                        help="an approach and its run folder (or a folder of seed_K runs); repeatable")
    parser.add_argument("--baseline", default=TWO_STAGE, help=f"approach the others are tested against ({TWO_STAGE})")
    parser.add_argument("--root", type=Path, default=root, help=f"training output root (default {root})")
    parser.add_argument("--demo", action="store_true", help="the demo runs: --root models/demo --test data/demo/test")
    parser.add_argument("--two-stage", type=Path, help="two-stage run folder (default ROOT/transfuse)")
    parser.add_argument("--end-to-end", type=Path, help="end-to-end run folder (default ROOT/end_to_end)")
    parser.add_argument("--epoch", type=_epoch, action="append", default=[], metavar="APPROACH=N",
                        help="checkpoint epoch of an approach's runs (default: the last); repeatable")
    parser.add_argument("--epoch-two-stage", type=int, help="same as --epoch two-stage=N")
    parser.add_argument("--epoch-end-to-end", type=int, help="same as --epoch end-to-end=N")
    parser.add_argument("--test", type=Path, help="test folder with ir/ and vi/ pairs (default: the configured one)")
    parser.add_argument("--test-ir", type=Path, help="test IR folder (with --test-vi)")
    parser.add_argument("--test-vi", type=Path, help="test VIS folder (with --test-ir)")
    parser.add_argument("--reference", type=Path, help="folder of the paper's released checkpoints: one more column")
    parser.add_argument("--out", type=Path, help="report folder (default STUDY/report, reports/compare, reports/demo)")
    parser.add_argument("--max-images", type=int, help="use only the first N test pairs (default: all)")
    parser.add_argument("--curve-images", type=int, default=8,
                        help="test pairs scored at every saved epoch for quality against compute (default 8; 0 = off)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--profile", default=SUITE.name, help="metric definitions and names: this suite's (default) or "
                        f"a toolbox's, one of {', '.join(metric_profiles.PROFILES)} (see evaluate.py)")
    args = parser.parse_args(argv)
    metric_profiles.get_profile(args.profile)
    if args.study and args.run:
        parser.error("give --study or --run, not both")
    if args.demo:
        args.root = Path("models/demo")
        if not (args.test or args.test_ir or args.test_vi):
            args.test = Path("data/demo/test")
    default_out = args.study / "report" if args.study else Path("reports/demo" if args.demo else "reports/compare")
    args.out = args.out or default_out
    args.epoch = dict(args.epoch)
    for name, value in ((TWO_STAGE, args.epoch_two_stage), (END_TO_END, args.epoch_end_to_end)):
        if value is not None:
            args.epoch[name] = value
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1")
    if args.curve_images < 0 or args.bootstrap < 100:
        parser.error("--curve-images must be >= 0 and --bootstrap >= 100")
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be between 0 and 1")
    return args


def cli(argv: list[str]) -> int:
    args = parse_args(argv)
    print(summary(compare(args), args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
