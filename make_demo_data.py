"""Generate the synthetic IR/VIS demo data set on its own (training scripts' --demo does it too).

    python make_demo_data.py --root data/demo --n-train 48 --n-test 6
"""
import argparse
import sys
from pathlib import Path

from cli.entry import run_main
from dataio.demo_data import make_demo_dataset


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_demo_dataset(args.root, args.n_train, args.n_test, args.size, args.seed)
    print(f"demo data set ready in {root}")


if __name__ == "__main__":
    sys.exit(run_main(main))
