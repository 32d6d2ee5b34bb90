"""One exception type for problems the user can fix (bad paths, files, settings). It imports nothing,
so every layer above net/ can raise it (net/ raises its own ConfigError); cli/entry.py turns it into
one line and exit code 2.
"""
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
