"""Command-line settings of the tiny models and runs that training tests use (seconds on a CPU)."""
from pathlib import Path

ENCODER = ["--shallow=4", "--growth=4", "--deep=8"]
FUSION = ["--decoder=8", "--tile=4", "--heads=2", "--mlp_ratio=2"]
RUN = ["--image_size=32", "--batch=2", "--workers=0", "--device=cpu", "--train_num=0", "--log_every=1"]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A training script's arguments for the demo pairs under `data`, writing into `out`."""
    return [f"--dataset={data / 'train'}", f"--out_root={out}", *RUN, *extra]
