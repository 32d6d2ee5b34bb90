"""One command runs a whole experiment: every training approach (arm) x seed, then the comparison.

    python study.py --arms two-stage,end-to-end,warm-start --seeds 0,1,2 --test data/tno --epochs=4
    python study.py --demo                    # 3 arms x 2 seeds on synthetic data, narrow model, minutes on a CPU
    python study.py ... --dry-run             # what would be trained, and how
    python study.py ... --only warm-start:1   # one run (and the stage-1 run it needs), no comparison
    python study.py ... --gpus 0,1,2,3        # independent runs concurrently, one per GPU
    python study.py ... --nproc 4             # each run with torchrun (DDP) on 4 processes
    python study.py ... --slurm               # write a Slurm job array (one task per run) + a comparison job

`--key=value` settings apply to every arm whose args file has that key (args_two_stage.py,
args_end_to_end.py hold the arm-specific values). Run (ARM, K) lives in runs/NAME/ARM/seed_K/ with
the training scripts' usual files inside; two-stage and warm-start of one seed start from the same
stage-1 run, runs/NAME/stage-1/seed_K/, trained once. Re-running the same command skips finished
runs and resumes interrupted ones from their training state, so a study killed at any moment
continues where it stopped. Relative paths are taken from the folder the command is given in. The
report lands in runs/NAME/report/.
"""
import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import torch

from cli.entry import run_main
from dataio.demo_data import make_demo_dataset
from evaluation import comparison
from formats.run_layout import STUDY_REPORT
from metrics.profiles import get_profile
from studies.plan import check_overrides, plan, select
from studies.scheduler import train_all, train_locked
from studies.slurm import write_slurm
from training.presets import STUDY_DEMO_DATA
from training.stages import ARMS, TWO_STAGE_ARM
from utils.atomic import check_writable
from utils.errors import CrossFuseError
from utils.tables import duration

DEMO_TEST_PAIRS, DEMO_SIZE = 12, 64  # 12 test pairs: enough for Holm across the metrics


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)} (all)")
    parser.add_argument("--seeds", help="comma-separated seeds, each >= 0 (0,1,2; 0,1 with --demo)")
    parser.add_argument("--test", action="append", default=[], metavar="[NAME=]DIR",
                        help="test pairs (ir/ and vi/ inside) for the comparison; DIR[START:END] takes those pairs "
                             "of it; repeatable: a report per set and a summary across them")
    parser.add_argument("--name", help="study name: runs go to ROOT/NAME/ (default study; demo with --demo)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="folder of studies (default runs)")
    parser.add_argument("--demo", action="store_true", help="three arms x two seeds at demo scale on synthetic data")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands; train nothing")
    parser.add_argument("--only", metavar="ARM:SEED", help="train this run (and the stage-1 run it needs) only")
    parser.add_argument("--gpus", help="comma-separated GPU ids: independent runs concurrently, one per GPU")
    parser.add_argument("--nproc", type=int, default=1, help="processes per run with torchrun (DDP); default 1")
    parser.add_argument("--slurm", action="store_true", help="write a Slurm job array for the runs and stop")
    parser.add_argument("--no-compare", action="store_true", help="train only; no report")
    parser.add_argument("--curve-images", type=int, help="comparison: test pairs scored at saved epochs (4)")
    parser.add_argument("--compare-amp", action="store_true",
                        help="comparison: fuse in bf16 where the device has it natively (compare --amp)")
    parser.add_argument("--baseline", default=TWO_STAGE_ARM,
                        help=f"comparison: approach tested against ({TWO_STAGE_ARM})")
    parser.add_argument("--profile", default="suite", help="comparison: metric profile (suite, vifb, tang, crossfuse, "
                        "cddfuse; see evaluate.py)")
    args, overrides = parser.parse_known_args(argv)
    args.name = args.name or ("demo" if args.demo else "study")
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms: {', '.join(unknown) or 'none given'}; choose from {', '.join(ARMS)}")
    text = ("0,1" if args.demo else "0,1,2") if args.seeds is None else args.seeds
    try:
        args.seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--seeds {text!r}: comma-separated integers")
    if not args.seeds or min(args.seeds) < 0:
        parser.error(f"--seeds {text!r}: give at least one seed, each >= 0")
    if args.gpus and args.nproc > 1:
        parser.error("--gpus runs one run per GPU; --nproc runs each run on several: choose one")
    if args.nproc < 1:
        parser.error("--nproc must be at least 1")
    args.gpus = [g for g in (args.gpus or "").split(",") if g]
    if args.demo:
        args.test = args.test or [str(Path(STUDY_DEMO_DATA) / "test")]
    return args, overrides


def compare_argv(args: argparse.Namespace, study: Path) -> list[str]:
    argv = ["--study", str(study), "--baseline", args.baseline, "--profile", args.profile]
    for test in args.test:
        argv += ["--test", test]
    if args.curve_images is not None:
        argv += ["--curve-images", str(args.curve_images)]
    if args.compare_amp:
        argv += ["--amp"]
    return argv


def cli(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    study = args.root / args.name
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs `finally`: children stop with the study
    get_profile(args.profile)
    check_overrides(overrides)
    if args.demo:
        make_demo_dataset(Path(STUDY_DEMO_DATA), n_test=DEMO_TEST_PAIRS, size=DEMO_SIZE)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # demo-sized tensors gain nothing from a second thread
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # this process fuses for the comparison
    runs = plan(study, args.arms, args.seeds, overrides, args.demo)
    if args.baseline not in args.arms:
        raise CrossFuseError(f"--baseline {args.baseline}: not among --arms {','.join(args.arms)}")
    if args.slurm:
        print(f"wrote the Slurm scripts; submit with: bash {write_slurm(study, runs, argv, args.nproc, Path.cwd())}")
        return 0
    chosen = select(runs, args.only)
    if args.dry_run:
        for run in chosen:
            print(f"{run.name:<14} {run.status():<8} {shlex.join(run.command(args.nproc))}")
        print(f"{sum(not r.done() for r in chosen)} of {len(chosen)} runs to train; report in {study / STUDY_REPORT}")
        return 0
    if not args.no_compare and args.only is None:
        check_writable(study / STUDY_REPORT, "report folder")
    if args.only:
        train_locked(chosen, args.nproc)
    else:
        train_all(chosen, args.nproc, args.gpus)
    print(f"study: training done in {duration(time.perf_counter() - started)}", flush=True)
    if args.no_compare or args.only:
        return 0
    code = run_main(comparison.cli, compare_argv(args, study))
    print(f"study: finished in {duration(time.perf_counter() - started)}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """The command line behind the suite's error boundary: its exit code."""
    return run_main(cli, argv, interrupted="interrupted: rerun the same command to continue where the study stopped")


if __name__ == "__main__":
    sys.exit(main())
