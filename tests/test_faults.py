"""The faults a careful but unlucky user hits, one test per cause (docs/reliability.md says what the
suite promises for each): nothing the user trained is lost or mixed, and nothing fails silently."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import compare_training_approaches as compare
from dataio.datasets import to_ir_size
from dataio.images import read_gray, write_gray
from dataio.pairs import find_pairs, pair_single
from tests.scripts import Result, run_script
from tests.test_compare import make_runs, make_test_set
from tests.tiny import ENCODER, FUSION, train_args
from utils import device as device_module
from utils.atomic import atomic_write, hold_lock
from utils.device import pick_device
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]
TINY = [*ENCODER, *FUSION, "--preview_images=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("one_thread")


def run(script: str, *argv: str, cwd: Path = ROOT) -> Result:
    return run_script(script, *argv, cwd=cwd, env={"OMP_NUM_THREADS": "1"})


def one_line(result: Result, *fragments: str) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) >= 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-2000:])
    return errors[0]


@pytest.fixture(scope="module")
def e2e(demo_pairs, tmp_path_factory) -> Path:
    """A finished one-epoch end-to-end run of the demo pairs (its out_root)."""
    out = tmp_path_factory.mktemp("e2e")
    result = run("train_end_to_end.py", *train_args(demo_pairs, out, *TINY, "--epochs=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# 1 ------------------------------------------------------------- fuse.py: every fixable problem exits 2

def test_fuse_exits_2_for_unreadable_inputs_and_writes_nothing(e2e, demo_pairs, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = run("fuse.py", "--ir", str(tmp_path / "empty.png"), "--vi", str(demo_pairs / "test/vi/000.png"),
                 "--out", str(tmp_path / "out.png"), "--model", str(e2e / "end_to_end"))
    one_line(result, "empty.png")
    assert not (tmp_path / "out.png").exists()


# 2 ------------------------------------------------ pairs at two resolutions fuse as training reads them

def test_pairs_at_two_resolutions_fuse_as_training_reads_them(e2e, demo_pairs, tmp_path):
    ir = read_gray(demo_pairs / "test/ir/000.png")
    vi = np.asarray(Image.fromarray(read_gray(demo_pairs / "test/vi/000.png")).resize((96, 80), Image.BILINEAR))
    write_gray(tmp_path / "ir/a.png", ir)
    write_gray(tmp_path / "vi/a.png", vi)  # the same scene at 3 x 2.5 the IR image's size, as RoadScene's VIS
    out = tmp_path / "fused"
    result = run("fuse.py", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(out),
                 "--model", str(e2e / "end_to_end"), "--gray")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("note: 1 of 1 pairs differ in size") == 1
    assert read_gray(out / "a.png").shape == ir.shape
    from formats.checkpoint import find_trained, load_crossfuse
    from inference.files import fuse_gray
    model = load_crossfuse(find_trained(e2e / "end_to_end"))
    expected = fuse_gray(model, ir, to_ir_size(ir, vi), torch.device("cpu"))
    assert np.array_equal(read_gray(out / "a.png"), expected)
    refused = run("fuse.py", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(out),
                  "--model", str(e2e / "end_to_end"), "--same-size")
    one_line(refused, "sizes differ")


# 3 ----------------------------------------------------------------- devices other than CPU and CUDA

def test_unsupported_devices_are_one_line(e2e, demo_pairs, tmp_path, monkeypatch):
    one_line(run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--device=mps")),
             "--device 'mps'", "CPU or CUDA")
    one_line(run("fuse.py", "--ir", str(demo_pairs / "test/ir/000.png"), "--vi", str(demo_pairs / "test/vi/000.png"),
                 "--out", str(tmp_path / "f.png"), "--model", str(e2e / "end_to_end"), "--device", "mps"),
             "--device 'mps'")
    monkeypatch.setattr(device_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_module.torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(CrossFuseError, match="'cuda:3': this machine has 1 CUDA device"):
        pick_device("cuda:3")


# 4 ------------------------------------------------------ the suite's own files are read with a guard

def test_a_missing_or_damaged_config_history_does_not_stop_a_resume(demo_pairs, tmp_path):
    args = train_args(demo_pairs, tmp_path, *TINY, "--epochs=1")
    assert run("train_end_to_end.py", *args).returncode == 0
    history = tmp_path / "end_to_end/config_history_end_to_end.json"
    history.write_text('[{"started": ')  # cut short
    resumed = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=2", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "config_history_end_to_end.json is missing or damaged" in resumed.stderr
    assert (tmp_path / "end_to_end/config_history_end_to_end.json.damaged").read_text() == '[{"started": '
    assert len(json.loads(history.read_text())) == 1
    history.unlink()
    again = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=3", "--resume"))
    assert again.returncode == 0 and "is missing or damaged" in again.stderr


def test_a_damaged_score_cache_is_recomputed(tmp_path, capsys):
    make_runs(tmp_path / "models", make_test_set(tmp_path / "test"))
    argv = ["--root", str(tmp_path / "models"), "--out", str(tmp_path / "r"), "--device", "cpu", "--curve-images", "0"]
    assert compare.main(argv) == 0
    first = json.loads((tmp_path / "r/report.json").read_text())["per_image"]
    caches = sorted((tmp_path / "models").rglob("eval/*/scores.json"))
    assert caches
    caches[0].write_text('{"names": ["00"')
    caches[1].write_text(json.dumps({"names": "not a list", "per_image": 3}))
    for png in (tmp_path / "models").rglob("eval/*/fused/0000.png"):
        png.write_bytes(b"")
    capsys.readouterr()
    assert compare.main(argv) == 0
    assert json.loads((tmp_path / "r/report.json").read_text())["per_image"] == first


# 5 ------------------------------------------------- a new run never takes over an earlier run's folder

def test_a_new_run_refuses_a_folder_holding_an_earlier_run(demo_pairs, tmp_path):
    two = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=2"))
    assert two.returncode == 0, two.stderr[-2000:]
    folder = tmp_path / "end_to_end"
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    again = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=1", "--lr=5e-4"))
    one_line(again, "holds an earlier end_to_end run", "--resume continues it", "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before  # untouched
    over = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=1", "--lr=5e-4",
                                                  "--overwrite"))
    assert over.returncode == 0 and "--overwrite: deleted the earlier end_to_end run" in over.stdout
    assert sorted(p.name for p in folder.glob("*.model")) == ["end_to_end_fusion_epoch_1.model",
                                                              "end_to_end_ir_encoder_epoch_1.model",
                                                              "end_to_end_vi_encoder_epoch_1.model"]
    assert sorted(p.name for p in (folder / "loss").iterdir()) == ["loss_data_end_to_end_e0.mat"]
    history = json.loads((folder / "config_history_end_to_end.json").read_text())
    assert [h["config"]["lr"] for h in history] == [5e-4]


def test_a_folder_another_process_trains_in_is_refused(demo_pairs, tmp_path):
    with hold_lock(tmp_path / "end_to_end/.end_to_end.lock", wait=False, what="training end_to_end"):
        busy = run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--epochs=1"))
    one_line(busy, "another process is training end_to_end there now")
    assert not list((tmp_path / "end_to_end").glob("*.model"))


# 6 -------------------------------------------------------- evaluate.py never scores fewer images silently

def test_unscorable_fused_images_count_as_missing(demo_pairs, tmp_path):
    fused = tmp_path / "fused"
    for pair in find_pairs(demo_pairs / "test").pairs:
        write_gray(fused / f"{pair.name}.png", read_gray(pair.ir))
    names = sorted(p.name for p in fused.iterdir())
    write_gray(fused / names[0], np.zeros((5, 7), np.uint8))  # the wrong size
    result = run("evaluate.py", "--fused", str(fused), "--ir", str(demo_pairs / "test/ir"), "--vi",
                 str(demo_pairs / "test/vi"), "--metrics", "EN,SD", "--json", str(tmp_path / "s.json"))
    assert result.returncode == 2, result.stderr
    missing = json.loads((tmp_path / "s.json").read_text())["missing"]
    assert missing == [f"[fused] {Path(names[0]).stem} (fused image could not be scored)"]


# 7 ------------------------------------------------------------ study.py: paths and seeds as given

def test_a_study_from_another_folder_trains_where_its_relative_paths_say(demo_pairs, tmp_path):
    shutil.copytree(demo_pairs, tmp_path / "pairs")
    result = run("study.py", "--arms", "end-to-end", "--baseline", "end-to-end", "--seeds", "0", "--root", "studies",
                 "--name", "s",
                 "--no-compare", "--dataset=pairs/train", "--epochs=1", *TINY[:-1], "--image_size=32", "--batch=2",
                 "--workers=0", "--train_num=0", "--device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "studies/s/end-to-end/seed_0/end_to_end/end_to_end_fusion_epoch_1.model").is_file()
    assert not (ROOT / "studies" / "s").exists()


@pytest.mark.parametrize(("seeds", "message"), [("-1", "each >= 0"), ("", "at least one seed"),
                                                ("0,x", "comma-separated integers")])
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, seeds, message):
    result = run("study.py", "--arms", "end-to-end", "--seeds", seeds, "--root", str(tmp_path), "--dry-run")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


# 8 ----------------------------------------------------------------------- a learning rate of 0

def test_a_zero_learning_rate_is_refused(demo_pairs, tmp_path):
    one_line(run("train_end_to_end.py", *train_args(demo_pairs, tmp_path, *TINY, "--lr=0")), "--lr=0", "> 0")


# 9 --------------------------------------------------------------------------- messages that say what is

def test_a_training_state_given_as_a_model_says_what_it_is(e2e, demo_pairs, tmp_path):
    result = run("fuse.py", "--ir", str(demo_pairs / "test/ir/000.png"), "--vi", str(demo_pairs / "test/vi/000.png"),
                 "--out", str(tmp_path / "f.png"), "--model", str(e2e / "end_to_end/training_state_end_to_end.pt"))
    one_line(result, "a training-state file (what --resume continues from), not a model")


def test_swapped_ir_and_vis_inputs_are_refused(demo_pairs):
    test = demo_pairs / "test"
    with pytest.raises(CrossFuseError, match="the IR and VIS inputs look swapped"):
        find_pairs(test / "vi", test / "ir")
    with pytest.raises(CrossFuseError, match="look swapped"):
        pair_single(test / "vi/000.png", test / "ir/000.png")
    assert find_pairs(test / "ir", test / "vi").pairs


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.model.{int(dead.stdout)}.0123abcd.tmp"
    mine = tmp_path / f".y.model.{os.getpid()}.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine.write_bytes(b"being written")
    atomic_write(tmp_path / "z.json", lambda temp: temp.write_text("{}"))
    assert not stale.exists() and mine.exists() and (tmp_path / "z.json").read_text() == "{}"
