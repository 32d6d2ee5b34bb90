"""The comparison of training approaches (compare_training_approaches.py, and study.py after training):
load every run, fuse and score its checkpoint on the test set, test each approach against the baseline,
analyse, plot and write the report folder (docs/comparison.md).
"""
import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from args_end_to_end import EndToEnd
from args_two_stage import Stage2
from dataio.images import parse_range
from dataio.pairs import Pair, find_pairs, span_text, split_span, take_span
from evaluation import analysis, comparison_report, guards, report_plots, stats
from evaluation.folder_scores import Scores, rule_scores, usable_metrics
from evaluation.reports import json_ready, write_text
from evaluation.runs import Run, reference_run, runs_in, study_arms
from evaluation.scoring import Scorer, approach_scores
from inference.files import fuse_gray, read_pair
from metrics import profiles
from metrics.profiles import SUITE, higher_is_better
from training.stages import END_TO_END, END_TO_END_ARM, STAGE2, TWO_STAGE_ARM
from utils.atomic import check_writable
from utils.device import amp_note, native_bf16, pick_device
from utils.errors import CrossFuseError

GRID_PAIRS = 4


def approach_paths(args: argparse.Namespace) -> dict[str, Path]:
    if args.study:
        return study_arms(args.study)
    if args.run:
        return dict(args.run)
    return {TWO_STAGE_ARM: args.two_stage or STAGE2.dir(args.root),
            END_TO_END_ARM: args.end_to_end or END_TO_END.dir(args.root)}


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
        runs["reference"] = [reference_run(args.reference)]
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
        configured = [r.log.config.get("test_dir") for r in runs if r.log] + [EndToEnd.test_dir, Stage2.test_dir]
        test = args.test or next((Path(t) for t in configured if t), None)
        if test is None:
            raise CrossFuseError("no test set configured: pass --test DIR (a folder with ir/ and vi/ subfolders, "
                                 "e.g. TNO) or --test-ir DIR --test-vi DIR")
        scan, source = find_pairs(test), str(test)
    for path in scan.unpaired:
        print(f"warning: no partner for {path}", file=sys.stderr)
    pairs = take_span(scan.pairs, args.test_span, source)
    source += span_text(args.test_span)
    return pairs[: args.max_images] if args.max_images else pairs, source


@dataclass
class Scored:
    """Every run's per-image scores on the test set, and what the guards flagged, by approach."""

    per_run: dict[tuple[str, str], Scores] = field(default_factory=dict)  # (approach, run label) -> scores
    fused: dict[str, list[np.ndarray]] = field(default_factory=dict)  # the grid's images of each approach
    first_images: dict[str, list[np.ndarray]] = field(default_factory=dict)  # all images of its first run
    flags: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # approach -> image -> "run: what"
    thumbs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # a flagged fused image of each


def score_runs(runs: dict[str, list[Run]], scorer: Scorer, names: list[str],
               sources: list[tuple[np.ndarray, np.ndarray]]) -> Scored:
    """Fuse and score every run's chosen checkpoint, flagging the images the guards raise on."""
    scored = Scored(flags={a: {} for a in runs}, thumbs={a: {} for a in runs})
    all_runs = [r for group in runs.values() for r in group]
    for run in tqdm(all_runs, desc="scoring runs", unit="run", file=sys.stderr, disable=len(all_runs) < 2):
        scored.per_run[run.approach, run.label], images = scorer.scores(run, run.epoch, images=True)
        scored.fused.setdefault(run.approach, images[:GRID_PAIRS])
        scored.first_images.setdefault(run.approach, images)
        for name, image, (ir, vi) in zip(names, images, sources, strict=True):
            if raised := guards.image_flags(image, ir, vi, run.config):
                scored.flags[run.approach].setdefault(name, []).append(f"{run.label}: " + "; ".join(map(str, raised)))
                scored.thumbs[run.approach].setdefault(name, image)
    return scored


