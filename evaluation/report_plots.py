"""The comparison report's figures: every approach in one colour, runs of an approach as a mean and a band.

Each function draws one PNG into the report folder (atomically) and returns its file name.
"""
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from formats.run_layout import LossLog
from utils.atomic import atomic_write

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
LAYERS = ("shallow", "dense1", "deep")
MODALITY = {"ir": "IR", "vi": "VIS"}


def colors(approaches: list[str]) -> dict[str, str]:
    return {a: PALETTE[k % len(PALETTE)] for k, a in enumerate(approaches)}


def save(fig: Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(out / name, lambda temp: temp.write_bytes(buffer.getvalue()))
    return name


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def band(ax: Any, curves: list[tuple[np.ndarray, np.ndarray]], color: str, label: str, marker: str = "") -> None:
    """Mean of the runs' curves with a min-max band, on the first run's x (others interpolated onto it)."""
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        return
    x = max((c[0] for c in curves), key=len)
    ys = np.array([np.interp(x, cx, cy, left=np.nan, right=np.nan) for cx, cy in curves])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(ys, axis=0)
    n = len(curves)
    ax.plot(x, mean, marker + "-", color=color, label=f"{label} (mean of {n} runs)" if n > 1 else label,
            markersize=3)
    if n > 1:
        ax.fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=color, alpha=0.2, lw=0)


def epoch_x(log: LossLog) -> np.ndarray:
    """x of each step in epochs (epoch e's steps spread over (e-1, e]), so runs of any batch count align."""
    if "epoch" not in log.series:
        return np.arange(1, log.loss.size + 1, dtype=np.float64)
    epoch = log.series["epoch"]
    x = np.empty_like(epoch)
    for e in np.unique(epoch):
        at = np.flatnonzero(epoch == e)
        x[at] = e - 1 + np.arange(1, at.size + 1) / at.size
    return x


