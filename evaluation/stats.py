"""The comparison's statistics: paired tests, a hierarchical bootstrap over runs and images, Holm, CKA.

A training approach is judged from several runs (seeds) on one test set, so each score is a
(runs x images) array. Two sources of noise matter: which test images were drawn, and which run
(initialisation, data order) was trained. The bootstrap resamples both; the signed-rank test sees the
images only (per-image values averaged over runs), and Holm keeps the family of metrics honest.
"""
import math
from typing import Any

import numpy as np
from scipy.stats import rankdata, wilcoxon

BETTER, WORSE, SAME, TOO_LITTLE = "better", "worse", "no significant difference", "too little data"
VERDICTS = (BETTER, WORSE, SAME, TOO_LITTLE)


def min_pairs(alpha: float) -> int:
    """Fewest non-zero differences for which a two-sided signed-rank p-value (smallest_p) can be < alpha."""
    return math.floor(math.log2(2 / alpha)) + 1


def smallest_p(n: int) -> float:
    """The smallest two-sided signed-rank p-value n paired differences can give (all of one sign)."""
    return min(1.0, 2.0 / 2**n) if n else 1.0


def paired_test(base: np.ndarray, new: np.ndarray, alpha: float) -> dict[str, Any]:
    """Wilcoxon signed-rank test of new - base per image (higher is better).

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
                      verdict=SAME if diff.size >= min_pairs(alpha) else TOO_LITTLE)
        return result
    result["p_value"] = float(wilcoxon(nonzero).pvalue)
    ranks = rankdata(np.abs(nonzero))
    gain = ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()
    if nonzero.size < min_pairs(alpha):
        result["verdict"] = TOO_LITTLE
    elif result["p_value"] < alpha and gain != 0:
        result["verdict"] = BETTER if gain > 0 else WORSE
    else:
        result["verdict"] = SAME
    return result


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); nan stays nan."""
    p = np.asarray(p_values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    adjusted = np.full(p.shape, math.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def finite_images(*arrays: np.ndarray) -> np.ndarray:
    """Mask of image columns finite in every run of every (runs x images) array."""
    return np.logical_and.reduce([np.isfinite(a).all(axis=0) for a in arrays])


def hierarchical_bootstrap(base: np.ndarray, new: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                           seed: int = 0) -> tuple[float, float, float]:
    """Difference of means new - base and its percentile interval, from (runs x images) score arrays.

    Each replicate draws runs with replacement within each approach, then test images with
    replacement (the same images for both approaches, since they are paired), and takes the
    difference of the grand means. With one run per approach only the image level varies.
    """
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    keep = finite_images(base, new)
    base, new = base[:, keep], new[:, keep]
    if base.shape[1] == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    images = rng.integers(0, base.shape[1], (n_boot, base.shape[1]))

    def replicate_means(scores: np.ndarray) -> np.ndarray:
        runs = rng.integers(0, scores.shape[0], (n_boot, scores.shape[0]))
        return scores[runs[:, :, None], images[:, None, :]].mean(axis=(1, 2))

    diffs = replicate_means(new) - replicate_means(base)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(new.mean() - base.mean()), float(low), float(high)


def compare_scores(base: np.ndarray, new: np.ndarray, alpha: float, higher_is_better: bool = True,
                   n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One metric, approach `new` against `base`, from (runs x images) arrays; the verdict waits for Holm.

    The signed-rank test runs on per-image values averaged over runs. Differences are reported as
    new - base in the metric's own units; `better` follows the metric's direction.
    """
    diff, low, high = hierarchical_bootstrap(base, new, n_boot, 1 - alpha, seed)
    keep = finite_images(base, new)
    sign = 1.0 if higher_is_better else -1.0
    test = paired_test(sign * np.asarray(base)[:, keep].mean(axis=0), sign * np.asarray(new)[:, keep].mean(axis=0),
                       alpha)
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_value": test["p_value"], "n_images": test["n"],
            "n_nonzero": test["n_nonzero"], "runs": [int(np.shape(base)[0]), int(np.shape(new)[0])],
            "higher_is_better": higher_is_better, "test_verdict": test["verdict"]}


def verdict(result: dict[str, Any], p_adjusted: float, alpha: float) -> str:
    """better / worse only when the Holm-adjusted p is below alpha and the interval excludes zero that way."""
    if result["test_verdict"] == TOO_LITTLE:
        return TOO_LITTLE
    if not (math.isfinite(p_adjusted) and p_adjusted < alpha):
        return SAME
    sign = 1.0 if result["higher_is_better"] else -1.0
    low, high = sorted((sign * result["ci_low"], sign * result["ci_high"]))
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return SAME


def compare_metrics(base: dict[str, np.ndarray], new: dict[str, np.ndarray], alpha: float,
                    higher_is_better: dict[str, bool], n_boot: int = 2000) -> dict[str, dict[str, Any]]:
    """Every metric of `new` against `base` with Holm's correction across the metrics and a verdict each."""
    results = {m: compare_scores(base[m], new[m], alpha, higher_is_better.get(m, True), n_boot, seed=k)
               for k, m in enumerate(base)}
    for result, p in zip(results.values(), holm([r["p_value"] for r in results.values()]), strict=True):
        result["p_holm"] = p
        result["verdict"] = verdict(result, p, alpha)
    return results


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two (samples, features) matrices; nan for constant features."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / den) if den > 0 else math.nan
