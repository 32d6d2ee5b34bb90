"""How every entry point starts and ends: the args-file settings reader of the training scripts, and
the one error boundary all scripts run behind (the suite's error becomes one line and exit code 2;
anything else is a bug and keeps its traceback).
"""
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist

from dataio.demo_data import make_demo_dataset
from training.config import check_ranges, help_text, model_config, parse_overrides, with_preset
from utils.device import keep_freed_memory
from utils.errors import CrossFuseError
from utils.settings import Settings, presets

S = TypeVar("S", bound=Settings)
INTERRUPTED = "interrupted: rerun with --resume to continue from the last checkpoint"

DEMO = dict(dataset="data/demo/train", test_dir="data/demo/test", out_root="models/demo", train_num=0,
            image_size=64, batch_size=4, workers=0, log_every=12, checkpoint_every=48, preview_images=4,
            lr_step_epochs=30, shallow=8, growth=8, deep=16, decoder=16, tile=8, heads=4, mlp_ratio=2)


def settings(args_class: type[S], argv: list[str], doc: str) -> S:
    """The args file's values, then its --preset's, then the demo's (with --demo), then the command line's."""
    config = with_preset(args_class, argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(config, doc, presets(args_class)))
        sys.exit(0)
    if "--demo" in argv or "--demo=true" in argv:
        make_demo_dataset(Path("data/demo"))
        demo = {k: v for k, v in DEMO.items() if k in config}
        config.update(demo, epochs=args_class.demo_epochs)
    config = args_class(**check_ranges(parse_overrides(config, argv)))
    if hasattr(config, "deep"):  # the whole model is configured here: check how its widths fit together
        model_config(config)
    return config


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             interrupted: str = "interrupted") -> int:
    """Run an entry point's main(argv): its return code, or 2 with one line for a CrossFuseError."""
    keep_freed_memory()
    try:
        return main(list(sys.argv[1:] if argv is None else argv)) or 0
    except CrossFuseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
