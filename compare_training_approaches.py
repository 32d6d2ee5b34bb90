"""Does end-to-end training of CrossFuse beat the paper's two-stage training? Compare two finished runs.

    python compare_training_approaches.py                      # runs under models/, their test folder
    python compare_training_approaches.py --demo               # models/demo and data/demo/test
    python compare_training_approaches.py --test data/tno --reference models/reference --out reports/tno

Reads the loss files and the final (or chosen) checkpoints of both runs, fuses a test set with each
model, and writes a self-contained report folder (report.md, report.json, PNG plots) plus a short
summary on stdout. Each metric gets its own verdict from a Wilcoxon signed-rank test on the per-image
differences (end-to-end minus two-stage), since one averaged number hides whether a gain is real.
The two-stage loss curves are stage 2's; stage 1 adds its time and memory to the two-stage cost.
"""
import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import rankdata, wilcoxon
from tqdm import tqdm

from evaluate import summarize
from net.checkpoint import find_reference, load_crossfuse
from net.config import ModelConfig
from net.encoder import Encoder, pad_small
from net.model import CrossFuse
from utils.device import pick_device
from utils.errors import CrossFuseError
from utils.inference import fuse_gray, read_pair
from utils.metrics import METRICS, MIN_SIDE, score_pair
from utils.pairs import Pair, discover_pairs, find_pairs

TWO_STAGE, END_TO_END, REFERENCE = "two-stage", "end-to-end", "reference"
COLORS = {TWO_STAGE: "tab:blue", END_TO_END: "tab:orange", REFERENCE: "tab:green"}
VERDICTS = ("better", "worse", "no significant difference", "too little data")
LAYERS = ("shallow", "dense1", "deep")
MODALITY = {"ir": "IR", "vi": "VIS"}
ENCODER_WIDTHS = ("shallow", "growth", "dense_layers", "deep")  # what stage 1 decides for stage 2
GRID_PAIRS = 4
CKA_PIXELS = 2048  # pixels sampled per image and layer for CKA; keeps big test images cheap


@dataclass
class LossLog:
    """One .mat loss file: per-step series (all of length `steps`), per-epoch cost and the run config."""

    path: Path
    series: dict[str, np.ndarray]
    epoch_time: np.ndarray
    peak_memory: np.ndarray
    memory_kind: str
    config: dict[str, Any]

    @property
    def loss(self) -> np.ndarray:
        return self.series["loss_data"]

    @property
    def terms(self) -> list[str]:
        return [k for k in self.series if k.startswith("loss_") and k != "loss_data"]


@dataclass
class Run:
    """A trained approach: its folder, chosen checkpoint, loaded model and loss history."""

    name: str
    folder: Path
    checkpoint: Path
    epoch: int
    model: CrossFuse
    log: LossLog
    stage1: dict[str, LossLog] = field(default_factory=dict)


# ---------------------------------------------------------------- reading runs


def _args_default(module: str, cls: str, name: str, fallback: Any) -> Any:
    """A default from the args files when they import; the flags must work without them."""
    try:
        return getattr(getattr(__import__(module), cls), name, fallback)
    except (ImportError, AttributeError, SyntaxError):
        return fallback


def _text(value: np.ndarray) -> str:
    """A string variable as loadmat returns it (a 1-element array of str)."""
    return str(np.atleast_1d(value)[0]) if np.size(value) else ""


def read_loss(path: Path, hint: str) -> LossLog:
    """Load and check one loss file; `hint` tells the user what to run when it is unusable."""
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many types for truncated or foreign files
        raise CrossFuseError(f"{path}: not a readable .mat loss file ({type(e).__name__}); {hint}") from None
    loss = np.asarray(data.get("loss_data", []), dtype=np.float64).ravel()
    if loss.size == 0:
        raise CrossFuseError(f"{path}: holds no loss values (training stopped before its first step?); {hint}")
    series = {}
    for name, value in data.items():
        if name == "loss_data" or name.startswith("loss_") or name in ("lr", "temperature", "epoch"):
            values = np.asarray(value, dtype=np.float64).ravel()
            if values.size != loss.size:
                raise CrossFuseError(f"{path}: {name} has {values.size} values but loss_data has {loss.size} "
                                     f"(a damaged or mixed loss file); {hint}")
            series[name] = values
    try:
        config = json.loads(_text(data["config"])) if "config" in data else {}
    except ValueError:
        raise CrossFuseError(f"{path}: its config is not valid JSON; {hint}") from None
    return LossLog(path, series, np.asarray(data.get("epoch_time", []), dtype=np.float64).ravel(),
                   np.asarray(data.get("peak_memory", []), dtype=np.float64).ravel(),
                   _text(data.get("memory_kind", np.array([]))) or "unknown", config)


