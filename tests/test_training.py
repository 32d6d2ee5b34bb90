"""The three training pipelines: faithful first steps, outputs, overrides, resume, NaN and DDP (tiny models)."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import train_autoencoder
import train_end_to_end
import train_fusion
from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from cli.entry import run_main
from cli.training_start import settings
from evaluation.runs import load_run
from formats import run_layout
from formats.checkpoint import load_crossfuse, read_checkpoint
from net.encoder import AutoEncoder
from net.model import CrossFuse
from tests.reference_models import reference_parts
from tests.scripts import Result, run_script
from tests.test_model import TINY
from tests.tiny import ENCODER, FUSION
from tests.tiny import train_args as args
from training.job import Job
from training.msssim import ValidFilter
from training.optim import make_optimizer
from training.resume import state_path
from training.runtime import KILL_AT, Runtime
from training.settings import parse_overrides
from training.stages import END_TO_END, STAGE2, fusion_forward, fusion_job, fusion_loss_fn, reconstruction_loss_fn
from training.trainer import train, train_step
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(demo_pairs) -> Path:
    return demo_pairs


# ------------------------------------------------------------------ faithful first optimiser steps

@pytest.fixture(scope="module")
def vectors(reference_dir):
    return torch.load(reference_dir / "crossfuse_vectors.pt")


def first_step(job: Job, model: torch.nn.Module, config: dict, batch: tuple) -> tuple[float, float]:
    optimizer = make_optimizer(model, config)
    runtime = Runtime(torch.device("cpu"))
    before = train_step(job, model, optimizer, batch, False, runtime)["total"].item()
    with torch.no_grad():
        after = job.loss(job.forward(model, batch), batch)["total"].item()
    return before, after


def fake_job(model, forward, loss) -> Job:
    return Job("test", "test", Path("."), model, [], forward, loss, lambda m, e: [])


def test_stage1_first_step_matches_reference(vectors, reference_dir):
    config = settings(Stage1, [], "")
    model, _, _ = reference_parts(reference_dir)
    loss = reconstruction_loss_fn(config)
    v = vectors["step_stage1_ir"]
    before, after = first_step(fake_job(model.train(), lambda m, b: m(b[0]), loss), model, config, (v["x"],))
    assert before == pytest.approx(v["loss_before"].item(), rel=1e-4)
    assert after == pytest.approx(v["loss_after"].item(), rel=1e-4)


def test_stage2_first_step_matches_reference(vectors, reference_dir, tmp_path):
    subprocess.run([sys.executable, str(reference_dir / "official_weights.py"), str(tmp_path)], check=True)
    config = settings(Stage2, [f"--reference={tmp_path}"], "")
    model = STAGE2.build(config, STAGE2.encoder_files(config))
    _, _, fusion = reference_parts(reference_dir)
    model.fusion.load_state_dict(fusion.state_dict())
    assert not any(p.requires_grad for p in model.ir_encoder.parameters())
    v = vectors["step_stage2"]
    job = fake_job(model.train(), fusion_forward, fusion_loss_fn(config))
    before, after = first_step(job, model, config, (v["ir"], v["vi"]))
    assert before == pytest.approx(v["loss_before"].item(), rel=1e-4)
    assert after == pytest.approx(v["loss_after"].item(), rel=1e-4)


def test_end_to_end_first_step_matches_reference(vectors, reference_dir):
    config = settings(EndToEnd, ["--temperature=fixed"], "")
    ir, vi, fusion = reference_parts(reference_dir)
    model = CrossFuse.from_parts(ir.encoder, vi.encoder, fusion).train()
    assert all(p.requires_grad for p in model.parameters())
    v = vectors["step_end_to_end"]
    job = fake_job(model, fusion_forward, fusion_loss_fn(config))
    before, after = first_step(job, model, config, (v["ir"], v["vi"]))
    assert before == pytest.approx(v["loss_before"].item(), rel=1e-4)
    assert after == pytest.approx(v["loss_after"].item(), rel=1e-4)


# ------------------------------------------------------------------------------ pipelines and files

def run(script: str, argv: list[str]) -> Result:
    return run_script(script, *argv)


def run_process(script: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """A script in a process of its own: for a run that is to be killed."""
    return subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          **kw)


@pytest.fixture(scope="module")
def two_stage_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    train_autoencoder.main(args(data, out, *ENCODER, "--epochs=2"))
    train_fusion.main(args(data, out, *FUSION, "--epochs=2", f"--test_dir={data / 'test'}"))
    return out


def test_two_stage_writes_reference_named_outputs(two_stage_run, data):
    out = two_stage_run
    for epoch in (1, 2):
        for m in ("ir", "vi"):
            assert read_checkpoint(out / f"autoencoder/auto_encoder_epoch_{epoch}_{m}.model").kind == "autoencoder"
        assert read_checkpoint(out / f"transfuse/fusetrans_epoch_{epoch}.model").kind == "crossfuse"
        assert (out / f"transfuse/loss/loss_data_trans_e{epoch - 1}.mat").is_file()
        assert (out / f"transfuse/preview/trans_epoch_{epoch}.png").is_file()
        assert len(list((out / f"transfuse/test/epoch_{epoch}").glob("*.png"))) == 2
    model = load_crossfuse(out / "transfuse/fusetrans_epoch_2.model")
    stage1 = read_checkpoint(out / "autoencoder/auto_encoder_epoch_2_ir.model").state
    for key, value in model.ir_encoder.state_dict().items():
        assert torch.equal(value, stage1[f"encoder.{key}"]), f"stage 2 changed the frozen encoder: {key}"


def test_loss_file_contents(two_stage_run):
    mat = scipy.io.loadmat(two_stage_run / "transfuse/loss/loss_data_trans_e1.mat")
    steps = 2 * 3  # 6 pairs, batch 2, 2 epochs
    for key in ("loss_data", "loss_intensity", "loss_gradient", "lr", "temperature", "epoch"):
        assert mat[key].shape == (1, steps), key
    np.testing.assert_allclose(mat["loss_data"], mat["loss_intensity"] + 10 * mat["loss_gradient"], rtol=1e-5)
    assert mat["epoch_time"].shape == (1, 2) and (mat["epoch_time"] > 0).all()
    assert mat["peak_memory"].shape == (1, 2) and (mat["peak_memory"] > 0).all()
    assert str(mat["memory_kind"][0]) == "rss"
    assert list(mat["epoch"][0]) == [1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(mat["lr"][0], [1e-3] * 6)  # step schedule: full lr for 2 epochs
    first = scipy.io.loadmat(two_stage_run / "transfuse/loss/loss_data_trans_e0.mat")
    np.testing.assert_array_equal(first["loss_data"][0], mat["loss_data"][0, :3])  # cumulative


def test_end_to_end_outputs_log_and_cosine(data, tmp_path, capsys):
    train_end_to_end.main(args(data, tmp_path, *ENCODER, *FUSION, "--epochs=2", "--temperature=head"))
    logged = capsys.readouterr().out
    assert "🔄 E2E - " in logged and "Epoch 1/2 - Batch 1/3 - lr:0.001000 - temp:" in logged
    folder = tmp_path / "end_to_end"
    for name in ("end_to_end_fusion_epoch_2.model", "end_to_end_ir_encoder_epoch_2.model",
                 "end_to_end_vi_encoder_epoch_2.model", "loss/loss_data_end_to_end_e1.mat"):
        assert (folder / name).is_file(), name
    mat = scipy.io.loadmat(folder / "loss/loss_data_end_to_end_e1.mat")
    np.testing.assert_allclose(mat["lr"][0, :3], 1e-3)
    np.testing.assert_allclose(mat["lr"][0, 3:], 1e-6 + (1e-3 - 1e-6) / 2)  # cosine, half way
    assert not np.allclose(mat["temperature"][0], 1.0)  # learned
    model = load_crossfuse(folder / "end_to_end_fusion_epoch_2.model")
    assert model.cfg.temperature == "head"


def test_overrides_are_typed_and_checked():
    base = {"epochs": 32, "lr": 1e-3, "amp": False, "dataset": "x", "test_dir": ""}
    got = parse_overrides(base, ["--epochs=2", "--lr=1e-4", "--amp", "--dataset=y"])
    assert got == {"epochs": 2, "lr": 1e-4, "amp": True, "dataset": "y", "test_dir": ""}
    with pytest.raises(CrossFuseError, match="--epoch: unknown setting; did you mean --epochs"):
        parse_overrides(base, ["--epoch=2"])
    with pytest.raises(CrossFuseError, match="--epochs=two: expected int"):
        parse_overrides(base, ["--epochs=two"])
    with pytest.raises(CrossFuseError, match="--amp=maybe: expected true or false"):
        parse_overrides(base, ["--amp=maybe"])
    with pytest.raises(CrossFuseError, match="--lr needs a value"):
        parse_overrides(base, ["--lr"])


def test_missing_dataset_points_at_demo(tmp_path):
    result = run("train_end_to_end.py", [f"--dataset={tmp_path / 'nope'}", f"--out_root={tmp_path}"])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "dataset not found" in result.stderr and "--demo" in result.stderr


def test_unknown_setting_is_one_line(tmp_path):
    result = run("train_fusion.py", ["--epocs=3"])
    assert result.returncode == 2 and result.stderr.strip() == "error: --epocs: unknown setting; did you mean --epochs?"


def test_stage2_without_stage1_says_what_to_run(data, tmp_path):
    result = run("train_fusion.py", args(data, tmp_path))
    assert result.returncode == 2 and "run train_autoencoder.py first" in result.stderr


# ------------------------------------------------------------------------------ safety: NaN, resume

class NanAfter:
    """A loss that turns NaN at the n-th call."""

    def __init__(self, n: int):
        self.calls, self.n = 0, n

    def __call__(self, out, batch):
        self.calls += 1
        total = (out - batch[0]).pow(2).mean()
        return {"total": total * float("nan") if self.calls >= self.n else total}


def test_non_finite_loss_stops_and_keeps_last_checkpoint(data, tmp_path):
    config = settings(EndToEnd, args(data, tmp_path, *ENCODER, *FUSION, "--epochs=3", "--checkpoint_every=2"), "")
    job = fusion_job(END_TO_END, config, torch.device("cpu"), [])
    model = job.model
    job.loss = NanAfter(5)  # steps 1-4 fine (checkpoints after steps 2, 3 = epoch end, and 4), step 5 NaN
    with pytest.raises(CrossFuseError, match=r"non-finite loss \(total=nan\) at epoch 2, batch 2 of end_to_end"):
        train(job, config, Runtime(torch.device("cpu")))
    saved = torch.load(state_path(job), weights_only=False)
    assert saved["progress"]["epoch"] == 1 and saved["progress"]["batch"] == 1
    assert len(saved["progress"]["history"]["total"]) == 4
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_resume_after_sigkill_gives_identical_losses(data, tmp_path):
    """Killed at step 5 (epoch 2, batch 2: one step after its last checkpoint), as a crash would, the run
    resumes from the checkpoint and ends exactly as an uninterrupted one."""
    common = [*ENCODER, *FUSION, "--epochs=4", "--checkpoint_every=2", "--image_size=48"]
    straight = tmp_path / "straight"
    assert run("train_end_to_end.py", args(data, straight, *common)).returncode == 0
    killed = tmp_path / "killed"
    crashed = run_process("train_end_to_end.py", args(data, killed, *common),
                          env={**os.environ, KILL_AT: "end_to_end:5"})
    assert crashed.returncode == -signal.SIGKILL
    interrupted = torch.load(killed / "end_to_end" / "training_state_end_to_end.pt", weights_only=False)["progress"]
    assert (interrupted["epoch"], interrupted["batch"]) == (1, 1)
    resumed = run("train_end_to_end.py", args(data, killed, *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming end_to_end" in resumed.stdout
    a = scipy.io.loadmat(straight / "end_to_end/loss/loss_data_end_to_end_e3.mat")
    b = scipy.io.loadmat(killed / "end_to_end/loss/loss_data_end_to_end_e3.mat")
    for key in ("loss_data", "loss_intensity", "loss_gradient", "lr", "temperature"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_two_process_ddp_on_cpu(data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "train_end_to_end.py",
                             *args(data, tmp_path, *ENCODER, *FUSION, "--epochs=1", "--batch=1")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "x 2 processes" in result.stdout
    assert result.stdout.count("epoch 1 done") == 1  # only rank 0 logs and writes
    mat = scipy.io.loadmat(tmp_path / "end_to_end/loss/loss_data_end_to_end_e0.mat")
    assert mat["loss_data"].shape == (1, 3)  # 6 pairs over 2 ranks, batch 1
    assert (tmp_path / "end_to_end/end_to_end_fusion_epoch_1.model").is_file()


def free_port() -> str:
    """A port no process listens on now (the OS picks it), so two suites on one machine never collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_torchrun_with_one_process_takes_the_ddp_path(data, tmp_path, monkeypatch, capsys):
    """What `torchrun --nproc_per_node=1` sets: a process group (gloo here, NCCL on CUDA) and DDP, as for N > 1."""
    env = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_main(train_end_to_end.main, args(data, tmp_path, *ENCODER, *FUSION, "--epochs=1")) == 0
    assert "on cpu x 1 process (DDP)" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()  # run_main ends the group
    assert (tmp_path / "end_to_end/end_to_end_fusion_epoch_1.model").is_file()


