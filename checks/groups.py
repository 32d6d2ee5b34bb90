"""The GPU check's plan: its rows in groups, each group run in a child process of its own with a time
limit (checks/gpu_check.py), in this order; what each runs, for the dry run.

`cap` is the most a group may take; `floor` is kept for it whatever the groups before it take, so every
group gets its chance inside the budget. Both are estimates for an H200 with 16 cores: compiling
(torch.compile) dominates the step groups, and each real run trains for a fixed time.
"""
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from checks import device_runs, device_steps
from checks.device_runs import (
    bench_command,
    real_run_command,
    real_run_rows,
    resume_command,
    resume_rows,
    study_command,
    study_rows,
)
from checks.device_steps import VARIANTS, guard_rows, step_name, step_rows
from checks.rows import Context, Row
from training.stages import END_TO_END, STAGE2

STAGES = ("stage1", "stage2", "end_to_end")


@dataclass(frozen=True)
class Group:
    name: str
    rows: tuple[str, ...]
    cap: int  # seconds at most
    floor: int  # seconds kept for it
    run: Callable[[Context], Iterable[Row]]  # its rows, each as soon as it is done
    plan: Callable[[Context], list[str]]  # what it runs, in words and commands


def shown(command: list[str]) -> str:
    return shlex.join(command)


def steps_plan(stage: str, context: Context) -> list[str]:
    return [f"two training steps of {stage} (batch {device_steps.BATCH}, {device_steps.SIZE} px, the args file's "
            f"model) on the CPU, then on CUDA as {', '.join(VARIANTS)}: losses against the CPU's, and a third "
            "step under torch.cuda.set_sync_debug_mode('error')"]


GROUPS: tuple[Group, ...] = (
    Group("guard", ("non-finite guard",), 40, 15, guard_rows,
          lambda c: ["a tiny run on CUDA whose loss is NaN at step 3 of a 4-step log interval"]),
    *(Group(f"steps:{stage}", tuple(step_name(stage, v) for v in VARIANTS), cap, 30, partial(step_rows, stage),
            partial(steps_plan, stage)) for stage, cap in zip(STAGES, (80, 90, 100), strict=True)),
    Group("resume", ("torchrun resume",), 75, 30, resume_rows,
          lambda c: [f"in {c.work / 'resume'}: {shown(resume_command(c.work / 'resume' / 'straight'))}",
                     "the same into killed/, its training process SIGKILLed after the first checkpoint, then "
                     "again with --resume; per-step losses compared"]),
    Group("run:stage2", ("real run stage2",), 75, 45, partial(real_run_rows, STAGE2),
          lambda c: [f"{shown(real_run_command(STAGE2, c.data, c.work / 'run_stage2'))}  (random stage-1 "
                     f"encoders; interrupted after {device_runs.TRAIN_SECONDS} s)"]),
    Group("run:end_to_end", ("real run end_to_end", "tensorboard"), 75, 45, partial(real_run_rows, END_TO_END),
          lambda c: [f"{shown(real_run_command(END_TO_END, c.data, c.work / 'run_end_to_end', '--tensorboard'))}"
                     f"  (interrupted after {device_runs.TRAIN_SECONDS} s; its TensorBoard events read back)"]),
    Group("bench:fusion", ("bench fusion 1 MP", "bench fusion 4 MP"), 45, 20,
          partial(device_runs.bench_rows, "fusion"),
          lambda c: [shown(bench_command("fusion", c.work / "bench_fusion.json"))]),
    Group("bench:train", tuple(f"bench train {s}" for s in STAGES), 90, 30, partial(device_runs.bench_rows, "train"),
          lambda c: [shown(bench_command("train", c.work / "bench_train.json"))]),
    Group("study", ("study --gpus 0",), 45, 20, study_rows,
          lambda c: [f"in {c.work / 'study'}: {shown(study_command(c.work / 'study'))}"]),
)
BY_NAME = {g.name: g for g in GROUPS}
