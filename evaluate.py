"""Score fused images against their IR/VIS sources with the standard fusion metrics.

    python evaluate.py --fused DIR --ir DIR --vi DIR [--json OUT] [--csv OUT] [--metrics EN,SD,...]
    python evaluate.py --fused mean=DIR1 --fused max=DIR2 --ir DIR --vi DIR [--profile vifb]
    python evaluate.py ... --latex table.tex --table-csv table.csv

Pairs are matched by dataio.pairs.find_pairs; the fused image of a pair is the file in the fused
folder whose stem is the pair name, or else the IR or VIS file's own stem (any image extension).
Pairs without a fused image, unreadable or mis-sized images and unmatched files are listed on
stderr rather than skipped silently. Missing pairs (a fused image, IR or VIS file without its
counterparts) are also recorded under "missing" in the JSON and make the exit code 2 once the
results are written, unless --allow-missing. The table shows per-metric mean and (population)
standard deviation, one row per method, under the metric profile's name (evaluation/metric_profiles.py).
Every output is checked to be writable before scoring and written atomically.

Metrics reward noise and grids and punish flat images, so the table always ends with the pixel-mean
and pixel-max fusion rules computed on the same pairs (the rows a model must beat), and every fused
image is checked by evaluation/guards.py (collapsed contrast, a periodic pattern at the CAM's token period,
tile seams); flagged images are listed under the table and in the JSON ("flags").
"""
import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cli.entry import run_main
from dataio.images import is_image_file, read_gray
from dataio.pairs import Pair, find_pairs
from evaluation.guards import image_flags, reference_fusions
from evaluation.metric_profiles import PROFILES, SUITE, Profile, get_profile, score
from utils.atomic import atomic_write, check_output_file
from utils.errors import CrossFuseError
from utils.tables import format_table

RESERVED = ("profile", "missing", "reference_rules")
"""Top-level JSON keys, so not usable as method names."""


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


def summarize(per_image: dict[str, dict[str, float]], metrics: Sequence[str]) -> tuple[dict, dict]:
    """Per-metric mean and population std over images; inf (PSNR of exact copies) gives std nan."""
    mean, std = {}, {}
    for name in metrics:
        values = np.array([scores[name] for scores in per_image.values()])
        with np.errstate(invalid="ignore"):
            mean[name] = float(np.mean(values)) if values.size else math.nan
            std[name] = float(np.std(values)) if values.size else math.nan
    return mean, std


def evaluate_folder(
    fused_dir: Path,
    pairs: Sequence[Pair],
    metrics: Sequence[str] | None = None,
    desc: str | None = None,
    profile: Profile = SUITE,
) -> dict:
    """Score every pair's fused image in `fused_dir` with the profile's reader and metrics.

    Returns {"mean": {metric: v}, "std": {...}, "per_image": {pair name: {metric: v}},
    "problems": [one line per pair that could not be scored, or fused file matching no pair],
    "missing": [pair names without a fused image, then fused files matching no pair],
    "flags": {pair name: [the guards' raised flags, as text]} for the images any guard flags}.
    """
    metrics = list(profile.metrics) if metrics is None else list(metrics)
    index = index_fused(fused_dir)
    per_image: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    missing: list[str] = []
    used: set[Path] = set()
    flags: dict[str, list[str]] = {}
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
            continue
        try:
            f, a, b = (profile.read(path) for path in (candidates[0], pair.ir, pair.vi))
            per_image[pair.name] = score(profile, f, a, b, metrics, label=str(candidates[0]))
            raised = image_flags(*(read_gray(path) for path in (candidates[0], pair.ir, pair.vi)))
        except CrossFuseError as err:
            problems.append(str(err))
            continue
        if raised:
            flags[pair.name] = [str(flag) for flag in raised]
    unused = [path for group in index.values() for path in group if path not in used]
    problems += [f"{path}: fused image matches no IR/VIS pair" for path in unused]
    missing += [str(path) for path in unused]
    mean, std = summarize(per_image, metrics)
    return {"mean": mean, "std": std, "per_image": per_image, "problems": problems, "missing": missing,
            "flags": flags}