def _numbered(folder: Path, pattern: str) -> dict[int, Path]:
    """Files of `folder` whose name fully matches `pattern` (one number group), by that number."""
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name))}


def latest_loss(folder: Path, stem: str, hint: str) -> LossLog:
    """The last loss file `stem_eK.mat` of a run (cumulative, so it holds every step)."""
    files = _numbered(folder / "loss", rf"{re.escape(stem)}_e(\d+)\.mat")
    if not files:
        raise CrossFuseError(f"{folder / 'loss'}: no {stem}_eK.mat loss file; {hint}")
    return read_loss(files[max(files)], hint)


def check_config(cfg: ModelConfig, config: dict[str, Any], checkpoint: Path, log_path: Path, hint: str,
                 keys: tuple[str, ...] | None = None) -> None:
    """Fail when a checkpoint was built with other widths than the run that wrote the loss file."""
    model = cfg.to_dict()
    differ = [f"{k} {config[k]!r} vs {model[k]!r}" for k in (keys or model) if k in config and config[k] != model[k]]
    if differ:
        raise CrossFuseError(f"{checkpoint} was built with another configuration than {log_path} says "
                             f"({', '.join(differ)}): files of different runs are mixed; {hint}")


def _run_folder(path: Path, sub: str) -> Path:
    """--two-stage/--end-to-end may name an output root holding `sub`/ or the run folder itself."""
    return path / sub if (path / sub).is_dir() else path


def load_runs(args: argparse.Namespace) -> list[Run]:
    """Both runs; when both fail, one line names everything to run first."""
    runs, problems = [], []
    for name, override, sub, epoch in ((TWO_STAGE, args.two_stage, "transfuse", args.epoch_two_stage),
                                       (END_TO_END, args.end_to_end, "end_to_end", args.epoch_end_to_end)):
        try:
            runs.append(load_run(name, _run_folder(override, sub) if override else args.root / sub, epoch))
        except CrossFuseError as e:
            problems.append(str(e))
    if problems:
        raise CrossFuseError("; and ".join(problems))
    return runs


def load_run(name: str, folder: Path, epoch: int | None) -> Run:
    """Checkpoint, model and loss history of one approach, with a message saying what to run when absent."""
    two_stage = name == TWO_STAGE
    hint = "run train_autoencoder.py and train_fusion.py first" if two_stage else "run train_end_to_end.py first"
    if not folder.is_dir():
        raise CrossFuseError(f"no {name} run in {folder}: {hint}")
    stem = "fusetrans_epoch_" if two_stage else "end_to_end_fusion_epoch_"
    checkpoints = _numbered(folder, rf"{stem}(\d+)\.model")
    if not checkpoints:
        raise CrossFuseError(f"no {name} checkpoint ({stem}N.model) in {folder}: {hint}")
    if epoch is None:
        epoch = max(checkpoints)
    elif epoch not in checkpoints:
        raise CrossFuseError(f"{folder}: no {name} checkpoint for epoch {epoch} "
                             f"(epochs saved: {', '.join(map(str, sorted(checkpoints)))})")
    log = latest_loss(folder, "loss_data_trans" if two_stage else "loss_data_end_to_end", hint)
    model = load_crossfuse(checkpoints[epoch])
    check_config(model.cfg, log.config, checkpoints[epoch], log.path, hint)
    run = Run(name, folder, checkpoints[epoch], epoch, model, log)
    if two_stage:
        stage1 = folder.parent / "autoencoder"
        for modality in ("ir", "vi"):
            if _numbered(stage1 / "loss", rf"loss_data_autoencoder_{modality}_e(\d+)\.mat"):
                log1 = latest_loss(stage1, f"loss_data_autoencoder_{modality}", "run train_autoencoder.py again")
                check_config(model.cfg, log1.config, checkpoints[epoch], log1.path,
                             "run train_fusion.py again on these encoders", ENCODER_WIDTHS)
                run.stage1[modality] = log1
    return run


def load_reference(folder: Path) -> tuple[CrossFuse, Path]:
    """The paper's released model and its fusion file."""
    ir, vi, fusion = find_reference(folder)
    return load_crossfuse(fusion, ir, vi), fusion


