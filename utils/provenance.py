"""What a run was made with: the code's git commit and the machine, recorded with every start and resume
(config_history_<job>.json), so a number can be traced to the code and hardware that produced it."""
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def git(root: Path, *args: str) -> str | None:
    """A git command's output in root; None without git or outside a clone."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root: Path = ROOT) -> str:
    """The commit the code is at, "+changes" when tracked files differ from it, or "no git" (a copy of the tree)."""
    commit = git(root, "rev-parse", "HEAD")
    if commit is None:
        return "no git"
    return commit + ("+changes" if git(root, "status", "--porcelain", "--untracked-files=no") else "")


def machine(device: torch.device) -> dict[str, Any]:
    """The host, the software versions and the device a run trains on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} cores"
    return {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": f"{device} ({name})"}
