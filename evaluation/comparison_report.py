"""The comparison's report: report.md, table.tex and table.csv from the report's numbers, and the summary
printed at the end. The numbers themselves are report.json (compare_training_approaches.py)."""
import math
from pathlib import Path

import numpy as np

from evaluation import report_plots, stats
from evaluation.reports import csv_text, latex_escape, latex_table, markdown_table, write_text
from metrics.profiles import higher_is_better
from utils.tables import duration, format_table, number

SINGLE_RUN_NOTE = ("one run per approach: run-to-run variation (initialisation, data order) is not measured, so the "
                   "intervals and verdicts cover test-image variation only and a difference may be training noise")


def mean_sd(mean: float, sd: float) -> str:
    return number(mean) + (f" ± {number(sd, 2)}" if sd is not None and math.isfinite(sd) else "")


def best_per_metric(report: dict) -> dict[str, str]:
    """The approach with the best mean per metric (direction aware)."""
    means = {a: s["mean"] for a, s in report["scores"].items()}

    def key(a: str, m: str) -> float:
        value = means[a][m]
        return (1 if higher_is_better(m) else -1) * (value if value is not None and math.isfinite(value) else -math.inf)

    return {m: max(means, key=lambda a, m=m: key(a, m)) for m in report["test"]["metrics"]}


def quality_rows(report: dict) -> list[list[str]]:
    """Approaches, then the pixel-mean/max rules as reference columns (what any model must beat)."""
    approaches, rules = list(report["scores"]), report.get("reference_rules", {})
    rows = [["metric", *(f"{a} (n={len(report['runs'][a])})" for a in approaches), *(f"rule: {r}" for r in rules)]]
    for m in report["test"]["metrics"]:
        rows.append([m, *(mean_sd(report["scores"][a]["mean"][m], report["scores"][a]["sd"][m]) for a in approaches),
                     *(number(r["mean"][m]) for r in rules.values())])
    return rows


def verdict_text(result: dict, approach: str, baseline: str) -> str:
    """A verdict as the reader should take it: withheld where flagged images may have produced it, and
    marked with the loser's flagged images where they stand on the losing side only."""
    if result.get("flag_driven"):
        return (f"withheld: {result['verdict']} only with flagged images "
                f"(without them: {result['verdict_without_flagged'] or 'too few images'})")
    if result.get("loser_flagged"):
        loser = baseline if result["verdict"] == stats.BETTER else approach
        return f"{result['verdict']} ({result['loser_flagged']} flagged image(s) of {loser}, the losing side)"
    return result["verdict"]


def comparison_rows(report: dict) -> list[list[str]]:
    level = round(100 * (1 - report["alpha"]))
    rows = [["approach", "metric", "difference", f"{level}% CI", "Wilcoxon p", "Holm p", "verdict"]]
    for approach, by_metric in report["comparison"].items():
        for m, r in by_metric.items():
            rows.append([approach, m, number(r["diff"], sign=True), f"[{number(r['ci_low'])}, {number(r['ci_high'])}]",
                         number(r["p_value"], 2), number(r["p_holm"], 2),
                         verdict_text(r, approach, report["baseline"])])
    return rows


def cost_rows(costs: dict[str, list[dict]]) -> list[list[str]]:
    rows = [["approach", "runs", "stages", "total time (mean ± sd)", "peak memory"]]
    for approach, runs in costs.items():
        totals = [c["total_time_s"] for c in runs]
        sd = float(np.std(totals, ddof=1)) if len(totals) > 1 else math.nan
        peak = max(c["peak_memory_bytes"] for c in runs)
        rows.append([approach, str(len(runs)), " + ".join(runs[0]["stages"]),
                     duration(float(np.mean(totals))) + (f" ± {duration(sd)}" if math.isfinite(sd) else ""),
                     f"{peak / 2**20:.0f} MiB ({runs[0]['memory_kind']})" if math.isfinite(peak) else "n/a"])
    return rows


def reach_sentence(key: str, rows: dict[str, dict]) -> str:
    a, b = key.split(" to reach ")
    reached = {m: r for m, r in rows.items() if r["time_s"] is not None}
    if not reached:
        return f"{a} does not reach {b}'s final quality on any metric within its training."
    share = [r["time_s"] / r["other_total_s"] for r in reached.values() if r["other_total_s"] > 0]
    other = next(iter(rows.values()))["other_total_s"]
    return (f"{a} reaches {b}'s final quality on {len(reached)} of {len(rows)} metrics; where it does, after a median "
            f"{duration(float(np.median([r['time_s'] for r in reached.values()])))} of training "
            f"({100 * float(np.median(share)):.0f}% of the {duration(other)} {b} used).")


