"""Validate a GPU machine for this suite in one command, ending with one verdict table (docs/gpu.md).

    make gpu-check                        # python -m checks.gpu_check, from a copy of the working tree
    make gpu-check DRY=1                  # what it would run; any machine, exit 0
    python -m checks.gpu_check --data DIR    # RoadScene pairs (default data/roadscene, else ../shared/data/roadscene)

Rows: a training step of each stage on CUDA in fp32 and bf16, eager and compiled, against the CPU and
without host synchronisation; the non-finite guard; torchrun (NCCL) killed and resumed; short real runs
on RoadScene beside the seed's claims; bench.py's GPU section; a study on --gpus 0. Each group of rows
(checks/groups.py) runs in a child process of its own, one after another, with a time limit; a check
that fails, raises or hangs gives FAILED rows with the first line of its error and never stops the
others. The limits fit the budget (default 450 s: under 8 minutes in all). Exit code 0 when every row
passed, 1 when one failed, 2 without a GPU.
"""
import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from checks.groups import BY_NAME, GROUPS, Group
from checks.rows import Context, Row, error_line
from cli.entry import run_main
from utils.atomic import atomic_write
from utils.errors import CrossFuseError
from utils.tables import duration, format_table

ROOT = Path(__file__).resolve().parents[1]
DATA = (Path("data/roadscene"), Path("../shared/data/roadscene"))  # inside the tree first, relative to ROOT
BUDGET = 450  # seconds for the groups; with the start and the table, under 8 minutes
GRACE = 5  # seconds a child's own steps end before its limit
MIN_SECONDS = 10  # a group with less left is not started
ROW = "gpu-check row: "  # how a child reports a row on its output
NO_GPU = ("no CUDA GPU on this machine (torch.cuda.is_available() is False): make gpu-check validates a GPU "
          "machine; make gpu-check DRY=1 shows what it would run")


def default_data() -> Path:
    """The first of DATA holding RoadScene's ir/ and vi/ (the first, to name in the error, when none does)."""
    found = [ROOT / d for d in DATA if (ROOT / d / "ir").is_dir() and (ROOT / d / "vi").is_dir()]
    return (found[0] if found else ROOT / DATA[0]).resolve()


def limit(groups: tuple[Group, ...], index: int, left: float) -> float:
    """Seconds group `index` may take with `left` of the budget: its cap, less the floors of those after it."""
    return min(groups[index].cap, left - sum(g.floor for g in groups[index + 1:]))


def failed_rows(group: Group, why: str, seconds: float = 0.0) -> list[Row]:
    return [Row(name, False, why, seconds) for name in group.rows]


def stop(proc: subprocess.Popen) -> None:
    """End a child and everything in its process group: asked first (torchrun passes that on to its workers,
    which have sessions of their own), and whatever is left after GRACE seconds killed."""
    deadline = time.monotonic() + GRACE
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < deadline:
                proc.poll()  # reaps the child once it exits, so only live members keep the group
                os.killpg(proc.pid, 0)  # raises once the group is empty
                time.sleep(0.1)
        except ProcessLookupError:
            break
    proc.wait()