@pytest.mark.parametrize("stage", ["stage1", "fusion"])
def test_a_float64_step_stays_in_float64(stage):
    """The model, the losses and MS-SSIM follow their input's dtype: a float64 training step gives float64
    loss terms and gradients (a float32 constant inside would stop it or round it to float32)."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 40, 40, dtype=torch.float64) * 255
    if stage == "stage1":
        model, batch = AutoEncoder(TINY).double().train(), (x,)
        job = fake_job(model, lambda m, b: m(b[0]), reconstruction_loss_fn(settings(Stage1, [], "")))
    else:
        model, batch = CrossFuse(TINY).double().train(), (x, x.flip(-1))
        job = fake_job(model, fusion_forward, fusion_loss_fn(settings(EndToEnd, [], "")))
    terms = train_step(job, model, make_optimizer(model, settings(EndToEnd, [], "")), batch, False,
                       Runtime(torch.device("cpu")))
    assert {t.dtype for t in terms.values()} == {torch.float64}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float64}
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("kernel", [(11, 1), (1, 11), (3, 5)])
def test_loss_filter_gradient_equals_the_convolutions(kernel):
    """MS-SSIM's filters take their gradient as a forward correlation with the flipped kernel: the
    same gradient autograd gives for F.conv2d (an asymmetric kernel shows the flip is right)."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 30, 27, requires_grad=True)
    k = torch.randn(1, 1, *kernel)
    expected = torch.nn.functional.conv2d(x, k)
    ours = ValidFilter.apply(x, k)
    assert torch.equal(ours, expected)
    g = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(expected, x, g)[0],
                               rtol=1e-5, atol=1e-5)


