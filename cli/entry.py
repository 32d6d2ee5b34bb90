"""How every entry point ends: the one error boundary all scripts run behind (the suite's errors become
one line and exit code 2; anything else is a bug and keeps its traceback). It imports no training code,
so scoring a folder (evaluate.py) does not load the training stack; the training scripts start in
cli/training_start.py.
"""
import sys
from collections.abc import Callable, Sequence

import torch.distributed as dist

from metrics.core import MetricError
from utils.device import keep_freed_memory
from utils.errors import CrossFuseError


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
