"""Score fused images against their IR/VIS sources with the standard fusion metrics.

    python evaluate.py --fused DIR --ir DIR --vi DIR [--json OUT] [--csv OUT] [--metrics EN,SD,...]
    python evaluate.py --fused mean=DIR1 --fused max=DIR2 --ir DIR --vi DIR [--profile vifb]
    python evaluate.py ... --latex table.tex --table-csv table.csv

Pairs are matched by dataio.pairs.find_pairs; the fused image of a pair is the file in the fused
folder whose stem is the pair name, or else the IR or VIS file's own stem (any image extension).
Pairs without a fused image, unreadable or mis-sized images and unmatched files are listed on
stderr rather than skipped silently. Every pair a method could not be scored on (no, several,
unreadable or mis-sized fused images) and every file without its counterparts is recorded under
"missing" in the JSON and makes the exit code 2 once the results are written, unless
--allow-missing: a method's row never averages fewer images unnoticed. A VIS image of another size
than its IR image is scored at the IR image's size, as fuse.py fuses it. The table shows per-metric
mean and (population) standard deviation, one row per method, under the metric profile's name
(metrics/profiles.py). Fused images are scored at their true scale (8-bit as is, 16-bit / 257,
float 0..1 x 255, never stretched), sources read as fuse.py reads them (docs/images.md).
Every output is checked to be writable before scoring and written atomically.

Metrics reward noise and grids and punish flat images, so the table always ends with the pixel-mean
and pixel-max fusion rules computed on the same pairs (the rows a model must beat), and every fused
image is checked by evaluation/guards.py (collapsed contrast, a periodic pattern at the CAM's token period,
tile seams); flagged images are listed under the table and in the JSON ("flags").
"""
import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cli.entry import run_main
from dataio.datasets import to_ir_size
from dataio.images import Range, parse_range
from dataio.pairs import Pair, find_pairs
from dataio.toolbox_readers import read_as
from evaluation.folder_scores import rule_scores, score_folder
from evaluation.reports import csv_text, json_ready, latex_escape, latex_table, write_text
from metrics.profiles import PROFILES, SUITE, Profile, get_profile
from utils.atomic import check_output_file
from utils.errors import CrossFuseError
from utils.tables import format_table, number

RESERVED = ("profile", "missing", "reference_rules")
"""Top-level JSON keys, so not usable as method names."""


def format_flags(results: dict[str, dict]) -> str:
    """The flagged images per method, one line each: what metrics misjudge, to be looked at."""
    lines = [f"  [{method}] {name}: {'; '.join(raised)}" for method, r in results.items()
             for name, raised in r.get("flags", {}).items()]
    if not lines:
        return "guards: no fused image flagged (collapsed, periodic artefact, tile seams, blobs)"
    return "\n".join([f"guards: {len(lines)} fused image(s) flagged; look at them before trusting their scores:",
                       *lines])


def _metric_names(results: dict[str, dict]) -> list[str]:
    return list(next(iter(results.values()))["mean"]) if results else []


def results_table(results: dict[str, dict]) -> str:
    """One row of per-metric means per method, with a '±std' row under it; columns right-aligned."""
    metrics = _metric_names(results)
    rows = []
    for method, r in results.items():
        rows.append([method, str(len(r["per_image"])), *(number(r["mean"][m]) for m in metrics)])
        rows.append(["", "", *("±" + number(r["std"][m]) for m in metrics)])
    header = ["method", "n", *metrics]
    return format_table(header, rows, "<" + ">" * (len(header) - 1))


def caption(profile: Profile) -> str:
    """What the table holds and under which convention, for the LaTeX caption and the report."""
    return f"Fusion metrics, mean and standard deviation over images; metric profile {profile.name} ({profile.source})"


def format_latex(results: dict[str, dict], profile: Profile) -> str:
    """The printed table as a booktabs LaTeX table: mean $\\pm$ std per cell, profile in the caption."""
    metrics = _metric_names(results)
    rows = [["Method", "$n$", *map(latex_escape, metrics)],
            *([latex_escape(method), str(len(r["per_image"])),
               *(f"{number(r['mean'][m])} $\\pm$ {number(r['std'][m])}" for m in metrics)]
              for method, r in results.items())]
    return latex_table(rows, "l" + "r" * (len(metrics) + 1), caption(profile), f"tab:metrics-{profile.name}")


def table_csv_text(results: dict[str, dict], profile: Profile) -> str:
    """The printed table as CSV: profile, method, n, then each metric's mean and std columns."""
    metrics = _metric_names(results)
    return csv_text([["profile", "method", "n", *(f"{m} {stat}" for m in metrics for stat in ("mean", "std"))],
                     *([profile.name, method, len(r["per_image"]),
                        *(repr(r[stat][m]) for m in metrics for stat in ("mean", "std"))]
                       for method, r in results.items())])


def to_json(results: dict[str, dict], profile: Profile = SUITE, missing: Sequence[str] = (),
            rules: dict[str, dict] | None = None) -> dict:
    """The JSON document: {"profile", "missing", "reference_rules", "mean", "std", "per_image", "flags"} for
    one method; "profile", "missing", "reference_rules" and one such entry per method for several.

    Non-finite values (inf PSNR of exact copies, its nan std) become null to keep the JSON standard.
    """
    def entry(r: dict) -> dict:
        return json_ready({k: r[k] for k in ("mean", "std", "per_image", "flags") if k in r})

    head = {"profile": profile.name, "missing": list(missing),
            "reference_rules": {rule: entry(r) for rule, r in (rules or {}).items()}}
    if len(results) == 1:
        return head | entry(next(iter(results.values())))
    return head | {method: entry(r) for method, r in results.items()}