def test_a_run_saved_under_the_old_setting_names_resumes_and_compares(data, tmp_path, capsys):
    """Runs written before `batch_size` became `batch` (and `step` became `log_every`) keep working."""
    common = [*ENCODER, *FUSION, f"--test_dir={data / 'test'}", "--preview_images=0"]
    train_end_to_end.main(args(data, tmp_path, *common, "--epochs=1"))
    folder = tmp_path / "end_to_end"
    old = {"batch": "batch_size", "log_every": "step"}
    state_file = folder / "training_state_end_to_end.pt"
    state = torch.load(state_file, weights_only=False)
    state["config"] = {old.get(k, k): v for k, v in state["config"].items()}
    torch.save(state, state_file)
    mat = scipy.io.loadmat(folder / "loss/loss_data_end_to_end_e0.mat")
    config = json.loads(str(mat["config"][0]))
    mat["config"] = json.dumps({old.get(k, k): v for k, v in config.items()})
    scipy.io.savemat(folder / "loss/loss_data_end_to_end_e0.mat", {k: v for k, v in mat.items() if k[0] != "_"})
    capsys.readouterr()
    train_end_to_end.main(args(data, tmp_path, *common, "--epochs=2", "--resume"))
    captured = capsys.readouterr()
    assert "resuming end_to_end at epoch 2" in captured.out and "batch" not in captured.err
    log = run_layout.latest_losses(folder, "end_to_end", "")
    assert log.loss.size == 6 and "batch" in log.config  # written anew under the new names
    mat["config"] = json.dumps({old.get(k, k): v for k, v in log.config.items()})
    scipy.io.savemat(folder / "loss/loss_data_end_to_end_e1.mat", {k: v for k, v in mat.items() if k[0] != "_"}
                     | {k: v for k, v in scipy.io.loadmat(log.path).items() if k[0] != "_" and k != "config"})
    run = load_run("end-to-end", "old", folder, None)
    assert run.log.config["batch"] == 2 and "batch_size" not in run.log.config
