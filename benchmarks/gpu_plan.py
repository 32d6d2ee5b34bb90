"""A GPU plan without a GPU: per training stage, at the args files' batch and image size, the parameters,
the peak memory of one training step by kind, the FLOPs per pair, and for a few named GPUs whether it
fits and how long the args files' schedule would take.

The step runs as training runs it (training.trainer.train_step, make_optimizer, the stage's forward and
loss) under FakeTensorMode: tensors with shapes and no data, so a batch of 8 at 256 px is planned in
seconds on any CPU. The memory is that of the live tensors, which are the sizes a CUDA step allocates;
what a GPU shows is more (CUDA context, the caching allocator's slack), and CUDA's attention kernels keep
less than the CPU's. The times assume a share of each card's dense peak that such a network reaches;
`make gpu-check` measures the real share and memory on the card it runs on, beside these figures.
"""
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.sections import stage_job
from benchmarks.timing import count_flops
from training.optim import make_optimizer
from training.runtime import Runtime
from training.stages import STAGES
from training.trainer import train_step
from utils.args_base import defaults
from utils.errors import CrossFuseError
from utils.tables import duration, format_table

GIB = 2**30
CUDA_OVERHEAD = 0.6 * GIB  # what a CUDA context and cuDNN's workspace hold before the first tensor
ALLOCATOR_SLACK = (1.1, 1.5)  # reserved / allocated of PyTorch's caching allocator, typical range
FP32_SHARE = (0.2, 0.5)  # share of the fp32 peak a convolution network of these widths reaches
BF16_SHARE = (0.08, 0.3)  # of the bf16 tensor-core peak: narrow layers, norms and attention keep it low


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    fp32_tflops: float  # dense, CUDA cores
    bf16_tflops: float  # dense, tensor cores; 0 where the card has none


# Published dense peaks (vendors' data sheets).
GPUS = (Gpu("T4", 16, 8.1, 0), Gpu("V100 32GB", 32, 15.7, 0), Gpu("RTX 3090", 24, 35.6, 71),
        Gpu("RTX 4090", 24, 82.6, 165), Gpu("L4", 24, 30.3, 121), Gpu("A100 40GB", 40, 19.5, 312),
        Gpu("A100 80GB", 80, 19.5, 312), Gpu("H100 SXM", 80, 67, 989))
SEED_CLAIMS = {"stage1": "3 h", "stage2": "3-4 GB, 1.5 h", "end_to_end": "5-8 GB, 4-6 h"}


class LiveTensors(TorchDispatchMode):
    """The bytes of live tensor storage, counted as ops make them and freed as they die, and their peak
    (with the gradients alive at that moment, so the peak can be split by kind)."""

    def __init__(self, gradient_bytes: Callable[[], int]):
        super().__init__()
        self.live: dict[int, int] = {}
        self.total = self.peak = self.gradients_at_peak = 0
        self.gradient_bytes = gradient_bytes

    def add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.total += self.live[key]
        weakref.finalize(storage, self.drop, key)
        if self.total > self.peak:
            self.peak, self.gradients_at_peak = self.total, self.gradient_bytes()

    def drop(self, key: int) -> None:
        self.total -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.add(leaf)
        return out


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