def run_child(command: list[str], group: Group, seconds: float, log: Path) -> list[Row]:
    """A group's child process, limited to `seconds`: the rows it reported (a ROW line each, as each is
    done); the others FAILED, saying whether it ran out of time or died. Its output is kept in `log`."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=seconds)
        timed_out = False
    except subprocess.TimeoutExpired:
        stop(proc)
        try:
            out, err = proc.communicate(timeout=GRACE)
        except subprocess.TimeoutExpired:  # something outside its session holds the pipes
            out, err = "", ""
        timed_out = True
    atomic_write(log, lambda temp: temp.write_text(f"$ {shlex.join(command)}\n{out}\n{err}"))
    rows = {}
    for line in out.splitlines():
        if line.startswith(ROW):
            row = Row(**json.loads(line[len(ROW):]))
            rows[row.name] = row
    if timed_out:
        why = f"stopped at its time limit of {seconds:.0f} s"
    elif proc.returncode != 0:
        why = "the check process died: " + error_line(err, f"exit code {proc.returncode}")
    else:
        why = "no result from the check"
    took = time.perf_counter() - start - sum(r.seconds for r in rows.values())
    return [rows.get(name) or Row(name, False, why, took) for name in group.rows]


def child_command(group: Group, data: Path, work: Path, seconds: float) -> list[str]:
    return [sys.executable, "-m", "checks.gpu_check", "--group", group.name, f"--data={data}", f"--work={work}",
            f"--seconds={seconds:.0f}"]


def run_groups(groups: tuple[Group, ...], data: Path, work: Path, budget: float) -> list[Row]:
    """Every group in order, each within its limit of what is left of the budget."""
    start = time.perf_counter()
    rows: list[Row] = []
    for index, group in enumerate(groups):
        seconds = limit(groups, index, budget - (time.perf_counter() - start))
        if seconds < MIN_SECONDS:
            rows += failed_rows(group, f"not run: {seconds:.0f} s of the {budget:.0f} s budget were left")
            continue
        print(f"[{time.perf_counter() - start:3.0f} s] {group.name}: up to {seconds:.0f} s", file=sys.stderr,
              flush=True)
        # the child's own steps end GRACE seconds before its limit, so it can report
        command = child_command(group, data, work, seconds - GRACE)
        rows += run_child(command, group, seconds, work / "logs" / f"{group.name.replace(':', '_')}.log")
    return rows


def verdict(rows: list[Row], seconds: float, work: Path) -> str:
    """The one table the check ends with, under a line naming the machine and the count."""
    failed = sum(not r.passed for r in rows)
    head = (f"GPU check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda}): "
            f"{len(rows) - failed} passed, {failed} FAILED in {duration(seconds)}; runs and logs in {work}")
    table = format_table(["check", "verdict", "s", "figure"],
                         [[r.name, "passed" if r.passed else "FAILED", f"{r.seconds:.0f}", r.figure] for r in rows],
                         "<<><")
    return f"{head}\n{table}"


def plan(data: Path, work: Path, budget: float) -> str:
    """--dry-run: each group's rows, limit and what it runs."""
    context = Context(data, work, 0)
    found = "found" if (data / "ir").is_dir() and (data / "vi").is_dir() else "MISSING: the real runs would fail"
    lines = [f"make gpu-check would run {len(GROUPS)} groups in order, each in a child process under a time limit, "
             f"within {budget:.0f} s; RoadScene pairs from {data} ({found}); runs and logs in {work}"]
    for group in GROUPS:
        lines.append(f"{group.name} (up to {group.cap} s): {', '.join(group.rows)}")
        lines += [f"    {step}" for step in group.plan(context)]
    if not torch.cuda.is_available():
        lines.append(f"(here it would stop: {NO_GPU.split(':')[0]})")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print what would run and exit (no GPU needed)")
    p.add_argument("--data", type=Path, help="RoadScene folder holding ir/ and vi/ (default: the first of "
                   f"{', '.join(map(str, DATA))} that has them)")
    p.add_argument("--work", type=Path, help="folder for the check's runs and logs (default: a new temporary folder)")
    p.add_argument("--budget", type=float, default=BUDGET, help="seconds for all groups (default %(default)s)")
    p.add_argument("--group", choices=list(BY_NAME), help=argparse.SUPPRESS)  # a child: one group, rows as JSON
    p.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data = args.data.resolve() if args.data else default_data()
    if args.group:  # a child of the check: one group's rows, each on its line as soon as it is done
        for row in BY_NAME[args.group].run(Context(data, args.work, args.seconds)):
            print(ROW + json.dumps(row.as_dict()), flush=True)
        return 0
    floors = sum(g.floor for g in GROUPS)
    if args.budget < floors:
        raise CrossFuseError(f"--budget {args.budget:.0f}: at least {floors} s (what the groups need at least)")
    if args.dry_run:
        print(plan(data, args.work or Path(tempfile.gettempdir()) / "crossfuse-gpu-check-XXXX", args.budget))
        return 0
    if not torch.cuda.is_available():
        raise CrossFuseError(NO_GPU)
    work = (args.work or Path(tempfile.mkdtemp(prefix="crossfuse-gpu-check-"))).resolve()
    start = time.perf_counter()
    rows = run_groups(GROUPS, data, work, args.budget)
    print(verdict(rows, time.perf_counter() - start, work))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