def differences_box(report: dict) -> list[str]:
    """A highlighted box with every training setting in which the arms differ: is the fight fair?"""
    differ = report["training_differences"]
    if not differ:
        return ["> **Trained alike:** the arms share every training setting (data, batch, epochs, optimiser, "
                "lr, schedule, weight decay, loss weights).", ""]
    approaches = list(next(iter(differ.values())))
    rows = [["setting", *approaches], *([k, *(str(v[a]) for a in approaches)] for k, v in differ.items())]
    return ["> [!WARNING]", "> **The arms were not trained alike.** Differences in their fusion-stage settings:",
            ">", *(f"> {line}" for line in markdown_table(rows).splitlines()), ""]


def flagged_section(report: dict) -> list[str]:
    """The guards' findings: which fused images metrics misjudge, with thumbnails, and what that does to verdicts."""
    flagged = [(a, name, what) for a, by_name in report["flags"].items() for name, what in by_name.items()]
    if not flagged:
        return ["Guards (evaluation/guards.py: collapsed contrast, periodic pattern at the token period, tile "
                "seams, blobs outside both sources' local range, output independent of the input): no fused image "
                "flagged.", ""]
    driven = [f"{a} {m}" for a, by_metric in report["comparison"].items() for m, r in by_metric.items()
              if r.get("flag_driven")]
    lines = ["## Flagged images", "",
             f"> **Warning:** {len(flagged)} fused image(s) are flagged by the guards (evaluation/guards.py). Metrics "
             "reward grids and noise and punish flat images, so their scores say little; look at them. A verdict "
             "whose winner has flagged images is tested again without them and withheld if it only holds with them"
             + (f" ({', '.join(driven)})" if driven else "") + "; one whose flagged images are all on the losing "
             "side stands, marked with their count.", "",
             markdown_table([["approach", "image", "flags"], *([a, n, "<br>".join(w)] for a, n, w in flagged)]), ""]
    if "flagged" in report["plots"]:
        lines += [f"![flagged images]({report['plots']['flagged']})", ""]
    return lines


def write_tables(report: dict, out: Path) -> None:
    """table.tex (booktabs, mean ± sd across runs, best per metric in bold) and table.csv with the same numbers."""
    approaches, best = list(report["scores"]), best_per_metric(report)

    def cell(a: str, m: str) -> str:
        s = report["scores"][a]
        text = number(s["mean"][m]) + (f" $\\pm$ {number(s['sd'][m], 2)}" if s["sd"][m] is not None
                                       and math.isfinite(s["sd"][m]) else "")
        return f"\\textbf{{{text}}}" if best[m] == a else text

    rows = [["Metric", *(f"{latex_escape(a)} ($n={len(report['runs'][a])}$)" for a in approaches)],
            *([latex_escape(m), *(cell(a, m) for a in approaches)] for m in report["test"]["metrics"])]
    comment = f"metric profile: {report['test']['profile']} ({report['test']['profile_source']})"
    write_text(out / "table.tex", latex_table(rows, "l" + "c" * len(approaches), comment=comment))
    write_text(out / "table.csv", csv_text(
        [["metric", *(f"{a} {k}" for a in approaches for k in ("mean", "sd", "runs"))],
         *([m, *(v for a in approaches for v in (report["scores"][a]["mean"][m], report["scores"][a]["sd"][m],
                                                 len(report["runs"][a])))] for m in report["test"]["metrics"])]))


