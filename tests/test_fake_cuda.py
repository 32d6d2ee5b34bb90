"""The CUDA path of a training step, run on the CPU with FakeTensorMode and a fake `cuda` device.

Fake tensors carry a device, shape and dtype but no data, so the trainer's own code runs as on a GPU:
the model moved as run_epochs moves it, the batch moved by utils.device.to_device as the loop moves
it, each stage's forward and loss (training/stages.py), the finite flag, fused Adam's device-side skip,
the temperature and the row Pending.add stacks. Three faults show without a GPU:

- a tensor left on the wrong device: fake tensors refuse to mix devices, as CUDA kernels do;
- a host read (`.item()`, `float()`, `.tolist()`): fake tensors have no value to give;
- a constant copied from the host in every step: HostTraffic sees each blocking host-to-device copy,
  which on a GPU is a synchronisation (torch waits for the stream after a copy from pageable memory).
  It found them in every step: MS-SSIM's window and weights, and the Laplacian kernel, now made on the device.

What it cannot cover, found by trying (torch 2.14 without a GPU): the backward pass (autograd's engine
needs a CUDA context for a cuda tensor: "hasPrimaryContext expects a valid device index"), so a
stand-in fills each trainable parameter's gradient; bf16 autocast (torch.autocast("cuda") disables
itself without CUDA, so the step runs in fp32); torch.compile's inductor backend (the same CUDA context;
Dynamo with backend "eager" does trace fake cuda tensors); kernels, numbers, memory and NCCL.
`make gpu-check` runs those on a GPU (docs/gpu.md).
"""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.sections import stage_job
from net.model import CrossFuse
from tests.test_model import TINY
from training.optim import make_optimizer
from training.runtime import Runtime
from training.stages import mean_temperature
from training.trainer import Pending, train_step
from utils.device import to_device

aten = torch.ops.aten
CUDA = torch.device("cuda", 0)


class HostTraffic(TorchDispatchMode):
    """Records, while active, every blocking copy between the host and the device and every host read."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._to_copy.default:
            self.note(args[0], kwargs.get("device"), kwargs.get("non_blocking", False))
        elif func is aten.copy_.default:
            self.note(args[1], args[0].device, args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        elif func is aten._local_scalar_dense.default:
            self.copies.append("a host read")
        return func(*args, **kwargs)

    def note(self, source: torch.Tensor, target: torch.device | str | None, non_blocking: bool) -> None:
        if target is not None and torch.device(target).type != source.device.type and not non_blocking:
            self.copies.append(f"{tuple(source.shape)} {source.device.type} -> {torch.device(target).type}")


def stand_in_backward(model: torch.nn.Module):
    """Tensor.backward for fake CUDA tensors, which autograd cannot run without a GPU: gradients of the
    trainable parameters' device, shape and dtype."""
    def backward(self, *args, **kwargs) -> None:
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.ones_like(p)
    return backward


def on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device == CUDA for t in tensors)


@pytest.mark.parametrize("stage", ["stage1", "stage2", "end_to_end"])
def test_a_training_step_of_each_stage_stays_on_the_device(monkeypatch, stage):
    job, config = stage_job(stage)  # the args file's model, forward and loss
    host = [torch.rand(2, 1, 64, 64) * 255 for _ in range(1 if stage == "stage1" else 2)]  # as the loader gives
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = job.model.to(CUDA)  # once, before training: a blocking copy is fine here
        optimizer = make_optimizer(model, config)
        good = torch.ones((), device=CUDA)
        monkeypatch.setattr(torch.Tensor, "backward", stand_in_backward(model))
        with HostTraffic() as traffic:  # what the loop does in every step
            terms = train_step(job, model, optimizer, to_device(host, CUDA), False, Runtime(CUDA), good)
            temperature = None if stage == "stage1" else mean_temperature(model)
            pending = Pending()
            pending.add(terms, temperature, good, (config.lr, 1, 1))
    assert traffic.copies == []
    assert on_cuda(*terms.values(), *pending.rows, good)
    state = [v for s in optimizer.state.values() for v in s.values()]
    assert state and on_cuda(*state, *model.parameters(), *model.buffers())


def test_inference_stays_on_the_device():
    """fuse.py's path: eval mode, row bands and lazily made shallow features."""
    model = CrossFuse(TINY).eval()
    ir, vi = (torch.rand(1, 1, 40, 56) * 255 for _ in range(2))
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        model.to(CUDA)
        with HostTraffic() as traffic:
            out = model(*to_device([ir, vi], CUDA))
    assert traffic.copies == [] and out.device == CUDA and out.shape == ir.shape


def test_the_faults_it_is_for_are_caught():
    """A constant copied from the host, a tensor left there and a host read: each one fails."""
    with FakeTensorMode(allow_non_fake_inputs=True), HostTraffic() as traffic:
        x = torch.ones(2, 3, device=CUDA)
        x * torch.ones(3).to(x)
        with pytest.raises(RuntimeError, match="device"):
            x + torch.ones(3)
        with pytest.raises(Exception, match="_local_scalar_dense"):
            x.sum().item()
    assert traffic.copies[0] == "(3,) cpu -> cuda"
