"""The suite's scripts run from tests in this process: what a test checks of a script is its main() behind
the one error boundary (exit code, stdout, stderr), and a fresh interpreter would add 1.7 s of start-up
to every call. Tests that need a process of their own (a kill, a resource limit, torchrun, the study's
signal handling) still start one."""
import contextlib
import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cli.entry import run_main

ROOT = Path(__file__).resolve().parents[1]
OWN_BOUNDARY = {"evaluate", "compare_training_approaches", "study"}  # main(argv) calls run_main itself


@dataclass
class Result:
    """What subprocess.run would have captured."""

    returncode: int
    stdout: str
    stderr: str


def run_script(script: str, *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Result:
    """`python script *argv` in `cwd` with `env` added to the environment, run in this process; the working
    folder, the environment and torch's thread count are put back afterwards."""
    module = importlib.import_module(Path(script).stem)
    out, err = io.StringIO(), io.StringIO()
    before, threads = dict(os.environ), torch.get_num_threads()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.environ.update(env or {})
            try:
                code = module.main(list(argv)) if module.__name__ in OWN_BOUNDARY else run_main(module.main, argv)
            except SystemExit as e:  # --help, and argparse's usage errors
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        os.environ.clear()
        os.environ.update(before)
        torch.set_num_threads(threads)
    return Result(code, out.getvalue(), err.getvalue())
