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
across metrics, and a verdict. Saved epochs are also scored on the first --curve-images pairs to plot
quality against training time (stage 1 included for the approaches that use it). The report folder
holds report.md, report.json, table.tex, table.csv and the PNG figures (docs/comparison.md).
"""
import sys

from cli.entry import run_main
from evaluation.comparison import cli


def main(argv: list[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(lambda args: cli(args, __doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
