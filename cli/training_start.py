"""How the training scripts start: their settings (training.settings.read_settings), --help, --demo's
data set and --tensorboard's package check; they end behind cli.entry.run_main.
"""
import sys
from pathlib import Path

from dataio.demo_data import make_demo_dataset
from training.board import writer_class
from training.settings import S, help_text, read_settings

INTERRUPTED = "interrupted: rerun with --resume to continue from the last checkpoint"


def settings(args_class: type[S], argv: list[str], doc: str) -> S:
    """A training script's settings (training.settings.read_settings); --help prints them and exits,
    and --tensorboard without its package stops here."""
    if "-h" in argv or "--help" in argv:
        print(help_text(args_class, argv, doc))
        sys.exit(0)
    config = read_settings(args_class, argv)
    if config.tensorboard:
        writer_class()  # without the package: one line now, before any work
    if config.demo:
        make_demo_dataset(Path("data/demo"))
    return config