def flag_input_dependence(first: dict[str, torch.nn.Module], runs: dict[str, list[Run]], names: list[str],
                          sources: list[tuple[np.ndarray, np.ndarray]], scored: Scored, device: torch.device) -> None:
    """Does each model's output follow its input? Checked on the first run of each approach."""
    for a, model in first.items():
        checked = guards.input_dependence(lambda ir, vi, m=model: fuse_gray(m, ir, vi, device),
                                          sources, scored.first_images[a])
        for k, (name, flag) in enumerate(zip(names, checked, strict=False)):
            if flag.flagged:
                scored.flags[a].setdefault(name, []).append(f"{runs[a][0].label}: {flag}")
                scored.thumbs[a].setdefault(name, scored.first_images[a][k])


def run_entry(run: Run) -> dict[str, Any]:
    """A run as the report lists it: where its files are and what it was built with."""
    return {"label": run.label, "folder": str(run.folder), "checkpoint": str(run.checkpoint),
            "epoch": run.epoch, "loss_file": str(run.log.path) if run.log else None,
            "model_config": run.config.to_dict(),
            "stage1_loss_files": {m: str(log.path) for m, log in run.stage1.items()}}


@contextlib.contextmanager
def report_errors(out: Path) -> Iterator[None]:
    """A failure while writing the report folder as one line naming it."""
    try:
        yield
    except (OSError, CrossFuseError) as e:
        raise CrossFuseError(f"{out}: cannot write the report ({getattr(e, 'strerror', None) or e})") from None


def compare(args: argparse.Namespace) -> dict:
    """Everything: load, fuse, score, test, analyse, plot; writes the report and returns its numbers."""
    out, baseline = args.out, args.baseline
    check_writable(out, "report folder")
    device = pick_device(args.device)
    runs = load_runs(args)
    trained = {a: group for a, group in runs.items() if group[0].log is not None}
    pairs, source = find_test_pairs(args, [r for group in runs.values() for r in group])
    sources = [read_pair(p, ir_range=parse_range(args.ir_range)) for p in pairs]
    profile = profiles.get_profile(args.profile)
    metrics, skipped = usable_metrics(sources, profile)
    amp = args.amp and native_bf16(device)
    if note := amp_note(device, args.amp):
        print(note, file=sys.stderr)
    scorer = Scorer(pairs, sources, metrics, device, profile, amp)
    names = [p.name for p in pairs]
    scored = score_runs(runs, scorer, names, sources)
    per_run, fused, flags, thumbs = scored.per_run, scored.fused, scored.flags, scored.thumbs
    count = min(args.curve_images, len(pairs))
    first = {a: group[0].load().to(device) for a, group in runs.items()}
    if len(pairs) >= 2:
        flag_input_dependence(first, runs, names, sources[: max(2, count)], scored, device)
    summaries = {a: approach_scores([per_run[a, r.label] for r in group], names, metrics) for a, group in runs.items()}
    directions = {m: higher_is_better(m) for m in metrics}
    comparison = {a: analysis.mark_flag_driven(
        stats.compare_metrics(summaries[baseline]["arrays"], summaries[a]["arrays"], args.alpha, directions,
                              args.bootstrap), summaries[baseline]["arrays"], summaries[a]["arrays"], names,
        {"base": set(flags[baseline]), "new": set(flags[a])}, args.alpha, args.bootstrap)
        for a in runs if a != baseline}
    rules = rule_scores(((n, ir, vi) for n, (ir, vi) in zip(names, sources, strict=True)), metrics, profile)
    curves = {a: [analysis.quality_curve(r, scorer, count, args.curve_points, per_run[a, r.label]) for r in tqdm(
        group, desc=f"quality curve ({a})", unit="run", file=sys.stderr, disable=None)]
              for a, group in trained.items()} if args.curve_images else {}
    cka_sources = sources[: max(1, count)]
    cka = {a: analysis.encoder_cka(first[baseline], model, cka_sources, device) for a, model in first.items()
           if a != baseline}
    costs = {a: [analysis.training_cost(r) for r in group] for a, group in trained.items()}
    single = all(len(group) == 1 for group in runs.values())
    floor = len(metrics) * stats.smallest_p(len(pairs))
    power = [f"with {len(pairs)} test pairs and {len(metrics)} metrics no difference can be significant after "
             f"Holm's correction (the smallest possible adjusted p is {floor:.2g}); use more test pairs"
             ] if floor >= args.alpha and len(runs) > 1 else []
    with report_errors(out):
        plots = report_plots.plot_losses({a: [r.log for r in group] for a, group in trained.items()}, out)
        plots["cost"] = report_plots.plot_cost(costs, out)
        plots["grid"] = report_plots.plot_grid(names[:GRID_PAIRS], sources[:GRID_PAIRS], fused, baseline, out)
        plots["features"] = report_plots.plot_features(analysis.feature_rows(first, sources[0], device), out)
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
            "warnings": analysis.run_warnings(runs, baseline) + power
            + ([comparison_report.SINGLE_RUN_NOTE] if single else []),
            "runs": {a: [run_entry(r) for r in group] for a, group in runs.items()},
            "test": {"source": source, "pairs": len(pairs), "names": names, "profile": profile.name,
                     "precision": "bf16" if amp else "fp32",
                     "profile_source": profile.source, "metrics": metrics, "skipped_metrics": skipped},
            "scores": {a: {k: v for k, v in s.items() if k != "arrays"} for a, s in summaries.items()},
            "reference_rules": rules, "flags": flags, "training_differences": analysis.training_differences(trained),
            "per_image": {a: {r.label: per_run[a, r.label] for r in group} for a, group in runs.items()},
            "comparison": comparison,
            "verdicts": {a: {v: sum(r["verdict"] == v for r in c.values()) for v in stats.VERDICTS}
                         for a, c in comparison.items()},
            "curve_images": count, "curve_points": args.curve_points, "curves": curves,
            "compute_to_reach": analysis.compute_to_reach(curves, baseline, metrics) if baseline in curves else {},
            "cka": cka, "loss": {a: {r.label: analysis.loss_summary(r.log) for r in group}
                                 for a, group in trained.items()},
            "training_cost": costs, "plots": plots,
        }
        write_text(out / "report.json", json.dumps(json_ready(report), indent=2) + "\n")
        comparison_report.write_tables(report, out)
        comparison_report.write_markdown(report, out)
    return report


