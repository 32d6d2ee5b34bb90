"""The comparison's analyses beyond the quality table: which verdicts flagged images decide, quality
against training time, encoder similarity (CKA), and what each run's training cost and minimised."""
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evaluation import report_plots, stats
from evaluation.folder_scores import Scores, finite_mean
from evaluation.runs import Run
from evaluation.scoring import Scorer
from formats.run_layout import LossLog
from metrics.profiles import higher_is_better
from net.encoder import Encoder, pad_small
from net.model import CrossFuse
from training.settings import compared_between_arms
from training.stages import MODALITIES, STAGE2

CKA_PIXELS = 2048  # pixels sampled per image and layer for CKA; keeps big test images cheap


# ---------------------------------------------------------------- verdicts and the guards' flags


def mark_flag_driven(results: dict[str, dict[str, Any]], base: dict[str, np.ndarray], new: dict[str, np.ndarray],
                     names: list[str], flagged: dict[str, set[str]], alpha: float,
                     n_boot: int) -> dict[str, dict[str, Any]]:
    """Decide what the guards' flagged images do to each verdict of `new` against `base`.

    `flagged` holds each side's flagged images ({"base": names, "new": names}). Where the winner has
    flagged images, its win may be theirs (a grid wins SD): the test runs again without every flagged
    image, and a verdict that does not survive is withheld (`flag_driven`). Where only the loser has
    flagged images (its collapsed or gridded fusions), they can only have cost it: the verdict stands,
    and `loser_flagged` counts them. `verdict_without_flagged` is added to every metric's result.
    """
    every = flagged["base"] | flagged["new"]
    keep = [k for k, n in enumerate(names) if n not in every]
    clean = None
    if every and len(keep) >= 2:
        clean = stats.compare_metrics({m: a[:, keep] for m, a in base.items()}, {m: a[:, keep] for m, a in new.items()},
                                      alpha, {m: higher_is_better(m) for m in base}, n_boot)
    for m, result in results.items():
        verdict = result["verdict"]
        without = clean[m]["verdict"] if clean else (verdict if not every else None)
        winner, loser = {stats.BETTER: ("new", "base"), stats.WORSE: ("base", "new")}.get(verdict, (None, None))
        result["verdict_without_flagged"] = without
        result["flag_driven"] = bool(winner and flagged[winner] and without != verdict)
        result["loser_flagged"] = len(flagged[loser]) if loser and not result["flag_driven"] else 0
    return results


# ---------------------------------------------------------------- quality against compute


def stage1_time(run: Run) -> float:
    return float(sum(log.epoch_time.sum() for log in run.stage1.values()))


def curve_epochs(run: Run, points: int) -> list[int]:
    """At most `points` saved epochs spread evenly over the run, the last one always among them."""
    saved = [e for e in sorted(run.checkpoints) if e <= run.log.epoch_time.size]
    if len(saved) <= points:
        return saved
    picks = np.linspace(0, len(saved) - 1, points).round().astype(int)
    return [saved[i] for i in sorted(set(picks.tolist()))]


def quality_curve(run: Run, scorer: Scorer, count: int, points: int, final: Scores) -> dict[str, Any]:
    """Mean metrics on the first `count` pairs after up to `points` saved epochs, with cumulative training time.

    `final` holds the run's scores at its chosen epoch on every pair (already computed for the quality
    table): that point of the curve is read from it instead of being fused again.
    """
    times = np.cumsum(run.log.epoch_time) + stage1_time(run)
    epochs = curve_epochs(run, points)
    scores = {m: [] for m in scorer.metrics}
    names = [p.name for p in scorer.pairs[:count]]
    for epoch in epochs:
        per_image = {n: final[n] for n in names} if epoch == run.epoch else scorer.scores(run, epoch, count)[0]
        for m in scorer.metrics:
            scores[m].append(finite_mean(s[m] for s in per_image.values()))
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
                rows[m] = {"target": float(target), "time_s": time_to_reach(curves[a], m, target),
                           "own_total_s": float(mean_curve(curves[a], m)[0][-1]),
                           "other_total_s": float(mean_curve(curves[b], m)[0][-1])}
            result[f"{a} to reach {b}"] = rows
    return result


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
                       for layer in report_plots.LAYERS} for modality in MODALITIES}


