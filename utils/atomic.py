"""Atomic file writes: a crash or a full disk mid-write never leaves a truncated file, and the last
good version of the file stays in place. Every file the suite writes goes through atomic_write.

A process killed mid-write leaves its hidden temporary file behind; the next write into that folder
removes the temporaries of processes that no longer run.
"""
import errno
import fcntl
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from utils.errors import CrossFuseError


def temp_path(path: Path) -> Path:
    """A hidden, unique temporary name in the same folder (so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Delete the temporary files that killed writers left in `folder` (their process is gone)."""
    try:
        for entry in os.scandir(folder):
            found = TEMP_NAME.match(entry.name)
            if found and int(found.group(1)) != os.getpid() and not running(int(found.group(1))):
                Path(entry.path).unlink(missing_ok=True)
    except OSError:
        return


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(temp) and rename the temporary file over `path`; parent folders are created.

    Operating-system failures (disk full, read-only or missing folder, a file where a folder
    should be) become a one-line CrossFuseError naming `path`.
    """
    path = Path(path)
    temp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        write(temp)
        os.replace(temp, path)
    except OSError as e:
        raise CrossFuseError(f"{path}: cannot write ({e.strerror or e}); the previous file, if any, is kept") from e
    finally:
        if temp.parent.is_dir():
            temp.unlink(missing_ok=True)
    return path


def _torch_save(obj: Any, path: Path) -> None:
    """torch.save, with its stream-writer failures raised as OSError: torch reports a full disk (or a
    file over the size limit) as an internal 'unexpected pos' error, so it is named for what it is."""
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        if not any(mark in str(e) for mark in ("inline_container", "PytorchStreamWriter", "iostream error")):
            raise
        raise OSError(errno.ENOSPC, "the disk is full or the file is larger than allowed: the checkpoint could not "
                      "be written whole") from e


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda temp: _torch_save(obj, temp))


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Fail early, before any work, when `folder` cannot be created or written to."""
    folder = Path(folder)
    probe = temp_path(folder / "probe")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CrossFuseError(f"{folder}: {what} is not writable ({e.strerror or e})") from None
    return folder


def check_output_file(path: str | Path) -> None:
    """Fail before any work if the file `path` could not be written (a folder, or no writable folder for it)."""
    path = Path(path)
    if path.is_dir():
        raise CrossFuseError(f"{path}: is a folder, cannot write output there")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CrossFuseError(f"{path}: cannot write output, {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CrossFuseError(f"{path}: cannot write output, folder {folder} is not writable")



@contextmanager
def hold_lock(path: str | Path, wait: bool, what: str) -> Iterator[None]:
    """An exclusive lock on `path` (an empty file, created if need be) for the duration of the block.

    wait=False: a lock another process holds is one line saying so (two runs started into one folder);
    wait=True: wait for it (study tasks sharing a stage-1 run). The kernel drops it when a process dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise CrossFuseError(f"{path.parent}: another process is {what} there now; wait for it to finish, or "
                                 "use another output folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
