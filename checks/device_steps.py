"""The GPU check's in-process rows: a training step of each stage on CUDA against the CPU, and the
non-finite guard on CUDA.

Each step is the trainer's own (benchmarks.sections.training_step: the args file's model, optimiser and
loss, batch 8 at 256 px, the seed's size and bench.py's, so bench's compiled rows find these
compilations in torch's cache). With one seed the weights and the batch are the same on both devices.
Two steps are compared: the first loss checks the forward pass, the second the backward pass and fused
Adam's update. Tolerances, relative, of each step's total loss: fp32 1e-2 (cuDNN runs fp32
convolutions in TF32 by default, 10 mantissa bits), bf16 5e-2 (8 mantissa bits inside autocast; the
loss itself is fp32).

A third, warmed-up step then runs under torch.cuda.set_sync_debug_mode("error"), with what the loop
does after it (the temperature, the row Pending.add keeps on the device). In that mode torch itself
raises at every operation that makes the host wait for the GPU: a read (.item(), .tolist(), a copy to
the host), a blocking copy from pageable host memory, an explicit synchronize, an operation whose
output size depends on data. That is exactly what would cost a step its overlap with the host, and
more than the CPU tests can see (they count reads: tests/test_host_sync.py, tests/test_fake_cuda.py).
Warmed up, because first calls may synchronise once by design (cuDNN's algorithm choice, compilation,
the allocator growing, lazy initialisation).
"""
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from args_end_to_end import EndToEnd
from benchmarks.sections import TrainingStep, training_step
from checks.rows import Context, Row, first_line, guarded, relative_difference
from training.job import Job
from training.runtime import Runtime
from training.settings import read_settings
from training.stages import mean_temperature
from training.trainer import Pending, train
from utils.errors import CrossFuseError

CUDA = torch.device("cuda")
VARIANTS = ("fp32", "amp", "compile", "amp+compile")
TOLERANCE = {"fp32": 1e-2, "amp": 5e-2}  # by precision: "amp" in the variant's name or not
BATCH, SIZE, STEPS = 8, 256, 2


def step_name(stage: str, variant: str) -> str:
    return f"step {stage} {variant.replace('amp', 'bf16')}"


def first_steps(stage: str, device: torch.device, variant: str, batch: int, size: int,
                backend: str) -> tuple[TrainingStep, list[float]]:
    """A stage's training step built from seed 0, and the total loss of its first STEPS steps."""
    if "compile" in variant:
        torch._dynamo.reset()  # each compiled variant compiles afresh (torch's on-disk cache still serves)
    torch.manual_seed(0)
    run = training_step(stage, device, batch, size, variant, backend)
    return run, [float(run.step()["total"].detach()) for _ in range(STEPS)]


def step_without_syncs(run: TrainingStep, stage: str, device: torch.device) -> None:
    """One more step and the loop's per-step work, raising at any host synchronisation (on CUDA)."""
    good = torch.ones((), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
    try:
        terms = run.step()
        Pending().add(terms, None if stage == "stage1" else mean_temperature(run.model), good, (0.0, 1, 1))
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def step_rows(stage: str, context: Context | None = None, device: torch.device = CUDA,
              variants: tuple[str, ...] = VARIANTS, batch: int = BATCH, size: int = SIZE,
              backend: str = "inductor") -> Iterator[Row]:
    """One row per variant, as each is done: its first steps' losses against the CPU's, and a step without
    host syncs."""
    try:
        _, reference = first_steps(stage, torch.device("cpu"), "fp32", batch, size, backend)
    except Exception as e:  # every row needs the reference
        for variant in variants:
            yield Row(step_name(stage, variant), False, f"the CPU reference failed: {first_line(e)}")
        return

    def check(variant: str) -> tuple[bool, str]:
        run, losses = first_steps(stage, device, variant, batch, size, backend)
        difference = relative_difference(losses, reference)
        tolerance = TOLERANCE["amp" if "amp" in variant else "fp32"]
        try:
            step_without_syncs(run, stage, device)
            synced, syncs = False, "no host sync in a step" if device.type == "cuda" else "syncs: CUDA only"
        except RuntimeError as e:  # the sync check's own error says which operation synchronised
            synced, syncs = True, f"the step under the sync check failed: {first_line(e)}"
        figure = f"loss vs CPU {difference:.1e} (tolerance {tolerance:.0e}); {syncs}"
        return difference <= tolerance and not synced, figure

    for variant in variants:
        yield guarded(step_name(stage, variant), partial(check, variant))


# ------------------------------------------------------------------------------- the non-finite guard

class Images(Dataset):
    """Twelve fixed 8 x 8 images (also tests/test_host_sync.py's)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) * 255


class SquaredError:
    """A reconstruction loss that turns NaN at the given calls; it keeps the weights it was called with."""

    def __init__(self, model: nn.Module, nan_at: tuple[int, ...] = ()):
        self.model, self.nan_at, self.calls, self.weights = model, nan_at, 0, []

    def __call__(self, out: torch.Tensor, batch: tuple) -> dict[str, torch.Tensor]:
        self.calls += 1
        self.weights.append(self.model.weight.detach().clone())
        total = (out - batch[0]).pow(2).mean()
        return {"total": total * float("nan") if self.calls in self.nan_at else total}


def guard_rows(context: Context, device: torch.device = CUDA) -> Iterator[Row]:
    """tests/test_host_sync.py's guard test on the device: a NaN at step 3 of a 4-step log interval skips
    steps 3 and 4 on the device (fused Adam's found_inf) and stops the run at the read after step 4."""
    def check() -> tuple[bool, str]:
        out = Path(context.work) / "guard"
        config = read_settings(EndToEnd, [f"--out_root={out}", f"--device={device}", "--workers=0", "--batch=1",
                                          "--epochs=1", "--log_every=4", "--checkpoint_every=1000",
                                          "--preview_images=0"])
        torch.manual_seed(0)
        model = nn.Conv2d(1, 1, 3, padding=1)
        loss = SquaredError(model, nan_at=(3,))
        job = Job("guard", "guard", out, model, Images(), lambda m, b: m(b[0]), loss, lambda m, e: [])
        try:
            train(job, config, Runtime(device))
            return False, "the run did not stop at the non-finite loss"
        except CrossFuseError as e:
            message = str(e)
        w = loss.weights
        applied = not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
        skipped = torch.equal(w[2], w[3]) and torch.equal(w[3], model.weight)
        where = "at epoch 1, batch 3" in message and loss.calls == 4
        finite = all(math.isfinite(v) for v in model.weight.detach().flatten().tolist())
        figure = (f"steps 1-2 applied: {applied}; NaN step 3 and step 4 skipped: {skipped}; stopped after step "
                  f"{loss.calls} naming batch 3: {where}")
        return applied and skipped and where and finite, figure

    yield guarded("non-finite guard", check)