def config_notes(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Model settings that differ between the runs: other widths mix model size into the comparison."""
    da, db = a.to_dict(), b.to_dict()
    differ = [f"{k} {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k] and k != "temperature"]
    notes = [f"the runs' models differ ({', '.join(differ)}; {TWO_STAGE} vs {END_TO_END}), so the comparison "
             "mixes model size with the training approach"] if differ else []
    if da["temperature"] != db["temperature"]:
        notes.append(f"cross-attention temperature: {TWO_STAGE} {da['temperature']}, {END_TO_END} {db['temperature']}")
    return notes


def find_test_pairs(args: argparse.Namespace, runs: list[Run]) -> tuple[list[Pair], str]:
    """The test pairs and where they came from: flags, else the runs' configured test folder."""
    if args.test_ir or args.test_vi:
        if not (args.test_ir and args.test_vi):
            raise CrossFuseError("--test-ir and --test-vi go together; or give --test DIR with ir/ and vi/ inside")
        scan, source = find_pairs(args.test_ir, args.test_vi), f"{args.test_ir} + {args.test_vi}"
    else:
        configured = [r.log.config.get("test_dir") for r in runs] + [
            _args_default("args_end_to_end", "Args", "test_dir", None),
            _args_default("args_two_stage", "Stage2", "test_dir", None)]
        test = args.test or next((Path(t) for t in configured if t), None)
        if test is None:
            raise CrossFuseError("no test set configured: pass --test DIR (a folder with ir/ and vi/ subfolders, "
                                 "e.g. TNO) or --test-ir DIR --test-vi DIR")
        scan, source = discover_pairs(test), str(test)
    for path in scan.unpaired:
        print(f"warning: no partner for {path}", file=sys.stderr)
    if not scan.pairs:
        raise CrossFuseError(f"{source}: no IR/VIS pairs found")
    return scan.pairs[: args.max_images] if args.max_images else scan.pairs, source


# ---------------------------------------------------------------- fusion quality


def fuse_all(models: dict[str, CrossFuse], sources: list[tuple[np.ndarray, np.ndarray]],
             device: torch.device) -> dict[str, list[np.ndarray]]:
    fused = {}
    for name, model in models.items():
        model.to(device)
        fused[name] = [fuse_gray(model, ir, vi, device) for ir, vi in tqdm(
            sources, desc=f"fusing ({name})", unit="pair", file=sys.stderr, disable=len(sources) < 2)]
    return fused


def usable_metrics(sources: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[str], list[str]]:
    """Metrics every test image is large enough for, and those skipped (VIF needs 41 px a side)."""
    side = min(min(ir.shape) for ir, _ in sources)
    usable = [m for m in METRICS if side >= MIN_SIDE.get(m, 1)]
    return usable, [m for m in METRICS if m not in usable]


def score(fused: list[np.ndarray], sources: list[tuple[np.ndarray, np.ndarray]], pairs: list[Pair],
          metrics: list[str]) -> dict[str, Any]:
    per_image = {p.name: score_pair(f, ir, vi, metrics, label=p.name)
                 for p, f, (ir, vi) in zip(pairs, fused, sources, strict=True)}
    mean, std = summarize(per_image, metrics)
    return {"mean": mean, "std": std, "per_image": per_image}


def min_pairs(alpha: float) -> int:
    """Fewest non-zero differences for which a two-sided signed-rank p-value (at least 2 / 2^n) can be < alpha."""
    return math.floor(math.log2(2 / alpha)) + 1


def paired_test(base: np.ndarray, new: np.ndarray, alpha: float) -> dict[str, Any]:
    """Wilcoxon signed-rank test of new - base per image; every metric here is higher-is-better.

    Zero differences carry no sign, so they are dropped (scipy's default). Too few informative pairs
    give the verdict "too little data" instead of a "no significant difference" that no data could
    have changed.
    """
    with np.errstate(invalid="ignore"):
        diff = np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    diff = diff[np.isfinite(diff)]  # inf PSNR of exact copies has no usable difference
    nonzero = diff[diff != 0]
    result = {"n": int(diff.size), "n_nonzero": int(nonzero.size),
              "mean_diff": float(diff.mean()) if diff.size else math.nan,
              "median_diff": float(np.median(diff)) if diff.size else math.nan, "p_value": math.nan}
    if nonzero.size == 0:
        result.update(p_value=1.0 if diff.size else math.nan,
                      verdict="no significant difference" if diff.size >= min_pairs(alpha) else "too little data")
        return result
    result["p_value"] = float(wilcoxon(nonzero).pvalue)
    ranks = rankdata(np.abs(nonzero))
    gain = ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()
    if nonzero.size < min_pairs(alpha):
        result["verdict"] = "too little data"
    elif result["p_value"] < alpha and gain != 0:
        result["verdict"] = "better" if gain > 0 else "worse"
    else:
        result["verdict"] = "no significant difference"
    return result


# ---------------------------------------------------------------- encoder analysis


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two (samples, features) matrices; nan for constant features."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / den) if den > 0 else math.nan


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


def encoder_cka(stage1: CrossFuse, end_to_end: CrossFuse, sources: list[tuple[np.ndarray, np.ndarray]],
                device: torch.device) -> dict[str, dict[str, float]]:
    """CKA per modality and layer between the stage-1 and end-to-end encoders on the same pixels."""
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], tuple[list, list]] = {}
    for ir, vi in sources:
        for modality, image in (("ir", ir), ("vi", vi)):
            a = encoder_features(getattr(stage1, f"{modality}_encoder"), image, device)
            b = encoder_features(getattr(end_to_end, f"{modality}_encoder"), image, device)
            for layer in LAYERS:
                xa, xb = (f[layer].flatten(1).T.double().cpu().numpy() for f in (a, b))
                pick = np.sort(rng.choice(len(xa), min(len(xa), CKA_PIXELS), replace=False))
                rows.setdefault((modality, layer), ([], []))[0].append(xa[pick])
                rows[modality, layer][1].append(xb[pick])
    return {modality: {layer: linear_cka(np.concatenate(rows[modality, layer][0]),
                                         np.concatenate(rows[modality, layer][1])) for layer in LAYERS}
            for modality in ("ir", "vi")}


