"""Eight optimiser steps of each training regime against the reference's trajectories.

A one-step vector only checks the sign pattern of Adam's first update; eight steps on two alternating
batches also check the moment estimates, bias correction and weight decay as the reference runs them.
The steps go through the trainer's own make_optimizer and train_step with the reference settings of
the args files, on the reference-layout weights of ../shared/reference/official_weights.py.

The reference computed its trajectories with PyTorch's native CPU convolutions; oneDNN's (the default
where available) round differently, and eight steps amplify that: with oneDNN the stage-1 loss after the
last step is 3e-4 off (1.6e-5 with native convolutions). The tests therefore switch oneDNN off.

End-to-end is chaotic at eight steps: rounding alone moves the loss after the last step by about 1e-2
(8.8e-3 in float64). With the trainer's fused Adam and native convolutions it is 2.7e-3 off the
reference (2.67e-3 with 1 thread, 2.73e-3 with 2), within the END_TO_END_REL = 3e-3 asked for; the
single-tensor Adam, which rounds its update differently, lands at 3.9e-3, and Adam with beta2 = 0.99 at
7e-3. The first seven losses are held to 2e-3 (measured: 1.8e-3 at the seventh).
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from cli.entry import settings
from net.model import CrossFuse
from tests.reference_models import reference_parts
from training import stages, trainer
from training.optim import make_optimizer
from training.runtime import Runtime

STEPS = 8
END_TO_END_REL = 3e-3


@pytest.fixture(autouse=True)
def native_convolutions(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)


@pytest.fixture(scope="module")
def trajectories(reference_dir):
    path = reference_dir / "crossfuse_trajectories.pt"
    if not path.is_file():
        pytest.skip(f"reference trajectories not found at {path} (the ../shared folder beside the project)")
    return torch.load(path)


def trajectory(model: torch.nn.Module, forward, loss, config: dict, batches: list[tuple]) -> list[float]:
    """Loss before each of STEPS steps on alternating batches, then the loss after the last one."""
    job = trainer.Job("trajectory", "trajectory", Path("."), model, [], forward, loss, lambda m, e: [])
    optimizer = make_optimizer(model, config)
    runtime = Runtime(torch.device("cpu"))
    losses = [trainer.train_step(job, model, optimizer, batches[i % len(batches)], False, runtime)["total"].item()
              for i in range(STEPS)]
    with torch.no_grad():
        last = batches[STEPS % len(batches)]
        losses.append(loss(forward(model, last), last)["total"].item())
    return losses


def relative_errors(got: list[float], entry: dict) -> torch.Tensor:
    """Per-step relative error of the losses before each step and after the last."""
    want = torch.cat([entry["losses"], entry["final"].reshape(1)]).double()
    return (torch.tensor(got, dtype=torch.float64) - want).abs() / want.abs()


def pairs(trajectories) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b["ir"], b["vi"]) for b in trajectories["batches"]]


def test_stage1_trajectory(trajectories, reference_dir):
    entry = trajectories["stage1_ir"]
    config = settings(Stage1, [], "")
    assert config.lr == entry["lr"]
    model, _, _ = reference_parts(reference_dir)
    batches = [(b["ir"][..., :64, :64],) for b in trajectories["batches"]]
    got = trajectory(model.train(), lambda m, b: m(b[0]), stages.reconstruction_loss_fn(config), config, batches)
    assert relative_errors(got, entry).max() < 2e-4, (got, entry)


def test_stage2_trajectory(trajectories, reference_dir, tmp_path):
    entry = trajectories["stage2"]
    subprocess.run([sys.executable, str(reference_dir / "official_weights.py"), str(tmp_path)], check=True)
    config = settings(Stage2, [f"--reference={tmp_path}"], "")
    assert config.lr == entry["lr"]
    model = stages.STAGE2.build(config, stages.STAGE2.encoder_files(config))
    _, _, fusion = reference_parts(reference_dir)
    model.fusion.load_state_dict(fusion.state_dict())
    got = trajectory(model.train(), stages.fusion_forward, stages.fusion_loss_fn(config), config, pairs(trajectories))
    assert relative_errors(got, entry).max() < 2e-4, (got, entry)


def test_end_to_end_trajectory(trajectories, reference_dir):
    entry = trajectories["end_to_end"]
    config = settings(EndToEnd, ["--temperature=fixed"], "")
    assert config.lr == entry["lr"]
    ir, vi, fusion = reference_parts(reference_dir)
    model = CrossFuse.from_parts(ir.encoder, vi.encoder, fusion).train()
    got = trajectory(model, stages.fusion_forward, stages.fusion_loss_fn(config), config, pairs(trajectories))
    errors = relative_errors(got, entry)
    assert errors[:7].max() < 2e-3, (got, entry)
    assert errors.max() < END_TO_END_REL, (got, entry)