def evaluate_rules(pairs: Sequence[Pair], metrics: Sequence[str], profile: Profile = SUITE) -> dict[str, dict]:
    """The pixel-mean and pixel-max fusion rules scored on the same pairs: the rows any model must beat.

    The rules fuse the sources as the profile reads them (its grey levels), so they are scored under
    the same convention as the methods; pairs that cannot be read are left to the methods' problems.
    """
    per_rule: dict[str, dict[str, dict[str, float]]] = {}
    for pair in tqdm(pairs, desc="pixel-mean/max rules", unit="img", file=sys.stderr):
        try:
            a, b = profile.read(pair.ir), profile.read(pair.vi)
            for rule, fused in reference_fusions(a, b).items():
                scores = score(profile, fused.astype(a.dtype), a, b, metrics, label=f"{rule} of {pair.name}")
                per_rule.setdefault(rule, {})[pair.name] = scores
        except CrossFuseError:
            continue
    return {rule: dict(zip(("mean", "std"), summarize(per_image, metrics), strict=True)) | {"per_image": per_image}
            for rule, per_image in per_rule.items()}


def format_flags(results: dict[str, dict]) -> str:
    """The flagged images per method, one line each: what metrics misjudge, to be looked at."""
    lines = [f"  [{method}] {name}: {'; '.join(raised)}" for method, r in results.items()
             for name, raised in r.get("flags", {}).items()]
    if not lines:
        return "guards: no fused image flagged (collapsed, periodic artefact, tile seams)"
    return "\n".join([f"guards: {len(lines)} fused image(s) flagged; look at them before trusting their scores:",
                       *lines])


def _number(value: float) -> str:
    return f"{value:#.4g}" if math.isfinite(value) else str(value)


def _metric_names(results: dict[str, dict]) -> list[str]:
    return list(next(iter(results.values()))["mean"]) if results else []


def results_table(results: dict[str, dict]) -> str:
    """One row of per-metric means per method, with a '±std' row under it; columns right-aligned."""
    metrics = _metric_names(results)
    rows = []
    for method, r in results.items():
        rows.append([method, str(len(r["per_image"])), *(_number(r["mean"][m]) for m in metrics)])
        rows.append(["", "", *("±" + _number(r["std"][m]) for m in metrics)])
    header = ["method", "n", *metrics]
    return format_table(header, rows, "<" + ">" * (len(header) - 1))