def plan_stage(stage: str, argv: list[str]) -> dict[str, Any]:
    """One training step of `stage` with its args file and argv's overrides, measured without data."""
    job, config = stage_job(stage, argv)
    if config.train_num < 1:
        raise CrossFuseError(f"--plan: {stage} has train_num={config.train_num} (all of its data set), so the "
                             "schedule's length is unknown: give --train_num=N")
    model, runtime = job.model, Runtime(torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    with FakeTensorMode(allow_non_fake_inputs=True):
        batch = [torch.empty(config.batch, 1, config.image_size, config.image_size).uniform_(0, 255)
                 for _ in range(1 if stage == "stage1" else 2)]
        optimizer = make_optimizer(model, config)

        def step() -> None:
            train_step(job, model, optimizer, batch, False, runtime, torch.ones(()))

        step()  # Adam makes its state in the first step; the plan is of a step after it
        state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        live = LiveTensors(lambda: storage_bytes([p.grad for p in trainable if p.grad is not None]))
        for tensor in [*model.parameters(), *model.buffers(), *batch, *state]:
            live.add(tensor)
        with live:
            step()
        forward = count_flops(lambda: job.forward(model, batch))
        total = count_flops(step)
    weights = storage_bytes([*model.parameters(), *model.buffers()])
    optimizer_state, inputs = storage_bytes(state), storage_bytes(batch)
    pairs = config.train_num * (2 if stage == "stage1" else 1)  # stage 1 trains an IR and a VIS autoencoder
    return {"stage": stage, "batch": config.batch, "size": config.image_size, "epochs": config.epochs,
            "pairs_per_epoch": pairs, "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in trainable), "peak_bytes": live.peak, "weights_bytes": weights,
            "gradient_bytes": live.gradients_at_peak, "optimizer_bytes": optimizer_state, "input_bytes": inputs,
            "activation_bytes": live.peak - weights - live.gradients_at_peak - optimizer_state - inputs,
            "forward_flops_per_pair": forward / config.batch,
            "backward_flops_per_pair": (total - forward) / config.batch}


def on_a_gpu(row: dict[str, Any]) -> tuple[float, float]:
    """The bytes a GPU would show for the step, low and high: the live tensors with the allocator's slack,
    plus the CUDA context."""
    low, high = (CUDA_OVERHEAD + row["peak_bytes"] * slack for slack in ALLOCATOR_SLACK)
    return low, high


def gpu_rows(row: dict[str, Any]) -> list[list[str]]:
    """Per named GPU: the memory against the card's, and the schedule's time range in fp32 and bf16."""
    work = (row["forward_flops_per_pair"] + row["backward_flops_per_pair"]) * row["pairs_per_epoch"] * row["epochs"]
    low, high = on_a_gpu(row)
    rows = []
    for gpu in GPUS:
        fits = "fits" if high <= gpu.memory_gib * GIB else "tight" if low <= gpu.memory_gib * GIB else "does not fit"
        fp32 = " - ".join(duration(work / (gpu.fp32_tflops * 1e12 * share)) for share in reversed(FP32_SHARE))
        bf16 = (" - ".join(duration(work / (gpu.bf16_tflops * 1e12 * share)) for share in reversed(BF16_SHARE))
                if gpu.bf16_tflops else "no bf16")
        rows.append([f"  {gpu.name}", f"{gpu.memory_gib:.0f} GiB", fits, fp32, bf16])
    return rows


def format_plan(rows: list[dict[str, Any]]) -> str:
    """The plan as people read it: per stage the step's memory and work, then the named GPUs."""
    lines = []
    for row in rows:
        mib = {k: row[f"{k}_bytes"] / 2**20
               for k in ("peak", "weights", "gradient", "optimizer", "input", "activation")}
        low, high = (b / GIB for b in on_a_gpu(row))
        what = (f"2 x {row['pairs_per_epoch'] // 2} images (the IR and the VIS autoencoder)" if row["stage"] == "stage1"
                else f"{row['pairs_per_epoch']} pairs")
        lines += [f"{row['stage']}: batch {row['batch']} at {row['size']} px, {row['epochs']} epochs of {what}; "
                  f"{row['parameters'] / 1e6:.2f} M parameters ({row['trainable'] / 1e6:.2f} M trained)",
                  f"  peak of live tensors {mib['peak']:,.0f} MiB = weights {mib['weights']:,.0f} + gradients "
                  f"{mib['gradient']:,.0f} + Adam state {mib['optimizer']:,.0f} + batch {mib['input']:,.0f} + "
                  f"activations and temporaries {mib['activation']:,.0f}",
                  f"  on a GPU expect {low:.1f}-{high:.1f} GiB (CUDA context and allocator slack); the seed "
                  f"says {SEED_CLAIMS[row['stage']]}",
                  f"  {row['forward_flops_per_pair'] / 1e9:.1f} GFLOP forward + "
                  f"{row['backward_flops_per_pair'] / 1e9:.1f} GFLOP backward per "
                  f"{'image' if row['stage'] == 'stage1' else 'pair'}",
                  format_table(["  GPU", "memory", "this step", f"fp32 at {FP32_SHARE[0]:.0%}-{FP32_SHARE[1]:.0%}",
                                f"bf16 at {BF16_SHARE[0]:.0%}-{BF16_SHARE[1]:.0%}"], gpu_rows(row)), ""]
    return "\n".join(lines).rstrip()


def plan(argv: list[str]) -> list[dict[str, Any]]:
    """Every stage's plan; each `--key=value` of argv applies to the stages whose args file has the key."""
    stages = ("stage1", "stage2", "end_to_end")
    keys = {stage: defaults(STAGES[stage].args) for stage in stages}
    for option in argv:
        if not option.startswith("--") or not any(option[2:].partition("=")[0] in k for k in keys.values()):
            raise CrossFuseError(f"--plan {option}: not a --key=value setting of any args file")
    return [plan_stage(stage, [a for a in argv if a[2:].partition("=")[0] in keys[stage]]) for stage in stages]
