"""Score fused images against their IR/VIS sources with the standard fusion metrics.

    python evaluate.py --fused DIR --ir DIR --vi DIR [--json OUT] [--csv OUT] [--metrics EN,SD,...]
    python evaluate.py --fused mean=DIR1 --fused max=DIR2 --ir DIR --vi DIR

Pairs are matched by utils.pairs.find_pairs; the fused image of a pair is the file in the fused
folder whose stem is the pair name, or else the IR or VIS file's own stem (any image extension).
Pairs without a fused image, unreadable or mis-sized images and unmatched files are listed on
stderr rather than skipped silently. The table shows per-metric mean and (population) standard
deviation, one row per method.
"""
import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.errors import CrossFuseError
from utils.images import is_image_file, read_gray
from utils.metrics import METRICS, score_pair
from utils.pairs import Pair, find_pairs


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
    fused_dir: Path, pairs: Sequence[Pair], metrics: Sequence[str] | None = None, desc: str | None = None
) -> dict:
    """Score every pair's fused image in `fused_dir`.

    Returns {"mean": {metric: v}, "std": {...}, "per_image": {pair name: {metric: v}},
    "problems": [one line per pair that could not be scored, or fused file matching no pair]}.
    """
    metrics = list(METRICS) if metrics is None else list(metrics)
    index = index_fused(fused_dir)
    per_image: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    used: set[Path] = set()
    for pair in tqdm(pairs, desc=desc or Path(fused_dir).name, unit="img", file=sys.stderr):
        candidates = fused_for(pair, index)
        used.update(candidates)
        if not candidates:
            stems = ", ".join(fused_stems(pair))
            problems.append(f"{pair.name}: no fused image in {fused_dir} (looked for stems {stems})")
            continue
        if len(candidates) > 1:
            names = ", ".join(map(str, candidates))
            problems.append(f"{pair.name}: several fused images share its stem ({names})")
            continue
        try:
            f, a, b = read_gray(candidates[0]), read_gray(pair.ir), read_gray(pair.vi)
            per_image[pair.name] = score_pair(f, a, b, metrics, label=str(candidates[0]))
        except CrossFuseError as err:
            problems.append(str(err))
    unused = [path for group in index.values() for path in group if path not in used]
    problems += [f"{path}: fused image matches no IR/VIS pair" for path in unused]
    mean, std = summarize(per_image, metrics)
    return {"mean": mean, "std": std, "per_image": per_image, "problems": problems}


def _number(value: float) -> str:
    return f"{value:#.4g}" if math.isfinite(value) else str(value)


def format_table(results: dict[str, dict]) -> str:
    """One row of per-metric means per method, with a '±std' row under it; columns right-aligned."""
    metrics = list(next(iter(results.values()))["mean"]) if results else []
    rows = [["method", "n", *metrics]]
    for method, r in results.items():
        rows.append([method, str(len(r["per_image"])), *(_number(r["mean"][m]) for m in metrics)])
        rows.append(["", "", *("±" + _number(r["std"][m]) for m in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_json(results: dict[str, dict]) -> dict:
    """The JSON document: {"mean", "std", "per_image"} for one method, keyed by method for several.

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
        }

    if len(results) == 1:
        return clean(next(iter(results.values())))
    return {method: clean(r) for method, r in results.items()}


def write_csv(path: Path, results: dict[str, dict]) -> None:
    """One row per method and image: method, image, then each metric."""
    metrics = list(next(iter(results.values()))["mean"])
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["method", "image", *metrics])
        for method, r in results.items():
            for name, scores in r["per_image"].items():
                writer.writerow([method, name, *(repr(scores[m]) for m in metrics)])


def parse_fused(specs: Sequence[str]) -> dict[str, Path]:
    """'NAME=DIR' or plain 'DIR' (named after the folder) -> {method name: folder}."""
    methods: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or Path(spec).is_dir():
            name, folder = Path(spec).name or spec, spec
        if name in methods:
            raise CrossFuseError(f"--fused {spec}: method name {name!r} given twice (use NAME=DIR)")
        methods[name] = Path(folder)
    return methods


def parse_metrics(text: str | None) -> list[str]:
    """Comma-separated metric names (case-insensitive), all metrics when not given."""
    if not text:
        return list(METRICS)
    by_lower = {name.lower(): name for name in METRICS}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise CrossFuseError(
            f"--metrics {text}: unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}"
        )
    return [by_lower[n.lower()] for n in names]


def _write(path: Path, what: str, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as err:
        raise CrossFuseError(f"{path}: cannot write {what} ({err.strerror or err})") from err


def run(args: argparse.Namespace) -> None:
    """Score all methods, list the problems on stderr, print the table and write the outputs."""
    methods = parse_fused(args.fused)
    metrics = parse_metrics(args.metrics)
    scan = find_pairs(Path(args.ir), Path(args.vi))
    results = {name: evaluate_folder(folder, scan.pairs, metrics, name) for name, folder in methods.items()}

    problems = [f"{path}: no IR/VIS partner" for path in scan.unpaired]
    for name, r in results.items():
        problems += [f"[{name}] {line}" for line in r["problems"]]
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in problems), file=sys.stderr)
    if not any(r["per_image"] for r in results.values()):
        folders = ", ".join(map(str, methods.values()))
        raise CrossFuseError(f"{folders}: nothing could be scored (see the problems listed above)")

    print(format_table(results))
    if args.json:
        document = to_json(results)
        _write(Path(args.json), "JSON", lambda p: p.write_text(json.dumps(document, indent=2) + "\n"))
    if args.csv:
        _write(Path(args.csv), "CSV", lambda p: write_csv(p, results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fused", action="append", required=True, metavar="[NAME=]DIR",
                        help="folder of fused images; repeat as NAME=DIR to compare methods")
    parser.add_argument("--ir", required=True, help="folder of infrared source images")
    parser.add_argument("--vi", required=True, help="folder of visible source images")
    parser.add_argument("--json", help="write mean, std and per-image scores here (keyed by method when "
                        "several; non-finite values as null)")
    parser.add_argument("--csv", help="write one row per method and image here")
    parser.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except CrossFuseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
