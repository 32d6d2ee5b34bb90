"""How every entry point starts and ends: the training scripts' settings (--help, --demo), and the
one error boundary all scripts run behind (the suite's error becomes one line and exit code 2;
anything else is a bug and keeps its traceback).
"""
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch.distributed as dist

from dataio.demo_data import make_demo_dataset
from metrics.core import MetricError
from training.board import writer_class
from training.settings import S, help_text, read_settings
from utils.device import keep_freed_memory
from utils.errors import CrossFuseError

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


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             interrupted: str = "interrupted") -> int:
    """Run an entry point's main(argv): its return code, or 2 with one line for a CrossFuseError
    or a MetricError."""
    keep_freed_memory()
    try:
        return main(list(sys.argv[1:] if argv is None else argv)) or 0
    except (CrossFuseError, MetricError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
