"""One exception type for problems the user can fix (bad paths, files, settings), and the boundary
every entry point runs behind: that error becomes one line and exit code 2; anything else is a bug
and keeps its traceback.
"""
import sys
from collections.abc import Callable, Sequence

import torch.distributed as dist

_WORKER_MARK = "Original Traceback"


class CrossFuseError(Exception):
    """A user-facing error whose message names the offending file or setting.

    A DataLoader worker re-raises it in the main process with the worker's whole traceback as the
    message; the original one-line message is recovered here, so every caller sees one line.
    """

    def __init__(self, message: str = "") -> None:
        if _WORKER_MARK in message:
            message = message.strip().rsplit(f"{__name__}.{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             interrupted: str = "interrupted") -> int:
    """Run an entry point's main(argv): its return code, or 2 with one line for a CrossFuseError."""
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