# ---------------------------------------------------------------- training summaries


def progress(log: LossLog) -> tuple[np.ndarray, str]:
    """x of each step in epochs (epoch e's steps spread over (e-1, e]), so runs of any batch count align."""
    if "epoch" not in log.series:
        return np.arange(1, log.loss.size + 1, dtype=np.float64), "step"
    epoch = log.series["epoch"]
    x = np.empty_like(epoch)
    for e in np.unique(epoch):
        at = np.flatnonzero(epoch == e)
        x[at] = e - 1 + np.arange(1, at.size + 1) / at.size
    return x, "epoch"


def smooth(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Centred moving average over about 2% of the steps (5 for short runs); returns values and window."""
    window = max(1, min(values.size // 5, max(5, values.size // 50)))
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def final_epoch(log: LossLog) -> np.ndarray:
    """Losses of the last epoch (the last 10% of steps when epochs were not logged)."""
    if "epoch" in log.series:
        return log.loss[log.series["epoch"] == log.series["epoch"].max()]
    return log.loss[-max(1, log.loss.size // 10):]


def loss_summary(log: LossLog) -> dict[str, Any]:
    loss, last = log.loss, final_epoch(log)
    return {"steps": int(loss.size), "epochs": int(log.series["epoch"].max()) if "epoch" in log.series else None,
            "first_loss": float(loss[0]), "final_mean": float(last.mean()), "final_std": float(last.std()),
            "min_smoothed": float(smooth(loss)[0].min()),
            "final_terms": {t: float(log.series[t][-last.size:].mean()) for t in log.terms},
            "final_temperature": float(log.series["temperature"][-1]) if "temperature" in log.series else None,
            "loss_file": str(log.path)}


def stage_cost(log: LossLog) -> dict[str, Any]:
    times = log.epoch_time
    return {"epochs": int(times.size), "total_time_s": float(times.sum()),
            "time_per_epoch_s": float(times.mean()) if times.size else math.nan,
            "peak_memory_bytes": float(log.peak_memory.max()) if log.peak_memory.size else math.nan,
            "memory_kind": log.memory_kind}


def _stages(run: Run) -> dict[str, LossLog]:
    """Each training stage of a run and its loss file, in training order."""
    stages = {f"stage 1 ({MODALITY[m]})": log for m, log in run.stage1.items()}
    stages["stage 2" if run.name == TWO_STAGE else END_TO_END] = run.log
    return stages


def training_cost(run: Run) -> dict[str, Any]:
    """Per-stage and total time and peak memory; the two-stage total includes stage 1 when logged."""
    stages = {stage: stage_cost(log) for stage, log in _stages(run).items()}
    peaks = [s["peak_memory_bytes"] for s in stages.values() if math.isfinite(s["peak_memory_bytes"])]
    kinds = sorted({s["memory_kind"] for s in stages.values()})
    return {"stages": stages, "total_time_s": sum(s["total_time_s"] for s in stages.values()),
            "peak_memory_bytes": max(peaks) if peaks else math.nan, "memory_kind": "/".join(kinds)}


# ---------------------------------------------------------------- plots


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    return name


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _log_if_positive(ax: Any, *arrays: np.ndarray) -> None:
    if all(a.size and a.min() > 0 for a in arrays):
        ax.set_yscale("log")


def plot_losses(runs: list[Run], out: Path) -> dict[str, str]:
    """Raw, smoothed, distribution, convergence and per-term loss plots; returns {plot: file name}."""
    plots = {}
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for run in runs:
        x, unit = progress(run.log)
        ax.plot(x, run.log.loss, lw=0.6, alpha=0.7, color=COLORS[run.name], label=run.name)
    ax.set(xlabel=unit, ylabel="total loss", title="Training loss per step (raw)")
    _log_if_positive(ax, *(r.log.loss for r in runs))
    _legend(ax)
    plots["raw"] = _save(fig, out, "loss_raw.png")

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for run in runs:
        x, unit = progress(run.log)
        values, window = smooth(run.log.loss)
        ax.plot(x[window // 2: window // 2 + values.size], values, color=COLORS[run.name],
                label=f"{run.name} (moving average of {window} steps)")
    ax.set(xlabel=unit, ylabel="total loss", title="Training loss, smoothed")
    _log_if_positive(ax, *(r.log.loss for r in runs))
    _legend(ax)
    plots["smoothed"] = _save(fig, out, "loss_smoothed.png")

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, final, title in ((axes[0], False, "all steps"), (axes[1], True, "final epoch")):
        for run in runs:
            ax.hist(final_epoch(run.log) if final else run.log.loss, bins=40, alpha=0.5, color=COLORS[run.name],
                    label=run.name)
        ax.set(xlabel="total loss", ylabel="steps", title=f"Loss distribution, {title}")
        _legend(ax)
    plots["distribution"] = _save(fig, out, "loss_distribution.png")

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for run in runs:
        epoch = run.log.series.get("epoch")
        if epoch is not None:
            epochs = np.unique(epoch)
            mean = np.array([run.log.loss[epoch == e].mean() for e in epochs])
            std = np.array([run.log.loss[epoch == e].std() for e in epochs])
            axes[0].plot(epochs, mean, "o-", color=COLORS[run.name], label=run.name)
            axes[0].fill_between(epochs, mean - std, mean + std, color=COLORS[run.name], alpha=0.2)
        x, unit = progress(run.log)
        values, window = smooth(run.log.loss)
        tail = slice(int(values.size * 0.75), None)
        axes[1].plot(x[window // 2: window // 2 + values.size][tail], values[tail], color=COLORS[run.name],
                     label=run.name)
    axes[0].set(xlabel="epoch", ylabel="mean total loss (± std)", title="Loss per epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set(xlabel=unit, ylabel="total loss (smoothed)", title="Final convergence (last 25% of steps)")
    for ax in axes:
        _legend(ax)
    plots["convergence"] = _save(fig, out, "loss_convergence.png")

    terms = sorted({t for r in runs for t in r.log.terms})
    if terms:
        fig = Figure(figsize=(5 * len(terms), 4))
        axes = np.atleast_1d(fig.subplots(1, len(terms)))
        for ax, term in zip(axes, terms, strict=True):
            for run in (r for r in runs if term in r.log.series):
                x, unit = progress(run.log)
                values, window = smooth(run.log.series[term])
                ax.plot(x[window // 2: window // 2 + values.size], values, color=COLORS[run.name], label=run.name)
            ax.set(xlabel=unit, ylabel=term, title=f"{term.removeprefix('loss_')} (smoothed)")
            _legend(ax)
        plots["terms"] = _save(fig, out, "loss_terms.png")

    for key, ylabel, title in (("temperature", "mean temperature", "Cross-attention temperature"),
                               ("lr", "learning rate", "Learning rate")):
        logged = [r for r in runs if key in r.log.series]
        if logged:
            fig = Figure(figsize=(9, 3.5))
            ax = fig.subplots()
            for run in logged:
                x, unit = progress(run.log)
                ax.plot(x, run.log.series[key], color=COLORS[run.name], label=run.name)
            if key == "lr":
                _log_if_positive(ax, *(r.log.series[key] for r in logged))
            ax.set(xlabel=unit, ylabel=ylabel, title=title)
            _legend(ax)
            plots[key] = _save(fig, out, f"{key}.png")
    return plots


def plot_cost(runs: list[Run], out: Path) -> str:
    """Time and peak memory per epoch of every stage, and the total time stacked by stage."""
    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    styles = ("o-", "s--", "^:", "d-.")
    for k, run in enumerate(runs):
        bottom = 0.0
        for style, (stage, log) in zip(styles, _stages(run).items(), strict=False):
            label = run.name if stage == run.name else f"{run.name}: {stage}"
            epochs = np.arange(1, log.epoch_time.size + 1)
            axes[0].plot(epochs, log.epoch_time, style, color=COLORS[run.name], label=label)
            axes[1].plot(np.arange(1, log.peak_memory.size + 1), log.peak_memory / 2**20, style,
                         color=COLORS[run.name], label=label)
            minutes = float(log.epoch_time.sum()) / 60
            axes[2].bar(k, minutes, bottom=bottom, color=COLORS[run.name], edgecolor="white")
            axes[2].text(k, bottom + minutes / 2, stage, ha="center", va="center", fontsize=8)
            bottom += minutes
    axes[0].set(xlabel="epoch", ylabel="seconds", title="Time per epoch")
    axes[1].set(xlabel="epoch", ylabel=f"MiB ({'/'.join(sorted({r.log.memory_kind for r in runs}))})",
                title="Peak memory per epoch")
    axes[2].set_xticks(range(len(runs)), [r.name for r in runs])
    axes[2].set(ylabel="minutes", title="Total training time")
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax, fontsize=8)
    return _save(fig, out, "training_cost.png")


def plot_grid(pairs: list[Pair], sources: list, fused: dict[str, list[np.ndarray]], out: Path) -> str:
    """IR | VIS | each method | |end-to-end - two-stage| for the first few pairs."""
    rows = min(GRID_PAIRS, len(pairs))
    columns = ["IR", "VIS", *fused, "|end-to-end − two-stage|"]
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * rows))
    axes = np.atleast_2d(fig.subplots(rows, len(columns)))
    for i in range(rows):
        diff = np.abs(fused[END_TO_END][i].astype(np.int16) - fused[TWO_STAGE][i].astype(np.int16))
        images = [*sources[i], *(f[i] for f in fused.values())]
        for j, image in enumerate(images):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
        shown = axes[i, -1].imshow(diff, cmap="magma", vmin=0, vmax=max(1, int(diff.max())))
        fig.colorbar(shown, ax=axes[i, -1], fraction=0.046)
        for j, title in enumerate(columns):
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{pairs[i].name}: {title}" if j == 0 else title, fontsize=9)
    return _save(fig, out, "fused_grid.png")


def plot_features(runs: dict[str, Run], image_pair: tuple[np.ndarray, np.ndarray], device: torch.device,
                  out: Path, channels: int = 3) -> str:
    """For one test pair: the most varied shallow and deep channels of each encoder, side by side.

    Channels of independently trained encoders do not correspond, so each row picks its own.
    """
    rows = [(m, name) for m in ("ir", "vi") for name in (TWO_STAGE, END_TO_END)]
    fig = Figure(figsize=(2.2 * (1 + 2 * channels), 2.3 * len(rows)))
    axes = fig.subplots(len(rows), 1 + 2 * channels)
    for i, (modality, name) in enumerate(rows):
        image = image_pair[0 if modality == "ir" else 1]
        features = encoder_features(getattr(runs[name].model, f"{modality}_encoder"), image, device)
        axes[i, 0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title(f"{MODALITY[modality]} input", fontsize=8)
        axes[i, 0].set_ylabel(f"{MODALITY[modality]} {'stage-1' if name == TWO_STAGE else name}", fontsize=9)
        for k, layer in enumerate(("shallow", "deep")):
            maps = features[layer].float().cpu().numpy()
            top = np.argsort(maps.reshape(len(maps), -1).var(axis=1))[::-1][:channels]
            for c, channel in enumerate(top):
                ax = axes[i, 1 + k * channels + c]
                ax.imshow(maps[channel], cmap="viridis")
                ax.set_title(f"{layer} ch {channel}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, out, "feature_maps.png")


def plot_cka(cka: dict[str, dict[str, float]], out: Path) -> str:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    width = 0.38
    for k, modality in enumerate(cka):
        values = [cka[modality][layer] for layer in LAYERS]
        ax.bar(np.arange(len(LAYERS)) + (k - 0.5) * width, values, width, label=f"{MODALITY[modality]} encoder")
    ax.set_xticks(np.arange(len(LAYERS)), LAYERS)
    ax.set(ylim=(0, 1.05), ylabel="linear CKA", title="Stage-1 vs end-to-end encoder features")
    _legend(ax, loc="lower left")
    return _save(fig, out, "cka.png")


# ---------------------------------------------------------------- report


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
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


def _size(n: float) -> str:
    return "n/a" if not math.isfinite(n) else f"{n / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def metric_rows(report: dict) -> list[list[str]]:
    methods = list(report["metrics"])
    rows = [["metric", *methods, "mean diff (e2e − 2s)", "p", "verdict"]]
    for metric, test in report["comparison"].items():
        rows.append([metric, *(f"{_num(report['metrics'][m]['mean'][metric])} ± "
                               f"{_num(report['metrics'][m]['std'][metric], 2)}" for m in methods),
                     f"{test['mean_diff']:+.4g}" if math.isfinite(test["mean_diff"]) else "n/a",
                     _num(test["p_value"], 2), test["verdict"]])
    return rows


def cost_rows(costs: dict[str, dict]) -> list[list[str]]:
    rows = [["approach", "stage", "epochs", "time/epoch", "total time", "peak memory"]]
    for approach, cost in costs.items():
        for stage, c in cost["stages"].items():
            rows.append([approach, stage, str(c["epochs"]), _duration(c["time_per_epoch_s"]),
                         _duration(c["total_time_s"]),
                         f"{_size(c['peak_memory_bytes'])} ({c['memory_kind']})"])
        if len(cost["stages"]) > 1:
            rows.append([approach, "total", "", "", _duration(cost["total_time_s"]),
                         f"{_size(cost['peak_memory_bytes'])} ({cost['memory_kind']})"])
    return rows


def aligned(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def write_markdown(report: dict, plots: dict[str, str], out: Path) -> None:
    alpha, test = report["alpha"], report["test"]
    counts = {v: sum(t["verdict"] == v for t in report["comparison"].values()) for v in VERDICTS}
    lines = ["# CrossFuse training: two-stage vs end-to-end", "",
             "| approach | checkpoint | epoch | loss file |", "|---|---|---|---|"]
    lines += [f"| {name} | `{r['checkpoint']}` | {r['epoch'] or 'released'} | "
              + (f"`{r['loss_file']}` |" if r["loss_file"] else "- |") for name, r in report["runs"].items()]
    lines += ["", *(f"> **Note:** {w}" for w in report["warnings"]), "",
              "## Fusion quality", "",
              f"Test set: `{test['source']}`, {test['pairs']} pairs. Verdicts are for end-to-end relative to "
              f"two-stage, from a two-sided Wilcoxon signed-rank test on the per-image differences "
              f"(alpha = {alpha}); every metric is higher-is-better. \"too little data\" means the informative "
              f"(non-zero) differences are too few for any p-value below alpha (at least "
              f"{min_pairs(alpha)} are needed).", "",
              markdown(metric_rows(report)), "",
              "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."]
    if test["skipped_metrics"]:
        lines += ["", f"Skipped (test images too small): {', '.join(test['skipped_metrics'])}."]
    lines += ["", f"![fused images]({plots['grid']})", "",
              "## Training", "", f"The {TWO_STAGE} curves are stage 2's fusion loss, the same loss {END_TO_END} "
              "minimises; stage 1 (a reconstruction loss) counts in the training cost only.", "",
              "| approach | steps | first loss | final-epoch loss | min (smoothed) | "
              "final terms | final temperature |", "|---|---|---|---|---|---|---|"]
    for name, s in report["loss"].items():
        terms = ", ".join(f"{t.removeprefix('loss_')} {_num(v)}" for t, v in s["final_terms"].items())
        lines.append(f"| {name} | {s['steps']} | {_num(s['first_loss'])} | {_num(s['final_mean'])} ± "
                     f"{_num(s['final_std'], 2)} | {_num(s['min_smoothed'])} | {terms} | "
                     f"{_num(s['final_temperature'])} |")
    lines += [""] + [f"![{key}]({name})" for key, name in plots.items()
                     if key not in ("grid", "features", "cka", "cost")]
    lines += ["", "### Training cost", "", markdown(cost_rows(report["training_cost"])), "",
              f"![training cost]({plots['cost']})", "",
              "## Encoder analysis", "",
              "Linear CKA (Kornblith et al. 2019) between the stage-1 encoders (inside the two-stage model) and the "
              "end-to-end encoders, on the same test pixels: 1 means the same features up to rotation and "
              "scale, near 0 unrelated ones.", "",
              "| encoder | " + " | ".join(LAYERS) + " |", "|---|" + "---|" * len(LAYERS)]
    lines += [f"| {MODALITY[m]} | " + " | ".join(_num(v) for v in layers.values()) + " |"
              for m, layers in report["cka"].items()]
    lines += ["", f"![CKA]({plots['cka']})", "", f"![feature maps]({plots['features']})", ""]
    (out / "report.md").write_text("\n".join(lines))


def compare(args: argparse.Namespace) -> dict:
    """Everything: load, fuse, score, test, analyse, plot; writes the report and returns its numbers."""
    device = pick_device(args.device)
    runs = load_runs(args)
    by_name = {r.name: r for r in runs}
    warnings = config_notes(runs[0].model.cfg, runs[1].model.cfg)
    for run in runs:
        logged = int(run.log.series["epoch"].max()) if "epoch" in run.log.series else run.epoch
        if run.epoch > logged:
            warnings.append(f"{run.checkpoint} is from epoch {run.epoch} but {run.log.path} ends at epoch {logged}: "
                            "a run stopped between the two writes, or files of an older run are mixed in")
    if not runs[0].stage1:
        warnings.append("no stage-1 loss files found, so the two-stage cost covers stage 2 only")
    models = {r.name: r.model for r in runs}
    if args.reference:
        models[REFERENCE], reference_file = load_reference(args.reference)

    pairs, source = find_test_pairs(args, runs)
    sources = [read_pair(p) for p in pairs]
    metrics, skipped = usable_metrics(sources)
    fused = fuse_all(models, sources, device)
    scores = {name: score(images, sources, pairs, metrics) for name, images in fused.items()}
    comparison = {m: paired_test([scores[TWO_STAGE]["per_image"][p.name][m] for p in pairs],
                                 [scores[END_TO_END]["per_image"][p.name][m] for p in pairs], args.alpha)
                  for m in metrics}
    for m, test in comparison.items():
        test["per_image_diff"] = {p.name: scores[END_TO_END]["per_image"][p.name][m]
                                  - scores[TWO_STAGE]["per_image"][p.name][m] for p in pairs}
    cka = encoder_cka(by_name[TWO_STAGE].model, by_name[END_TO_END].model, sources, device)
    costs = {r.name: training_cost(r) for r in runs}

    out = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        plots = plot_losses(runs, out)
        plots["cost"] = plot_cost(runs, out)
        plots["grid"] = plot_grid(pairs, sources, fused, out)
        plots["features"] = plot_features(by_name, sources[0], device, out)
        plots["cka"] = plot_cka(cka, out)
        report = {
            "alpha": args.alpha, "warnings": warnings,
            "runs": {r.name: {"folder": str(r.folder), "checkpoint": str(r.checkpoint), "epoch": r.epoch,
                              "loss_file": str(r.log.path), "model_config": r.model.cfg.to_dict(),
                              "stage1_loss_files": {m: str(log.path) for m, log in r.stage1.items()}}
                     for r in runs},
            "test": {"source": source, "pairs": len(pairs), "names": [p.name for p in pairs],
                     "metrics": metrics, "skipped_metrics": skipped},
            "metrics": scores, "comparison": comparison, "cka": cka,
            "loss": {r.name: loss_summary(r.log) for r in runs}, "training_cost": costs, "plots": plots,
        }
        if args.reference:
            report["runs"][REFERENCE] = {"folder": str(args.reference), "checkpoint": str(reference_file),
                                         "epoch": None, "loss_file": None,
                                         "model_config": models[REFERENCE].cfg.to_dict()}
        (out / "report.json").write_text(json.dumps(_clean(report), indent=2) + "\n")
        write_markdown(report, plots, out)
    except OSError as e:
        raise CrossFuseError(f"{out}: cannot write the report ({e.strerror or e})") from None
    return report


def summary(report: dict, out: Path) -> str:
    lines = [f"test set {report['test']['source']} ({report['test']['pairs']} pairs); verdicts: end-to-end vs "
             f"two-stage, Wilcoxon signed-rank, alpha {report['alpha']}", "", aligned(metric_rows(report)), "",
             "training cost:", aligned(cost_rows(report["training_cost"]))]
    lines += [f"note: {w}" for w in report["warnings"]]
    return "\n".join(lines + ["", f"report written to {out / 'report.md'}"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(_args_default("args_end_to_end", "Args", "out_root", "models"))
    parser.add_argument("--root", type=Path, default=root, help=f"training output root (default {root})")
    parser.add_argument("--demo", action="store_true", help="the demo runs: --root models/demo --test data/demo/test")
    parser.add_argument("--two-stage", type=Path, help="two-stage run folder (default ROOT/transfuse)")
    parser.add_argument("--end-to-end", type=Path, help="end-to-end run folder (default ROOT/end_to_end)")
    parser.add_argument("--epoch-two-stage", type=int, help="two-stage checkpoint epoch (default: the last)")
    parser.add_argument("--epoch-end-to-end", type=int, help="end-to-end checkpoint epoch (default: the last)")
    parser.add_argument("--test", type=Path, help="test folder with ir/ and vi/ pairs (default: the configured one)")
    parser.add_argument("--test-ir", type=Path, help="test IR folder (with --test-vi)")
    parser.add_argument("--test-vi", type=Path, help="test VIS folder (with --test-ir)")
    parser.add_argument("--reference", type=Path, help="folder of the paper's released checkpoints: a third column")
    parser.add_argument("--out", type=Path, help="report folder (default reports/compare; reports/demo with --demo)")
    parser.add_argument("--max-images", type=int, help="use only the first N test pairs (default: all)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    args = parser.parse_args(argv)
    if args.demo:
        args.root = Path("models/demo")
        if not (args.test or args.test_ir or args.test_vi):
            args.test = Path("data/demo/test")
    args.out = args.out or Path("reports/demo" if args.demo else "reports/compare")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1")
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = compare(args)
    except CrossFuseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
