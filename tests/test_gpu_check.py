"""make gpu-check without a GPU: its dry run, its one line where there is no GPU, the guards that keep one
failing, raising or hanging check from stopping the others, the time limits, and the in-process checks
run on the CPU (their CUDA halves, the sync check among them, need a GPU: docs/gpu.md)."""
import json
import os
import subprocess
import sys

import torch

from checks import device_runs, gpu_check
from checks.device_steps import guard_rows, step_rows
from checks.groups import GROUPS, Group
from checks.rows import Context, Row, error_line, guarded, relative_difference
from tests.conftest import ROOT
from training.stages import END_TO_END
from utils.device import native_bf16

CPU = torch.device("cpu")


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "checks.gpu_check", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_the_dry_run_shows_every_row_and_command(tmp_path):
    done = check("--dry-run", f"--work={tmp_path}", f"--data={tmp_path / 'roadscene'}", CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 0, done.stderr
    for group in GROUPS:
        assert f"{group.name} (up to {group.cap} s): {', '.join(group.rows)}" in done.stdout
    assert "torch.distributed.run --standalone --nproc_per_node=1" in done.stdout and "--gpus 0" in done.stdout
    assert f"{tmp_path / 'roadscene'} (MISSING" in done.stdout and "here it would stop: no CUDA GPU" in done.stdout
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


def test_without_a_gpu_it_says_so_in_one_line():
    done = check(CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {gpu_check.NO_GPU}\n"


GROUP = Group("g", ("a", "b"), 10, 5, lambda context: [], lambda context: [])


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class PastItsLimit(subprocess.Popen):
    """A child whose time limit runs out just after it has printed its first line, whatever the machine's
    load: the test never races the child's start-up against a short limit. It is then stopped for real."""

    def communicate(self, input=None, timeout=None):
        if not hasattr(self, "first"):
            self.first = self.stdout.readline()
            raise subprocess.TimeoutExpired(self.args, timeout)
        out, err = super().communicate(input, timeout)
        return self.first + out, err


def test_a_check_process_that_reports_raises_or_hangs_gives_rows(tmp_path, monkeypatch):
    row = "print(" + repr(gpu_check.ROW + json.dumps(Row("a", True, "fine", 1.0).as_dict())) + ", flush=True)"
    reported = gpu_check.run_child(python(f"print('noise'); {row}"), GROUP, 30, tmp_path / "1.log")
    assert reported[0] == Row("a", True, "fine", 1.0) and reported[1].figure == "no result from the check"
    raised = gpu_check.run_child(python(f"{row}; raise RuntimeError('boom')"), GROUP, 30, tmp_path / "2.log")
    assert raised[0].passed and (raised[1].passed, raised[1].figure) == (False, "the check process died: "
                                                                              "RuntimeError: boom")
    monkeypatch.setattr(subprocess, "Popen", PastItsLimit)
    hung = gpu_check.run_child(python(f"{row}; import time; time.sleep(600)"), GROUP, 2, tmp_path / "3.log")
    assert hung[0].passed and (hung[1].passed, hung[1].figure) == (False, "stopped at its time limit of 2 s")
    assert "RuntimeError: boom" in (tmp_path / "2.log").read_text()


def test_each_group_keeps_the_floors_of_those_after_it():
    groups = tuple(Group(name, (), cap, floor, print, print) for name, cap, floor in (("x", 100, 10), ("y", 50, 20),
                                                                                     ("z", 50, 30)))
    assert gpu_check.limit(groups, 0, 450) == 100
    assert gpu_check.limit(groups, 0, 90) == 90 - 20 - 30
    assert gpu_check.limit(groups, 2, 40) == 40
    assert sum(g.floor for g in GROUPS) <= gpu_check.BUDGET and 8 * 60 - gpu_check.BUDGET >= 30


def test_a_check_that_raises_is_one_failed_row():
    row = guarded("x", lambda: 1 / 0)
    assert (row.name, row.passed, row.figure) == ("x", False, "ZeroDivisionError: division by zero")
    assert guarded("y", lambda: (True, "3 ms")).passed
    torchrun = "Traceback (most recent call last):\nRuntimeError: CUDA error\n...ChildFailedError: \n=====\n"
    assert error_line(torchrun, "") == "RuntimeError: CUDA error"
    assert error_line(f"warning: x\nerror: --lr: bad\n{torchrun}", "") == "error: --lr: bad"
    assert error_line("", "exit code 1") == "exit code 1"
    assert relative_difference([1.0, 2.2], [1.0, 2.0]) == abs(2.2 - 2.0) / 2.0
    assert relative_difference([1.0], [1.0, 2.0]) == float("inf") == relative_difference([float("nan")], [1.0])


def test_the_in_process_checks_run_on_the_cpu(tmp_path, one_thread):
    """Their wiring, with the CPU standing in for CUDA: the same seed gives the same losses on both sides,
    and the guard skips and stops as on a GPU."""
    rows = [*step_rows("end_to_end", device=CPU, variants=("fp32", "amp"), batch=2, size=32),
            *guard_rows(Context(tmp_path, tmp_path, 60), device=CPU)]
    assert [(r.name, r.passed) for r in rows] == [("step end_to_end fp32", True), ("step end_to_end bf16", True),
                                                  ("non-finite guard", True)]
    assert rows[0].figure.startswith("loss vs CPU 0.0e+00 (tolerance 1e-02)")
    # bf16 where this CPU computes it natively (a difference within the tolerance), else fp32 and no difference
    assert rows[1].figure.startswith("loss vs CPU ") and "(tolerance 5e-02)" in rows[1].figure
    assert (rows[1].figure.startswith("loss vs CPU 0.0e+00")) != native_bf16(CPU)


def test_the_real_runs_need_roadscene(tmp_path):
    rows = list(device_runs.real_run_rows(END_TO_END, Context(tmp_path / "none", tmp_path, 60)))
    assert [(r.name, r.passed) for r in rows] == [("real run end_to_end", False), ("tensorboard", False)]
    assert rows[0].figure.startswith(f"no RoadScene pairs at {tmp_path / 'none'}")