def smooth(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Centred moving average over about 2% of the steps (5 for short runs); returns values and window."""
    window = max(1, min(values.size // 5, max(5, values.size // 50)))
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def _smoothed(log: LossLog, key: str) -> tuple[np.ndarray, np.ndarray]:
    values, window = smooth(log.series[key])
    return epoch_x(log)[window // 2: window // 2 + values.size], values


def _per_epoch(log: LossLog) -> tuple[np.ndarray, np.ndarray]:
    epoch = log.series.get("epoch", np.ones_like(log.loss))
    epochs = np.unique(epoch)
    return epochs, np.array([log.loss[epoch == e].mean() for e in epochs])


def plot_losses(logs: dict[str, list[LossLog]], out: Path) -> dict[str, str]:
    """Smoothed per-step and per-epoch loss, each loss term, temperature and lr: mean and band across runs."""
    palette, plots = colors(list(logs)), {}
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 2)
    for name, runs in logs.items():
        band(axes[0], [_smoothed(log, "loss_data") for log in runs], palette[name], name)
        band(axes[1], [_per_epoch(log) for log in runs], palette[name], name, "o")
    axes[0].set(xlabel="epoch", ylabel="total loss (moving average)", title="Training loss per step, smoothed")
    axes[1].set(xlabel="epoch", ylabel="mean total loss", title="Training loss per epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        if all(log.loss.min() > 0 for runs in logs.values() for log in runs):
            ax.set_yscale("log")
        _legend(ax, fontsize=8)
    plots["loss"] = save(fig, out, "loss_curves.png")

    terms = sorted({t for runs in logs.values() for log in runs for t in log.terms})
    if terms:
        fig = Figure(figsize=(5 * len(terms), 4))
        axes = np.atleast_1d(fig.subplots(1, len(terms)))
        for ax, term in zip(axes, terms, strict=True):
            for name, runs in logs.items():
                band(ax, [_smoothed(log, term) for log in runs if term in log.series], palette[name], name)
            ax.set(xlabel="epoch", ylabel=term, title=f"{term.removeprefix('loss_')} (smoothed)")
            _legend(ax, fontsize=8)
        plots["terms"] = save(fig, out, "loss_terms.png")

    for key, ylabel, title in (("temperature", "mean temperature", "Cross-attention temperature"),
                               ("lr", "learning rate", "Learning rate")):
        fig = Figure(figsize=(9, 3.5))
        ax = fig.subplots()
        for name, runs in logs.items():
            band(ax, [(epoch_x(log), log.series[key]) for log in runs if key in log.series], palette[name], name)
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        if key == "lr":
            ax.set_yscale("log")
        _legend(ax, fontsize=8)
        plots[key] = save(fig, out, f"{key}.png")
    return plots


def plot_cost(costs: dict[str, list[dict[str, Any]]], out: Path) -> str:
    """Training time per run stacked by stage (one bar per run), and time per epoch of each stage."""
    palette = colors(list(costs))
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 2)
    ticks, labels, k = [], [], 0
    for name, runs in costs.items():
        for i, cost in enumerate(runs):
            bottom = 0.0
            for stage, c in cost["stages"].items():
                minutes = c["total_time_s"] / 60
                axes[0].bar(k, minutes, bottom=bottom, color=palette[name], edgecolor="white",
                            alpha=0.55 if stage.startswith("stage 1") else 1.0)
                bottom += minutes
                if i == 0:
                    axes[1].plot(np.arange(1, len(c["epoch_time_s"]) + 1), c["epoch_time_s"],
                                 "s--" if stage.startswith("stage 1") else "o-", color=palette[name],
                                 label=f"{name}: {stage}")
            ticks.append(k)
            labels.append(f"{name}\n{cost['run']}")
            k += 1
        k += 0.5
    axes[0].set_xticks(ticks, labels, fontsize=7)
    axes[0].set(ylabel="minutes (stage 1 pale)", title="Training time per run")
    axes[1].set(xlabel="epoch", ylabel="seconds", title="Time per epoch (first run of each approach)")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(axes[1], fontsize=8)
    return save(fig, out, "training_cost.png")


def plot_quality_curves(curves: dict[str, list[dict[str, Any]]], metrics: list[str], x_key: str, xlabel: str,
                        out: Path, name: str) -> str:
    """Each metric against x_key ("time_s" or "epoch") for every approach: mean and band across runs."""
    palette = colors(list(curves))
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    scale = 60.0 if x_key == "time_s" else 1.0
    for ax, metric in zip(axes, metrics, strict=False):
        for approach, runs in curves.items():
            band(ax, [(np.asarray(r[x_key]) / scale, r["scores"][metric]) for r in runs], palette[approach],
                 approach, "o")
        ax.set(xlabel=xlabel, ylabel=metric, title=metric)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    _legend(axes[0], fontsize=7)
    return save(fig, out, name)


def plot_grid(names: list[str], sources: list[tuple[np.ndarray, np.ndarray]], fused: dict[str, list[np.ndarray]],
              baseline: str, out: Path) -> str:
    """IR | VIS | every approach | |approach - baseline| per other approach, one test pair per row."""
    others = [a for a in fused if a != baseline and baseline in fused]
    columns = ["IR", "VIS", *fused, *(f"|{a} − {baseline}|" for a in others)]
    rows = len(names)
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * rows))
    axes = np.atleast_2d(fig.subplots(rows, len(columns)))
    for i in range(rows):
        for j, image in enumerate([*sources[i], *(f[i] for f in fused.values())]):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
        for j, approach in enumerate(others, start=2 + len(fused)):
            diff = np.abs(fused[approach][i].astype(np.int16) - fused[baseline][i].astype(np.int16))
            shown = axes[i, j].imshow(diff, cmap="magma", vmin=0, vmax=max(1, int(diff.max())))
            fig.colorbar(shown, ax=axes[i, j], fraction=0.046)
        for j, title in enumerate(columns):
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{names[i]}: {title}" if j == 0 else title, fontsize=8)
    return save(fig, out, "fused_grid.png")


def plot_features(rows: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], out: Path, channels: int = 3) -> str:
    """Per row (label, input image, {layer: C x H x W}): the input and its most varied shallow and deep channels.

    Channels of independently trained encoders do not correspond, so each row picks its own.
    """
    fig = Figure(figsize=(2.2 * (1 + 2 * channels), 2.3 * len(rows)))
    axes = np.atleast_2d(fig.subplots(len(rows), 1 + 2 * channels))
    for i, (label, image, features) in enumerate(rows):
        axes[i, 0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title("input", fontsize=8)
        axes[i, 0].set_ylabel(label, fontsize=8)
        for k, layer in enumerate(("shallow", "deep")):
            maps = features[layer]
            top = np.argsort(maps.reshape(len(maps), -1).var(axis=1))[::-1][:channels]
            for c, channel in enumerate(top):
                ax = axes[i, 1 + k * channels + c]
                ax.imshow(maps[channel], cmap="viridis")
                ax.set_title(f"{layer} ch {channel}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return save(fig, out, "feature_maps.png")


def plot_cka(cka: dict[str, dict[str, dict[str, float]]], baseline: str, out: Path) -> str:
    """Linear CKA per encoder layer between each approach's encoders and the baseline's."""
    fig = Figure(figsize=(max(6, 3 * len(cka)), 3.5))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(cka))))
    width = 0.38
    for ax, (approach, by_modality) in zip(axes, cka.items(), strict=False):
        for k, (modality, layers) in enumerate(by_modality.items()):
            ax.bar(np.arange(len(LAYERS)) + (k - 0.5) * width, [layers[layer] for layer in LAYERS], width,
                   label=f"{MODALITY[modality]} encoder")
        ax.set_xticks(np.arange(len(LAYERS)), LAYERS)
        ax.set(ylim=(0, 1.05), ylabel="linear CKA", title=f"{approach} vs {baseline} encoders")
        _legend(ax, loc="lower left", fontsize=8)
    return save(fig, out, "cka.png")


def plot_flagged(thumbs: dict[str, dict[str, np.ndarray]], sources: dict[str, tuple[np.ndarray, np.ndarray]],
                 out: Path, most: int = 8) -> str:
    """IR | VIS | the flagged fused image, one row per flagged (approach, image), at most `most` rows."""
    rows = [(a, name, image) for a, by_name in thumbs.items() for name, image in by_name.items()][:most]
    fig = Figure(figsize=(7.8, 2.6 * len(rows)))
    axes = np.atleast_2d(fig.subplots(len(rows), 3))
    for i, (approach, name, image) in enumerate(rows):
        for j, (shown, title) in enumerate(zip((*sources[name], image), ("IR", "VIS", f"{approach}: flagged"),
                                               strict=True)):
            axes[i, j].imshow(shown, cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{name}: {title}" if j == 0 else title, fontsize=8)
    return save(fig, out, "flagged_images.png")