def compare_sets(args: argparse.Namespace) -> dict:
    """One test set: compare(). Several: a whole comparison per set in OUT/NAME/ (the quality-against-time
    curve on the first set only: it scores saved epochs, the costliest part), then the summary across the
    sets in OUT/ (report.md, report.json), with Holm's correction over every (set, metric) test."""
    if len(args.tests) < 2:
        return compare(args)
    check_writable(args.out, "report folder")
    reports = {}
    for k, (name, folder, span) in enumerate(args.tests):
        print(f"test set {name} ({folder}): comparing", file=sys.stderr, flush=True)
        reports[name] = compare(argparse.Namespace(**{**vars(args), "test": folder, "test_span": span,
                                                      "tests": [(name, folder, span)],
                                                      "out": args.out / name,
                                                      "curve_images": args.curve_images if k == 0 else 0}))
    summary = analysis.across_sets(reports, args.alpha)
    with report_errors(args.out):
        write_text(args.out / "report.json", json.dumps(json_ready(summary), indent=2) + "\n")
        comparison_report.write_sets_markdown(summary, args.out)
    return summary


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR")
    return name, Path(path)


def _test_set(text: str) -> tuple[str, Path, slice]:
    """--test [NAME=]DIR[[START:END]]: a test folder, the name its report goes under (default: the folder's) and
    which of its pairs, in the folder's order (e.g. roadscene[200:]: the pairs a train_num = 200 run never saw)."""
    text, span = split_span(text)
    name, sep, path = text.partition("=")
    if sep and name and path and "/" not in name:
        return name, Path(path), span
    return Path(text).resolve().name, Path(text), span