def feature_rows(models: dict[str, CrossFuse], pair: tuple[np.ndarray, np.ndarray],
                 device: torch.device) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    rows = []
    for k, modality in enumerate(MODALITIES):
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
    stages["stage 2" if run.stage is STAGE2 else run.approach] = stage_cost(run.log)
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


def training_differences(runs: dict[str, list[Run]]) -> dict[str, dict[str, Any]]:
    """The fusion-stage settings (training.settings marks them `fair`) in which the arms' first runs differ,
    as {setting: {approach: value}}."""
    configs = {a: group[0].log.config for a, group in runs.items() if group[0].log is not None}
    differ = {}
    for key in compared_between_arms():
        values = {a: c.get(key) for a, c in configs.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            differ[key] = values
    return differ


def beats(value: float, rule: float, metric: str) -> bool:
    """Whether a score is better than a rule's, in the metric's direction."""
    return value > rule if higher_is_better(metric) else value < rule


def across_sets(reports: dict[str, dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The comparison over several test sets, from each set's report: per set the approaches' scores beside
    the pixel-mean rule (and how many runs beat it), and per approach and metric the test against the
    baseline on every set, Holm-adjusted across every (set, metric) test the summary counts, with the
    sets on which each verdict holds."""
    first = next(iter(reports.values()))
    baseline = first["baseline"]
    summary: dict[str, Any] = {
        "alpha": alpha, "baseline": baseline, "runs": first["runs"], "single_run": first["single_run"],
        "sets": {name: {"source": r["test"]["source"], "pairs": r["test"]["pairs"], "metrics": r["test"]["metrics"],
                        "profile": r["test"]["profile"], "report": f"{name}/report.md",
                        "grid": f"{name}/{r['plots']['grid']}" if r["plots"].get("grid") else None,
                        "flagged": {a: len(by_name) for a, by_name in r["flags"].items()}}
                 for name, r in reports.items()},
        "pixel_mean": {name: r["reference_rules"]["pixel-mean"]["mean"] for name, r in reports.items()},
        "scores": {name: {a: {k: s[k] for k in ("mean", "sd", "run_means")} for a, s in r["scores"].items()}
                   for name, r in reports.items()},
        "training_differences": first["training_differences"],
        "comparison": {}, "holds": {}}
    summary["runs_beating_pixel_mean"] = {
        name: {a: {m: sum(beats(run[m], summary["pixel_mean"][name][m], m) for run in s["run_means"])
                   for m in reports[name]["test"]["metrics"]}
               for a, s in summary["scores"][name].items()} for name in reports}
    for approach in first["comparison"]:
        tests = [(name, m, result) for name, r in reports.items() for m, result in r["comparison"][approach].items()]
        adjusted = stats.holm([result["p_value"] for _, _, result in tests])
        table: dict[str, dict[str, Any]] = {}
        for (name, m, result), p in zip(tests, adjusted, strict=True):
            verdict = stats.verdict(result, p, alpha)
            if verdict != stats.SAME and result.get("flag_driven"):
                verdict = "withheld (flag-driven)"
            table.setdefault(m, {})[name] = {k: result[k] for k in ("diff", "ci_low", "ci_high", "p_value")} | {
                "p_holm_sets": p, "verdict": verdict}
        summary["comparison"][approach] = table
        summary["holds"][approach] = {m: {v: [name for name, c in per_set.items() if c["verdict"] == v]
                                          for v in dict.fromkeys(c["verdict"] for c in per_set.values())}
                                      for m, per_set in table.items()}
    summary["tests_corrected"] = {a: sum(len(t) for t in table.values()) for a, table in summary["comparison"].items()}
    return summary
