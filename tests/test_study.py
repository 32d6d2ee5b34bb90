"""study.py and the warm-start arm on tiny real training runs: resume after a kill, --only, --dry-run, --slurm."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import study
import train_autoencoder
import train_end_to_end
from dataio.demo_data import make_demo_dataset
from formats import run_layout
from formats.checkpoint import read_checkpoint
from training.runtime import KILL_AT
from training.stages import ARMS
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image_size=32", "--batch=2", "--workers=0", "--train_num=0", "--shallow=4", "--growth=4", "--deep=8",
        "--decoder=8", "--tile=4", "--heads=2", "--mlp_ratio=2", "--epochs=1", "--log_every=1", "--preview_images=1",
        "--checkpoint_every=1", "--device=cpu"]
FUSION_ONLY = ("--tile", "--heads", "--mlp_ratio")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only spin on a busy machine


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_train=6, n_test=2, size=32)


def study_args(data: Path, root: Path, *extra: str, arms: str = "two-stage,end-to-end,warm-start") -> list[str]:
    return ["--arms", arms, "--seeds", "0", "--root", str(root), "--name", "s", "--test", str(data / "test"),
            "--curve-images", "1", f"--dataset={data / 'train'}", *TINY, *extra]


def run_study(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "study.py", *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_lists_runs_and_trains_nothing(data, tmp_path, capsys):
    assert study.main(study_args(data, tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["stage-1:0", "two-stage:0", "end-to-end:0", "warm-start:0"]
    assert all(" to train " in line for line in lines[:4])
    assert "train_fusion.py" in lines[1] and "--ir_encoder=" in lines[1] and "auto_encoder_epoch_1_ir.model" in lines[1]
    assert f"--init_from={tmp_path / 's' / 'stage-1' / 'seed_0'}" in lines[3]
    assert "--seed=0" in lines[2] and "--epochs=1" in lines[2] and "--resume" not in out
    assert "4 of 4 runs to train" in out
    assert not (tmp_path / "s").exists()
    assert study.main(study_args(data, tmp_path, "--dry-run", "--nproc", "2", "--only", "end-to-end:0")) == 0
    only = capsys.readouterr().out.splitlines()
    assert len(only) == 2 and only[0].startswith("end-to-end:0") and "1 of 1 runs to train" in only[1]
    assert f"-m torch.distributed.run --standalone --nproc_per_node=2 {ROOT / 'train_end_to_end.py'}" in only[0]


def test_bad_options_are_one_line_errors(data, tmp_path, capsys):
    for extra, message in ((["--bogus=1"], "--bogus=1: not a study option"),
                           (["--out_root=x"], "study.py sets out_root itself"),
                           (["--epochs=two"], "--epochs=two: expected int"),
                           (["--only", "warm-start:7"], "--only warm-start:7: not a run of this study")):
        assert study.main(study_args(data, tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_killed_study_resumes_without_retraining_finished_runs(data, tmp_path):
    argv = [*study_args(data, tmp_path, "--batch=1", arms="two-stage,end-to-end"), "--curve-images", "0"]
    s = tmp_path / "s"
    crashed = subprocess.run([sys.executable, "study.py", *argv], cwd=ROOT, env={**ENV, KILL_AT: "trans:3"},
                             capture_output=True, text=True, timeout=300)  # stage 2 dies at its third step
    assert crashed.returncode == 2 and "two-stage:0" in crashed.stderr, crashed.stdout + crashed.stderr
    state = run_layout.state_file(s / "two-stage" / "seed_0" / "transfuse", "trans")
    assert state.is_file(), "stage 2 never started"
    stage1 = sorted((s / "stage-1" / "seed_0" / "autoencoder").glob("*.model"))
    assert stage1
    stamps = {p: p.stat().st_mtime_ns for p in stage1}

    result = run_study(argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming trans at epoch" in result.stdout
    assert "study: 1/3 runs done" in result.stdout  # stage 1 finished before the kill
    assert "study: 2/3 runs done, about" in result.stdout and "study: 3/3 runs done" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in stage1} == stamps  # not retrained
    log = run_layout.latest_losses(s / "two-stage" / "seed_0" / "transfuse", "trans", "")
    assert log.series["loss_data"].size == 6  # 1 epoch x 6 batches: resumed, not restarted on top
    report = json.loads((s / "report" / "report.json").read_text())
    assert set(report["runs"]) == {"two-stage", "end-to-end"} and report["single_run"]
    assert report["training_cost"]["two-stage"][0]["stages"].keys() == {"stage 1 (IR)", "stage 1 (VIS)", "stage 2"}
    assert (s / "report" / "table.tex").is_file() and (s / "report" / "report.md").is_file()


    for arm in ("two-stage", "end-to-end"):  # retrain both arms at once, one per "GPU" (the CPU here)
        shutil.rmtree(s / arm)
    concurrent = run_study([*argv, "--no-compare", "--gpus", "0,1"])
    assert concurrent.returncode == 0, concurrent.stdout + concurrent.stderr
    assert "study: training two-stage:0 in" in concurrent.stdout and "on GPU 0" in concurrent.stdout
    assert "study: training end-to-end:0 in" in concurrent.stdout and "on GPU 1" in concurrent.stdout
    assert "study: 1/3 runs done" in concurrent.stdout and "study: 3/3 runs done" in concurrent.stdout
    assert "stage-1:0 in" not in concurrent.stdout
    for arm, folder in (("two-stage", "transfuse"), ("end-to-end", "end_to_end")):
        assert "epoch 1 done" in (s / arm / "seed_0" / "train.log").read_text()
        assert ARMS[arm].fusion_path(s / arm / "seed_0" / folder, 1).is_file()


def test_slurm_scripts_and_one_array_task_run_locally(data, tmp_path):
    argv = study_args(data, tmp_path)
    assert study.main([*argv, "--slurm"]) == 0
    folder = tmp_path / "s" / "slurm"
    array = (folder / "array.sbatch").read_text()
    assert array.startswith("#!/bin/bash\n") and "#SBATCH --array=0-2" in array
    assert "RUNS=(two-stage:0 end-to-end:0 warm-start:0)" in array
    assert '--only "${RUNS[$SLURM_ARRAY_TASK_ID]}"' in array and "--slurm" not in array
    assert f"cd {Path.cwd()}" in array and "study.py --arms two-stage,end-to-end,warm-start" in array
    compare = (folder / "compare.sbatch").read_text()
    assert "--only" not in compare and "study.py --arms" in compare
    submit = (folder / "submit.sh").read_text()
    assert "sbatch --parsable" in submit and "--dependency=afterok:" in submit and "compare.sbatch" in submit
    assert os.access(folder / "submit.sh", os.X_OK)

    task = subprocess.run(["bash", str(folder / "array.sbatch")], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "SLURM_ARRAY_TASK_ID": "2"}, timeout=300)
    assert task.returncode == 0, task.stdout + task.stderr
    assert "training stage-1:0" in task.stdout and "training warm-start:0" in task.stdout
    s = tmp_path / "s"
    assert not (s / "two-stage").exists() and not (s / "end-to-end").exists() and not (s / "report").exists()
    warm = s / "warm-start" / "seed_0" / "end_to_end_warm"
    meta = read_checkpoint(ARMS["warm-start"].fusion_path(warm, 1)).meta
    assert meta["approach"] == "end-to-end, warm start"
    assert meta["encoders_from"] == [str(s / "stage-1" / "seed_0" / "autoencoder" / f"auto_encoder_epoch_1_{m}.model")
                                     for m in ("ir", "vi")]
    dry = run_study([*argv, "--dry-run"])
    status = {line.split()[0]: line.split()[1] for line in dry.stdout.splitlines()[:4]}
    assert status == {"stage-1:0": "done", "two-stage:0": "to", "end-to-end:0": "to", "warm-start:0": "done"}


def test_warm_start_begins_from_the_stage1_encoders(data, tmp_path):
    common = [f"--dataset={data / 'train'}", f"--out_root={tmp_path}", *TINY]
    train_autoencoder.main([a for a in common if a.split("=")[0] not in FUSION_ONLY])
    stage1 = tmp_path / "autoencoder"
    files = [f"--init_ir_encoder={stage1 / 'auto_encoder_epoch_1_ir.model'}",
             f"--init_vi_encoder={stage1 / 'auto_encoder_epoch_1_vi.model'}"]
    train_end_to_end.main([*common, *files, "--lr=1e-30", "--lr_min=0", "--weight_decay=0"])  # weights stay
    warm = tmp_path / "end_to_end_warm"
    assert not (tmp_path / "end_to_end").exists()
    for modality in ("ir", "vi"):
        start = read_checkpoint(stage1 / f"auto_encoder_epoch_1_{modality}.model").state
        end = read_checkpoint(run_layout.encoder_file(warm, modality, 1))
        assert end.meta["approach"] == "end-to-end, warm start" and end.meta["modality"] == modality
        for key, value in end.state.items():
            assert torch.equal(value, start[f"encoder.{key}"]), key
    with pytest.raises(CrossFuseError, match="give one of --init_from"):
        train_end_to_end.main([*common, *files, f"--init_from={tmp_path}"])
    with pytest.raises(CrossFuseError, match="go together"):
        train_end_to_end.main([*common, files[0]])
    with pytest.raises(CrossFuseError, match="no auto_encoder_epoch_N_ir.model"):
        train_end_to_end.main([*common, f"--init_from={data}"])