def caption(profile: Profile) -> str:
    """What the table holds and under which convention, for the LaTeX caption and the report."""
    return f"Fusion metrics, mean and standard deviation over images; metric profile {profile.name} ({profile.source})"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"\\": "\\textbackslash{}", "~": "\\textasciitilde{}",
                                                   "^": "\\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def format_latex(results: dict[str, dict], profile: Profile) -> str:
    """The printed table as a booktabs LaTeX table: mean $\\pm$ std per cell, profile in the caption."""
    metrics = _metric_names(results)
    lines = [
        "\\begin{table}",
        "\\centering",
        f"\\caption{{{_latex_escape(caption(profile))}}}",
        f"\\label{{tab:metrics-{profile.name}}}",
        "\\begin{tabular}{l" + "r" * (len(metrics) + 1) + "}",
        "\\toprule",
        " & ".join(["Method", "$n$", *map(_latex_escape, metrics)]) + " \\\\",
        "\\midrule",
    ]
    for method, r in results.items():
        cells = [f"{_number(r['mean'][m])} $\\pm$ {_number(r['std'][m])}" for m in metrics]
        lines.append(" & ".join([_latex_escape(method), str(len(r["per_image"])), *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def table_csv_text(results: dict[str, dict], profile: Profile) -> str:
    """The printed table as CSV: profile, method, n, then each metric's mean and std columns."""
    metrics = _metric_names(results)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["profile", "method", "n", *(f"{m} {stat}" for m in metrics for stat in ("mean", "std"))])
    for method, r in results.items():
        values = [repr(r[stat][m]) for m in metrics for stat in ("mean", "std")]
        writer.writerow([profile.name, method, len(r["per_image"]), *values])
    return out.getvalue()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_json(results: dict[str, dict], profile: Profile = SUITE, missing: Sequence[str] = (),
            rules: dict[str, dict] | None = None) -> dict:
    """The JSON document: {"profile", "missing", "reference_rules", "mean", "std", "per_image", "flags"} for
    one method; "profile", "missing", "reference_rules" and one such entry per method for several.

    Non-finite values (inf PSNR of exact copies, its nan std) become null to keep the JSON standard.
    """
    def clean(r: dict) -> dict:
        return {
            "mean": {m: _finite_or_none(v) for m, v in r["mean"].items()},
            "std": {m: _finite_or_none(v) for m, v in r["std"].items()},
            "per_image": {
                name: {m: _finite_or_none(v) for m, v in scores.items()}
                for name, scores in r["per_image"].items()
            },
        } | ({"flags": r["flags"]} if "flags" in r else {})

    head = {"profile": profile.name, "missing": list(missing),
            "reference_rules": {rule: clean(r) for rule, r in (rules or {}).items()}}
    if len(results) == 1:
        return head | clean(next(iter(results.values())))
    return head | {method: clean(r) for method, r in results.items()}


def csv_text(results: dict[str, dict]) -> str:
    """One row per method and image: method, image, then each metric."""
    metrics = _metric_names(results)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["method", "image", *metrics])
    for method, r in results.items():
        for name, scores in r["per_image"].items():
            writer.writerow([method, name, *(repr(scores[m]) for m in metrics)])
    return out.getvalue()


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


def run(args: argparse.Namespace) -> int:
    """Score all methods, list the problems on stderr, print the table and write the outputs.

    Returns the exit code: 2 when pairs are missing (unless --allow-missing), else 0.
    """
    profile = get_profile(args.profile)
    methods = parse_fused(args.fused)
    metrics = parse_metrics(args.metrics, profile)
    outputs = [Path(p) for p in (args.json, args.csv, args.latex, args.table_csv) if p]
    for path in outputs:
        check_output_file(path)
    scan = find_pairs(Path(args.ir), Path(args.vi))
    results = {
        name: evaluate_folder(folder, scan.pairs, metrics, name, profile) for name, folder in methods.items()
    }

    problems = [f"{path}: no IR/VIS partner" for path in scan.unpaired]
    missing = [str(path) for path in scan.unpaired]
    for name, r in results.items():
        problems += [f"[{name}] {line}" for line in r["problems"]]
        missing += [f"[{name}] {item}" for item in r["missing"]]
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in problems), file=sys.stderr)
    if not any(r["per_image"] for r in results.values()):
        folders = ", ".join(map(str, methods.values()))
        raise CrossFuseError(f"{folders}: nothing could be scored (see the problems listed above)")

    rules = evaluate_rules(scan.pairs, metrics, profile)
    table = results | {f"rule: {rule}": r for rule, r in rules.items()}
    print(f"metric profile: {profile.name} ({profile.source})")
    print(results_table(table))
    print(format_flags(results))
    if args.json:
        document = to_json(results, profile, missing, rules)
        atomic_write(Path(args.json), lambda temp: temp.write_text(json.dumps(document, indent=2) + "\n"))
    if args.csv:
        atomic_write(Path(args.csv), lambda temp: temp.write_text(csv_text(results)))
    if args.latex:
        atomic_write(Path(args.latex), lambda temp: temp.write_text(format_latex(table, profile)))
    if args.table_csv:
        atomic_write(Path(args.table_csv), lambda temp: temp.write_text(table_csv_text(table, profile)))
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
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when fused images or sources are missing")
    return run(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