def _epoch(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected APPROACH=N")
    return name, int(value)


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The comparison's options; `description` is the calling script's usage text for --help."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(EndToEnd.out_root)
    parser.add_argument("--study", type=Path, help="a study.py folder: every ARM/seed_K run in it")
    parser.add_argument("--run", type=_named, action="append", metavar="NAME=DIR",
                        help="an approach and its run folder (or a folder of seed_K runs); repeatable")
    parser.add_argument("--baseline", default=TWO_STAGE_ARM,
                        help=f"approach the others are tested against ({TWO_STAGE_ARM})")
    parser.add_argument("--root", type=Path, default=root, help=f"training output root (default {root})")
    parser.add_argument("--demo", action="store_true", help="the demo runs: --root models/demo --test data/demo/test")
    parser.add_argument("--two-stage", type=Path, help="two-stage run folder (default ROOT/transfuse)")
    parser.add_argument("--end-to-end", type=Path, help="end-to-end run folder (default ROOT/end_to_end)")
    parser.add_argument("--epoch", type=_epoch, action="append", default=[], metavar="APPROACH=N",
                        help="checkpoint epoch of an approach's runs (default: the last); repeatable")
    parser.add_argument("--epoch-two-stage", type=int, help="same as --epoch two-stage=N")
    parser.add_argument("--epoch-end-to-end", type=int, help="same as --epoch end-to-end=N")
    parser.add_argument("--test", type=_test_set, action="append", default=[], metavar="[NAME=]DIR",
                        help="test folder with ir/ and vi/ pairs (default: the configured one); DIR[START:END] takes "
                             "those pairs of it in order; repeatable: one report per set in OUT/NAME/ and a summary "
                             "across the sets in OUT/")
    parser.add_argument("--test-ir", type=Path, help="test IR folder (with --test-vi)")
    parser.add_argument("--test-vi", type=Path, help="test VIS folder (with --test-ir)")
    parser.add_argument("--reference", type=Path, help="folder of the paper's released checkpoints: one more column")
    parser.add_argument("--out", type=Path, help="report folder (default STUDY/report, reports/compare, reports/demo)")
    parser.add_argument("--ir-range", default="", metavar="LOW,HIGH",
                        help="read a 16-bit/float test IR image's LOW..HIGH as 0..255 (docs/images.md)")
    parser.add_argument("--max-images", type=int, help="use only the first N test pairs (default: all)")
    parser.add_argument("--curve-images", type=int, default=4,
                        help="test pairs scored at saved epochs for quality against compute (default 4; 0 = off)")
    parser.add_argument("--curve-points", type=int, default=3,
                        help="saved epochs per run on that curve, spread evenly, the last included (default 3)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="fuse in bf16 where the device has it natively (about 2x "
                        "on such a CPU; fidelity in docs/speed.md); the report says which precision fused")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--profile", default=SUITE.name, help="metric definitions and names: this suite's (default) or "
                        f"a toolbox's, one of {', '.join(profiles.PROFILES)} (see evaluate.py)")
    args = parser.parse_args(argv)
    profiles.get_profile(args.profile)
    if args.study and args.run:
        parser.error("give --study or --run, not both")
    args.tests = args.test
    if args.demo:
        args.root = Path("models/demo")
        if not (args.tests or args.test_ir or args.test_vi):
            args.tests = [("test", Path("data/demo/test"), slice(None))]
    names = [name for name, *_ in args.tests]
    if len(set(names)) < len(names):
        parser.error(f"--test: two test sets named alike ({', '.join(names)}); name them as --test NAME=DIR")
    if len(args.tests) > 1 and (args.test_ir or args.test_vi):
        parser.error("--test-ir/--test-vi give one test set; give several as --test NAME=DIR")
    args.test, args.test_span = args.tests[0][1:] if len(args.tests) == 1 else (None, slice(None))
    default_out = args.study / "report" if args.study else Path("reports/demo" if args.demo else "reports/compare")
    args.out = args.out or default_out
    args.epoch = dict(args.epoch)
    for name, value in ((TWO_STAGE_ARM, args.epoch_two_stage), (END_TO_END_ARM, args.epoch_end_to_end)):
        if value is not None:
            args.epoch[name] = value
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1")
    if args.curve_images < 0 or args.curve_points < 1 or args.bootstrap < 100:
        parser.error("--curve-images must be >= 0, --curve-points >= 1 and --bootstrap >= 100")
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be between 0 and 1")
    return args


def cli(argv: list[str], description: str | None = None) -> int:
    """Compare as the command line asks, print the report's summary: the exit code."""
    args = parse_args(argv, description)
    report = compare_sets(args)
    print(comparison_report.sets_summary(report, args.out) if "sets" in report
          else comparison_report.summary(report, args.out))
    return 0