def write_markdown(report: dict, out: Path) -> None:
    plots, alpha, test, baseline = report["plots"], report["alpha"], report["test"], report["baseline"]
    lower = [m for m in test["metrics"] if not higher_is_better(m)]
    lines = ["# CrossFuse training approaches: " + " vs ".join(report["runs"]), "",
             markdown_table([["approach", "run", "checkpoint", "epoch", "loss file"],
                             *([a, r["label"], f"`{r['checkpoint']}`", str(r["epoch"] or "released"),
                                f"`{r['loss_file']}`" if r["loss_file"] else "-"]
                               for a, runs in report["runs"].items() for r in runs)])]
    lines += ["", *differences_box(report), *(f"> **Note:** {w}\n" for w in report["warnings"]),
              "## Fusion quality", "",
              f"Test set: `{test['source']}`, {test['pairs']} pairs, fused in {test['precision']}. "
              f"Metric profile: `{test['profile']}` ({test['profile_source']}). Mean ± standard deviation across "
              "runs of each run's mean score (no ± with a single run); "
              + (f"lower is better for {', '.join(lower)}, higher for the others." if lower
                 else "every metric is higher-is-better."),
              "",
              markdown_table(quality_rows(report)), "", f"### Against {baseline}", "",
              f"Difference of means (approach − {baseline}) with a {round(100 * (1 - alpha))}% interval from a "
              "hierarchical bootstrap (runs resampled within each approach, then test images), a two-sided Wilcoxon "
              "signed-rank p-value on the per-image scores averaged over runs, and Holm's correction across the "
              f"metrics. A verdict of better or worse needs Holm p < {alpha} and an interval that excludes zero; "
              f"\"too little data\" means fewer than {stats.min_pairs(alpha)} images differ at all.", ""]
    if report["single_run"]:
        lines += [f"> **Note:** {SINGLE_RUN_NOTE}.", ""]
    lines += [markdown_table(comparison_rows(report)), "", "Summary: " + "; ".join(
        f"{a}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) for a, counts in report["verdicts"].items())
        + ".", ""]
    if test["skipped_metrics"]:
        lines += [f"Skipped (test images too small): {', '.join(test['skipped_metrics'])}.", ""]
    lines += [f"![fused images]({plots['grid']})", ""]
    lines += flagged_section(report)
    if report["curves"]:
        lines += ["## Quality against compute", "",
                  f"Saved epochs of every run (up to {report['curve_points']} per run, the last included) scored on "
                  f"the first {report['curve_images']} test pairs, against cumulative training time (stage 1 included "
                  "for the approaches that start from it) and against epoch; lines are means across runs, bands "
                  "their range.", "",
                  *(f"- {reach_sentence(k, rows)}" for k, rows in report["compute_to_reach"].items()), "",
                  f"![quality vs time]({plots['quality_time']})", "", f"![quality vs epoch]({plots['quality_epoch']})",
                  ""]
    if report["loss"]:
        lines += ["## Training", "", "The two-stage curves are stage 2's fusion loss, the loss the end-to-end "
                  "approaches minimise; stage 1 (a reconstruction loss) counts in the training cost only.", "",
                  markdown_table([["approach", "run", "steps", "first loss", "final-epoch loss", "final temperature"],
                                  *([a, label, str(s["steps"]), number(s["first_loss"]),
                                     f"{number(s['final_mean'])} ± {number(s['final_std'], 2)}",
                                     number(s["final_temperature"])]
                                    for a, by_run in report["loss"].items() for label, s in by_run.items())])]
        lines += ["", *(f"![{k}]({plots[k]})" for k in ("loss", "terms", "temperature", "lr") if k in plots), "",
                  "### Training cost", "", markdown_table(cost_rows(report["training_cost"])), "",
                  f"![training cost]({plots['cost']})", ""]
    if report["cka"]:
        lines += ["## Encoder analysis", "",
                  f"Linear CKA (Kornblith et al. 2019) between each approach's encoders and {baseline}'s (first run "
                  "of each), on the same test pixels: 1 means the same features up to rotation and scale, near 0 "
                  "unrelated ones.", "",
                  markdown_table([["approach", "encoder", *report_plots.LAYERS],
                                  *([a, report_plots.MODALITY[m], *(number(v) for v in layers.values())]
                                    for a, by_modality in report["cka"].items() for m, layers in by_modality.items())]),
                  "", f"![CKA]({plots['cka']})", "", f"![feature maps]({plots['features']})", ""]
    lines += ["Tables for a thesis: `table.tex` (booktabs), `table.csv`; every number: `report.json`.", ""]
    write_text(out / "report.md", "\n".join(lines))


def summary(report: dict, out: Path) -> str:
    """What the comparison prints at the end."""
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


# ---------------------------------------------------------------- several test sets


def set_quality_rows(summary: dict, name: str) -> list[list[str]]:
    """One test set: the pixel-mean rule, then each approach's mean ± sd across runs with how many of its
    runs beat the rule ([k/n])."""
    metrics, rule = summary["sets"][name]["metrics"], summary["pixel_mean"][name]
    rows = [["", *metrics], ["rule: pixel-mean", *(number(rule[m]) for m in metrics)]]
    for approach, s in summary["scores"][name].items():
        beat, n = summary["runs_beating_pixel_mean"][name][approach], len(s["run_means"])
        rows.append([f"{approach} (n={n})", *(f"{mean_sd(s['mean'][m], s['sd'][m])} [{beat[m]}/{n}]"
                                               for m in metrics)])
    return rows


def set_verdict_rows(summary: dict, approach: str) -> list[list[str]]:
    """One approach against the baseline: per metric its verdict on every set (difference, Holm p across
    sets), and on which sets each verdict holds."""
    sets = list(summary["sets"])
    rows = [["metric", *sets, "holds on"]]
    for m, per_set in summary["comparison"][approach].items():
        cells = [f"{c['verdict']} ({number(c['diff'], 3, sign=True)}, p {number(c['p_holm_sets'], 2)})"
                 if (c := per_set.get(name)) else "-" for name in sets]
        holds = "; ".join(f"{v}: {', '.join(names)}" for v, names in summary["holds"][approach][m].items())
        rows.append([m, *cells, holds])
    return rows


def sets_summary(summary: dict, out: Path) -> str:
    """What a comparison over several test sets prints at the end."""
    lines = ["approaches: " + ", ".join(f"{a} x {len(r)} runs" for a, r in summary["runs"].items())]
    for name, s in summary["sets"].items():
        rows = set_quality_rows(summary, name)
        flagged = sum(s["flagged"].values())
        lines += ["", f"{name}: {s['source']} ({s['pairs']} pairs)" + (f"; {flagged} flagged image(s)" if flagged
                                                                        else ""), format_table(rows[0], rows[1:])]
    for approach in summary["comparison"]:
        rows = set_verdict_rows(summary, approach)
        lines += ["", f"{approach} against {summary['baseline']}, Holm across {summary['tests_corrected'][approach]} "
                      "(set, metric) tests:", format_table(rows[0], rows[1:])]
    differ = summary["training_differences"]
    lines += ["", "NOT TRAINED ALIKE: " + ", ".join(differ) if differ else "trained alike"]
    return "\n".join(lines + ["", f"summary written to {out / 'report.md'}, one report per set beside it"])


def write_sets_markdown(summary: dict, out: Path) -> None:
    """OUT/report.md of a comparison over several test sets: the summary, and a link and a grid per set."""
    alpha, baseline = summary["alpha"], summary["baseline"]
    lines = ["# CrossFuse training approaches over several test sets: " + " vs ".join(summary["runs"]), "",
             *differences_box(summary), "## Per test set", "",
             "Mean ± standard deviation across runs of each run's mean score; [k/n]: k of the n runs beat the "
             "pixel-mean rule on that metric (in its direction). Each set's own report has every table, the "
             "verdicts within the set, the flagged images and the plots.", ""]
    for name, s in summary["sets"].items():
        flagged = ", ".join(f"{a} {n}" for a, n in s["flagged"].items() if n) or "none"
        lines += [f"### {name}", "", f"`{s['source']}`, {s['pairs']} pairs, profile `{s['profile']}`; flagged images: "
                  f"{flagged}; [full report]({s['report']})", "", markdown_table(set_quality_rows(summary, name)), ""]
        if s["grid"]:
            lines += [f"![{name}: fused images]({s['grid']})", ""]
    lines += [f"## Against {baseline}, across the sets", "",
              "Per set the difference of means (approach − baseline) and the Wilcoxon p-value of that set's report, "
              f"with Holm's correction over every (set, metric) test of the approach; better or worse needs Holm p < "
              f"{alpha} and the set's interval to exclude zero. The last column says on which sets each verdict holds: "
              "an approach that differs on one set and not on another is the finding.", ""]
    if summary["single_run"]:
        lines += [f"> **Note:** {SINGLE_RUN_NOTE}.", ""]
    for approach in summary["comparison"]:
        lines += [f"### {approach} ({summary['tests_corrected'][approach]} tests)", "",
                  markdown_table(set_verdict_rows(summary, approach)), ""]
    write_text(out / "report.md", "\n".join(lines))
