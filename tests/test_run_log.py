"""What a user watching a long run sees and keeps: the log line's pace (throughput, time left, GPU
memory), optional TensorBoard logging, and the code version and machine recorded with every start."""
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import train_autoencoder
import train_end_to_end
from cli.entry import run_main
from formats import run_layout
from tests.tiny import ENCODER, FUSION, train_args
from training import run_log
from training.job import Job
from training.run_log import pace, steps_left
from utils.provenance import code_version

PACE = r" - \d+\.\d (pairs|images)/s - \d+\.\d (s|min|h) left$"


def job(later: int = 0) -> Job:
    return Job("j", "J", Path("."), torch.nn.Identity(), [], lambda m, b: b, lambda o, b: {}, lambda m, e: [],
               later=later)


def test_time_left_counts_this_epoch_the_later_ones_and_the_later_jobs():
    assert steps_left(job(), epoch=0, epochs=2, batch=10, batches=100) == 90 + 100
    assert steps_left(job(later=1), epoch=1, epochs=2, batch=100, batches=100) == 0 + 2 * 100


def test_pace_reads_clocks_and_on_cuda_the_allocator(monkeypatch):
    assert pace(job(), 8, 0.5, 7200, torch.device("cpu")) == "16.0 pairs/s - 1.00 h left"
    monkeypatch.setattr(run_log, "peak_memory", lambda device: 5 * 2**30 + 2**29)  # torch.cuda's counter
    assert pace(job(), 8, 0.5, 60, torch.device("cuda")) == "16.0 pairs/s - 30.0 s left - GPU peak 5.50 GiB"


class Recorder:
    """A stand-in for torch.utils.tensorboard.SummaryWriter that keeps what it is given."""

    made: list["Recorder"] = []

    def __init__(self, log_dir: str, purge_step: int | None = None):
        self.log_dir, self.purge_step, self.scalars, self.images, self.closed = log_dir, purge_step, {}, [], False
        Recorder.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, value))

    def add_image(self, tag: str, image, step: int, dataformats: str) -> None:
        self.images.append((tag, step, image.shape, image.dtype, dataformats))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def tensorboard(monkeypatch) -> type[Recorder]:
    Recorder.made = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Recorder))
    return Recorder


def test_a_run_logs_its_pace_tensorboard_and_provenance(demo_pairs, tmp_path, tensorboard, capsys):
    train_end_to_end.main(train_args(demo_pairs, tmp_path, *ENCODER, *FUSION, "--epochs=2", "--tensorboard"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("🔄 E2E - ") and "Batch" in line]
    assert len(lines) == 6 and all(re.search(PACE, line) for line in lines)
    assert lines[-1].endswith(" - 0.0 s left") and "GPU" not in lines[0]
    folder = tmp_path / "end_to_end"
    writer, = tensorboard.made
    assert Path(writer.log_dir) == folder / "tensorboard" / "end_to_end" and writer.closed
    log = run_layout.latest_losses(folder, "end_to_end", "")
    assert set(writer.scalars) == {"loss/intensity", "loss/gradient", "loss/total", "lr", "temperature"}
    assert writer.scalars["loss/total"] == list(enumerate(log.loss.tolist(), start=1))
    assert [step for step, _ in writer.scalars["lr"]] == [1, 2, 3, 4, 5, 6]
    assert [(tag, step, dtype) for tag, step, _, dtype, _ in writer.images] == [("preview", 1, "uint8"),
                                                                                ("preview", 2, "uint8")]
    history = json.loads((folder / "config_history_end_to_end.json").read_text())
    assert history[0]["code"] == code_version() and history[0]["machine"]["torch"] == torch.__version__
    assert history[0]["config"]["tensorboard"] is True


def test_a_resumed_run_hides_the_steps_the_killed_run_logged_after_its_checkpoint(demo_pairs, tmp_path, tensorboard):
    argv = train_args(demo_pairs, tmp_path, *ENCODER, "--modality=ir", "--tensorboard")
    train_autoencoder.main([*argv, "--epochs=1"])
    train_autoencoder.main([*argv, "--epochs=2", "--resume"])
    first, resumed = tensorboard.made
    assert (first.purge_step, resumed.purge_step) == (None, 4)  # 3 steps done: events from step 4 on are hidden
    assert [step for step, _ in resumed.scalars["loss/total"]] == [4, 5, 6]


def test_stage1_logs_images_per_second(demo_pairs, tmp_path, capsys):
    train_autoencoder.main(train_args(demo_pairs, tmp_path, *ENCODER, "--epochs=1", "--modality=vi"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "Batch" in line]
    assert lines and all(re.search(PACE, line) and "images/s" in line for line in lines)


def test_tensorboard_without_its_package_is_one_line_before_any_work(demo_pairs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where tensorboard is not installed
    code = run_main(train_end_to_end.main, train_args(demo_pairs, tmp_path / "run", "--tensorboard"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --tensorboard needs the tensorboard package")
    assert "pip install tensorboard" in err and not (tmp_path / "run").exists()


def test_outside_a_git_clone_the_code_version_says_so(tmp_path):
    assert code_version(tmp_path) == "no git"
    assert re.fullmatch(r"[0-9a-f]{40}(\+changes)?|no git", code_version())
