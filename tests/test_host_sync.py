"""The training loop reads the device only at log intervals and checkpoints, its non-finite guard
skips updates on the device, and it sizes its threads and workers to the machine.

There is no GPU here, so host synchronisations are counted where they start on any device: every
`.item()`, `float()`, `bool()` or `int()` of a tensor reaches aten._local_scalar_dense (counted by a
dispatch mode, torch's internals included), and `.tolist()`, `.numpy()` and `.cpu()` are spied on.
"""
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from args_end_to_end import EndToEnd
from args_two_stage import Stage1
from checks.device_steps import Images, SquaredError
from cli.training_start import settings
from dataio.datasets import make_loader
from net.encoder import AutoEncoder
from net.model import CrossFuse
from tests.test_model import TINY
from training import stages, trainer
from training.job import Job
from training.optim import make_optimizer, step_if
from training.runtime import Runtime
from training.trainer import train, train_step
from utils.cores import free_threads, loader_workers, pick_threads, process_cores
from utils.errors import CrossFuseError

BATCHES = len(Images())


def tiny_run(tmp_path: Path, step: int, nan_at: tuple[int, ...] = ()) -> tuple[Job, dict]:
    model = nn.Conv2d(1, 1, 3, padding=1)
    config = settings(EndToEnd, [f"--out_root={tmp_path}", "--device=cpu", "--workers=0", "--batch=1",
                             "--epochs=1", f"--log_every={step}", "--checkpoint_every=1000", "--preview_images=0"], "")
    job = Job("tiny", "tiny", tmp_path, model, Images(), lambda m, b: m(b[0]), SquaredError(model, nan_at),
              lambda m, e: [])
    return job, config


class Syncs(TorchDispatchMode):
    """Counts device-to-host reads while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        super().__init__()
        self.count = 0
        for name in ("tolist", "numpy", "cpu"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self.spy(original))

    def spy(self, original):
        def counted(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)
        return counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("step", [BATCHES, 4, 1])
def test_one_host_read_per_log_interval(tmp_path, monkeypatch, step):
    """12 steps logged every `step` batches read the device 12 / step times: a per-step .item() fails this."""
    job, config = tiny_run(tmp_path, step)
    with Syncs(monkeypatch) as syncs:
        iter(make_loader(Images(), 1, True, 0, 0, 0))  # the epoch's order and seed: CPU tensors read once
    per_epoch = syncs.count
    with Syncs(monkeypatch) as syncs:
        train(job, config, Runtime(torch.device("cpu")))
    assert job.loss.calls == BATCHES
    assert syncs.count == per_epoch + BATCHES // step


def test_non_finite_step_and_all_later_ones_are_skipped_on_the_device(tmp_path):
    """NaN at step 3 of a 4-step log interval: steps 3 and 4 (finite again) change nothing, and the
    read after step 4 names step 3."""
    job, config = tiny_run(tmp_path, step=4, nan_at=(3,))
    with pytest.raises(CrossFuseError, match=r"non-finite loss \(total=nan\) at epoch 1, batch 3 of tiny; stopped "
                                             r"before updating, no checkpoint had been written yet"):
        train(job, config, Runtime(torch.device("cpu")))
    weights = job.loss.weights
    assert job.loss.calls == 4
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])  # steps 1, 2 applied
    assert torch.equal(weights[2], weights[3]) and torch.equal(weights[3], job.model.weight)  # 3 and 4 were not


@pytest.mark.parametrize("fused", [True, False])
def test_step_if_skips_update_moments_and_count(fused):
    """A step with NaN gradients and good = 0 leaves parameters and Adam state exactly as they were."""
    torch.manual_seed(0)
    ours, plain = nn.Linear(4, 2), nn.Linear(4, 2)
    plain.load_state_dict(ours.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=0.9, fused=fused) for m in (ours, plain)]
    for good in (1.0, 0.0, 1.0):
        for p in ours.parameters():
            p.grad = torch.full_like(p, 0.5 if good else float("nan"))
        step_if(optimizers[0], torch.tensor(good))
        if good:
            for p in plain.parameters():
                p.grad = torch.full_like(p, 0.5)
            optimizers[1].step()
    for a, b in zip(ours.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)
        for key, value in optimizers[1].state[b].items():
            assert torch.equal(optimizers[0].state[a][key], value), key


class SlowImages(Images):
    """Decoding that takes one second of the test's clock per image, and training steps none."""

    def __init__(self, clock: list[float]):
        super().__init__()
        self.clock = clock

    def __getitem__(self, i: int) -> torch.Tensor:
        self.clock[0] += 1.0
        return super().__getitem__(i)


@pytest.mark.parametrize("slow", [True, False])
def test_waiting_for_data_suggests_the_cache(tmp_path, capsys, monkeypatch, slow):
    clock = [0.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])  # the loop's clock is the test's
    job, config = tiny_run(tmp_path, step=4)
    if slow:
        job.dataset = SlowImages(clock)
    train(job, config, Runtime(torch.device("cpu")))
    assert capsys.readouterr().err.count("--cache") == int(slow)  # once per run, not at every log line


def test_thread_and_worker_defaults(monkeypatch):
    cores = process_cores()
    assert 1 <= loader_workers() <= min(8, cores)
    assert 1 <= free_threads(0.05) <= cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert pick_threads() == torch.get_num_threads()  # the user's setting wins
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))  # more processes than cores: one each
    assert process_cores() == 1 and loader_workers() == 1


@pytest.mark.parametrize("stage", ["stage1", "stage2", "end_to_end"])
def test_real_training_steps_never_read_the_device(monkeypatch, stage):
    """Model, loss (MS-SSIM's range rule included) and the guarded update of every stage: no reads."""
    torch.manual_seed(0)
    if stage == "stage1":
        model, loss = AutoEncoder(TINY), stages.reconstruction_loss_fn(settings(Stage1, [], ""))
        forward, batch = (lambda m, b: m(b[0])), (torch.rand(2, 1, 32, 32) * 255,)
    else:
        model = CrossFuse(TINY, frozen_encoders=stage == "stage2")
        loss, forward = stages.fusion_loss_fn(settings(EndToEnd, [], "")), stages.fusion_forward
        batch = (torch.rand(2, 1, 32, 32) * 255, torch.rand(2, 1, 32, 32) * 255)
    job = Job(stage, stage, Path("."), model.train(), [], forward, loss, lambda m, e: [])
    optimizer = make_optimizer(model, Stage1(lr=1e-3, weight_decay=0.9))
    params = optimizer.param_groups[0]["params"]
    before = [p.detach().clone() for p in params]
    with Syncs(monkeypatch) as syncs:
        train_step(job, model, optimizer, batch, False, Runtime(torch.device("cpu")), torch.ones(()))
    assert syncs.count == 0
    # The update was applied to every parameter (not skipped): Adam counted the step for each, and each
    # one with a clearly non-zero gradient moved. Whether a parameter whose gradient is zero up to rounding
    # moves depends on that rounding (the output BatchNorm bias: the min-max stretch cancels any constant).
    assert all(optimizer.state[p]["step"].item() == 1 for p in params)
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True) if p.grad.abs().max() > 1e-6)