def per_image_csv(results: dict[str, dict]) -> str:
    """One row per method and image: method, image, then each metric."""
    metrics = _metric_names(results)
    return csv_text([["method", "image", *metrics],
                     *([method, name, *(repr(scores[m]) for m in metrics)]
                       for method, r in results.items() for name, scores in r["per_image"].items())])


def parse_fused(specs: Sequence[str]) -> dict[str, Path]:
    """'NAME=DIR' or plain 'DIR' (named after the folder) -> {method name: folder}."""
    methods: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or Path(spec).is_dir():
            name, folder = Path(spec).name or spec, spec
        if name in methods:
            raise CrossFuseError(f"--fused {spec}: method name {name!r} given twice (use NAME=DIR)")
        if name in RESERVED:
            raise CrossFuseError(f"--fused {spec}: {name!r} is reserved in the JSON output (use NAME=DIR)")
        methods[name] = Path(folder)
    return methods


def parse_metrics(text: str | None, profile: Profile = SUITE) -> list[str]:
    """Comma-separated names of the profile's metrics (case-insensitive), all when not given."""
    if not text:
        return list(profile.metrics)
    by_lower = {name.lower(): name for name in profile.metrics}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise CrossFuseError(
            f"--metrics {text}: unknown metric(s) {', '.join(unknown)} in profile {profile.name}; "
            f"choose from {', '.join(profile.metrics)}"
        )
    return [by_lower[n.lower()] for n in names]


def readable(pairs: Sequence[Pair], profile: Profile,
             ir_range: Range | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, IR, VIS at the IR image's size) of every pair the profile can read; the others are the methods'
    problems."""
    for pair in pairs:
        try:
            ir, vi = read_as(profile.reader, pair.ir, "ir", ir_range), read_as(profile.reader, pair.vi)
        except CrossFuseError:
            continue
        yield pair.name, ir, to_ir_size(ir, vi)


def run(args: argparse.Namespace) -> int:
    """Score all methods, list the problems on stderr, print the table and write the outputs.

    Returns the exit code: 2 when pairs are missing (unless --allow-missing), else 0.
    """
    profile = get_profile(args.profile)
    methods = parse_fused(args.fused)
    metrics = parse_metrics(args.metrics, profile)
    ir_range = parse_range(args.ir_range)
    outputs = [Path(p) for p in (args.json, args.csv, args.latex, args.table_csv) if p]
    for path in outputs:
        check_output_file(path)
    scan = find_pairs(Path(args.ir), Path(args.vi))
    results = {name: score_folder(folder, scan.pairs, metrics, name, profile, ir_range)
               for name, folder in methods.items()}

    problems = [f"{path}: no IR/VIS partner" for path in scan.unpaired]
    missing = [str(path) for path in scan.unpaired]
    for name, r in results.items():
        problems += [f"[{name}] {line}" for line in r["problems"]]
        missing += [f"[{name}] {item}" for item in r["missing"]]
    resized = max((r["resized"] for r in results.values()), default=0)
    if resized:
        print(f"note: {resized} pairs differ in size; they are scored with the VIS image resized to the IR image's "
              "size, as fuse.py fuses them", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in problems), file=sys.stderr)
    if not any(r["per_image"] for r in results.values()):
        folders = ", ".join(map(str, methods.values()))
        raise CrossFuseError(f"{folders}: nothing could be scored (see the problems listed above)")

    rules = rule_scores(readable(scan.pairs, profile, ir_range), metrics, profile)
    table = results | {f"rule: {rule}": r for rule, r in rules.items()}
    print(f"metric profile: {profile.name} ({profile.source})")
    print(results_table(table))
    print(format_flags(results))
    if args.json:
        write_text(Path(args.json), json.dumps(to_json(results, profile, missing, rules), indent=2) + "\n")
    if args.csv:
        write_text(Path(args.csv), per_image_csv(results))
    if args.latex:
        write_text(Path(args.latex), format_latex(table, profile))
    if args.table_csv:
        write_text(Path(args.table_csv), table_csv_text(table, profile))
    if missing and not args.allow_missing:
        print(f"error: {len(missing)} missing pair(s) (listed above); results written, "
              "--allow-missing to accept", file=sys.stderr)
        return 2
    return 0


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fused", action="append", required=True, metavar="[NAME=]DIR",
                        help="folder of fused images; repeat as NAME=DIR to compare methods")
    parser.add_argument("--ir", required=True, help="folder of infrared source images")
    parser.add_argument("--vi", required=True, help="folder of visible source images")
    parser.add_argument("--profile", default=SUITE.name, help="metric definitions and names: "
                        f"this suite's or a toolbox's, one of {', '.join(PROFILES)} (default: suite)")
    parser.add_argument("--json", help="write profile, missing pairs, mean, std and per-image scores here "
                        "(keyed by method when several; non-finite values as null)")
    parser.add_argument("--csv", help="write one row per method and image here")
    parser.add_argument("--latex", help="write the printed table here as a booktabs LaTeX table")
    parser.add_argument("--table-csv", help="write the printed table here as CSV (with the profile)")
    parser.add_argument("--metrics", help="comma-separated subset of the profile's metrics (default: all)")
    parser.add_argument("--ir-range", default="", metavar="LOW,HIGH",
                        help="read a 16-bit/float IR image's LOW..HIGH as 0..255, as fuse.py --ir-range did")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when fused images or sources are missing")
    return run(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
