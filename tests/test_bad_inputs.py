"""Bad inputs, one test per class of defect: what a user types or feeds in never breaks the suite.

Every entry point answers a problem the user can fix with one line naming the file or setting and
exit code 2, keeps the last good files, and never writes silent garbage.
"""
import ast
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train_end_to_end
from args_end_to_end import EndToEnd
from cli.training_start import settings
from dataio.datasets import ImageTransform, PairDataset, make_loader
from dataio.pairs import find_pairs
from formats.checkpoint import load_crossfuse, load_encoder, read_checkpoint, save_model
from inference.files import fuse_gray
from net.config import ConfigError, ModelConfig
from net.encoder import Encoder
from net.model import CrossFuse
from tests.scripts import Result, run_script
from tests.tiny import ENCODER, FUSION, train_args
from training.stages import END_TO_END, encoder_widths, fusion_job
from utils.atomic import atomic_save
from utils.errors import CrossFuseError

ROOT = Path(__file__).resolve().parents[1]
TINY = [*ENCODER, *FUSION]


def run(script: str, *argv: str, limit_bytes: int | None = None) -> Result | subprocess.CompletedProcess:
    """The script in this process; with limit_bytes in a process of its own whose writes past that size fail
    with EFBIG (a "full disk")."""
    if limit_bytes is None:
        return run_script(script, *argv)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def data(demo_pairs) -> Path:
    return demo_pairs


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> Path:
    """One epoch of each pipeline, through the scripts, as a user runs them."""
    out = tmp_path_factory.mktemp("runs")
    for script, extra in (("train_autoencoder.py", ENCODER), ("train_fusion.py", FUSION),
                          ("train_end_to_end.py", TINY)):
        result = run(script, *train_args(data, out, "--epochs=1", *extra))
        assert result.returncode == 0, result.stderr[-3000:]
    return out


# 1 ------------------------------------------------------------ every .model file the suite writes loads

def test_every_written_model_file_round_trips_through_the_suite_loaders(runs, data, tmp_path):
    files = sorted(runs.rglob("*.model"))
    assert {f.parent.name for f in files} == {"autoencoder", "transfuse", "end_to_end"} and len(files) == 6
    for path in files:
        ckpt = read_checkpoint(path)
        if ckpt.kind == "crossfuse":
            load_crossfuse(path)
        else:
            load_encoder(path, ckpt.meta["modality"])
    e2e = runs / "end_to_end"
    result = run("fuse.py", "--ir", str(data / "test/ir/000.png"), "--vi", str(data / "test/vi/000.png"),
                 "--out", str(tmp_path / "f.png"), "--fusion", str(e2e / "end_to_end_fusion_epoch_1.model"),
                 "--ir-encoder", str(e2e / "end_to_end_ir_encoder_epoch_1.model"),
                 "--vi-encoder", str(e2e / "end_to_end_vi_encoder_epoch_1.model"))
    assert result.returncode == 0, result.stderr
    result = run("train_fusion.py", *train_args(data, tmp_path, *FUSION, "--epochs=1",
                                                f"--ir_encoder={e2e / 'end_to_end_ir_encoder_epoch_1.model'}",
                                                f"--vi_encoder={e2e / 'end_to_end_vi_encoder_epoch_1.model'}"))
    assert result.returncode == 0, result.stderr[-3000:]


def test_save_model_refuses_what_the_loader_cannot_read(tmp_path):
    model = CrossFuse(ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, heads=2, mlp_ratio=2))
    with pytest.raises(ValueError, match="plain values"):
        save_model(tmp_path / "x.model", model, "crossfuse", extra=ModelConfig())
    assert not (tmp_path / "x.model").exists()


# 2 ------------------------------------------------------- a bad test pair never costs training progress

def test_bad_test_pair_is_refused_before_training(data, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(data / "test", test)
    (test / "vi" / "001.png").write_bytes(b"not an image")
    result = run("train_end_to_end.py", *train_args(data, tmp_path / "out", *TINY, "--epochs=1",
                                                    "--preview_images=1", f"--test_dir={test}"))
    one_line_error(result, "001.png")
    assert not list((tmp_path / "out").rglob("*.model"))


def test_failing_optional_epoch_work_keeps_training(data, tmp_path, monkeypatch, capsys):
    config = settings(EndToEnd, train_args(data, tmp_path, *TINY, "--epochs=2", f"--test_dir={data / 'test'}"), "")
    job = fusion_job(END_TO_END, config, torch.device("cpu"), [])

    def broken_test(model: torch.nn.Module, epoch: int) -> None:
        raise OSError(28, "No space left on device")

    job.test = broken_test
    train_end_to_end.train(job, config, train_end_to_end.start_runtime(config))
    assert capsys.readouterr().err.count("preview/test outputs of end_to_end failed (OSError") == 2
    state = torch.load(tmp_path / "end_to_end/training_state_end_to_end.pt", weights_only=False)
    assert state["progress"]["epoch"] == 2
    assert (tmp_path / "end_to_end/end_to_end_fusion_epoch_2.model").is_file()


# 3 --------------------------------------------------- resume refuses settings that change the data order

def test_resume_refuses_data_order_changes_and_records_the_others(data, tmp_path):
    common = train_args(data, tmp_path, *TINY, "--epochs=1")
    assert run("train_end_to_end.py", *common).returncode == 0
    for change in ("--batch=1", "--image_size=48", "--seed=3", f"--dataset={data / 'test'}"):
        key = change[2:].split("=")[0]
        one_line_error(run("train_end_to_end.py", *common, "--resume", change), "cannot resume", key)
    result = run("train_end_to_end.py", *train_args(data, tmp_path, *TINY, "--epochs=2", "--lr=5e-4", "--resume"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming end_to_end with lr=0.0005 (was 0.001)" in result.stderr
    history = json.loads((tmp_path / "end_to_end/config_history_end_to_end.json").read_text())
    assert [h["config"]["lr"] for h in history] == [1e-3, 5e-4] and history[1]["epoch"] == 2


# 4 -------------------------------------------------------------------- ambiguous names are never paired

def test_duplicate_ir_stems_are_refused_like_duplicate_vis_stems(tmp_path):
    image = Image.fromarray(np.zeros((8, 8), np.uint8))
    for name in ("ir/a.jpg", "ir/a.png", "vi/a.png", "ir/b.png", "vi/b.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image.save(tmp_path / name)
    with pytest.raises(CrossFuseError, match="a.png: same name as .*a.jpg"):
        find_pairs(tmp_path)


# 5 --------------------------------------------------------------------- everything written atomically

TEMP_NAMES = {"temp", "probe", "buffer"}  # atomic_write's and check_writable's temporary paths, io.BytesIO
STREAMED = {  # (file, written path) -> why it is not written atomically
    ("studies/scheduler.py", "log"): "a training log the child process appends to as it runs",
}


def _written_path(call: ast.Call) -> ast.AST | None:
    """The path a call writes to, for the ways this code base writes files; None for other calls."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("write_text", "write_bytes") and isinstance(func, ast.Attribute):
        return func.value
    if name == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        writes = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax")
        return call.args[0] if writes else None
    if name == "save" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
        return call.args[1] if len(call.args) > 1 else None
    if name == "save" and not isinstance(func, ast.Attribute):
        return None  # a function of ours named save, not a writer
    if name in ("save", "savefig", "savemat", "imwrite", "open_memmap", "copyfile", "savez") and call.args:
        return call.args[0]
    return None


def test_every_file_write_goes_through_the_atomic_helper():
    """A static guard: every call that writes a file writes the atomic helper's temporary path."""
    offenders = []
    for path in sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("*/*.py")):
        if path.parts[-2] in ("tests", ".venv") or path.name == "atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            target = _written_path(node) if isinstance(node, ast.Call) else None
            if target is None or (isinstance(target, ast.Name) and target.id in TEMP_NAMES):
                continue
            if (str(path.relative_to(ROOT)), ast.unparse(target)) not in STREAMED:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(target)}")
    assert not offenders, "writes that bypass utils.atomic.atomic_write: " + ", ".join(offenders)


# 6 ------------------------------------------------------------- operating-system failures are one line

def test_full_disk_while_saving_is_one_line_and_keeps_the_last_good_file(tmp_path):
    path = tmp_path / "x.model"
    atomic_save({"a": torch.ones(4)}, path)
    old = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(CrossFuseError, match=r"x\.model: cannot write \(the disk is full or the file is larger"):
            atomic_save({"a": torch.zeros(100_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["x.model"]


def test_full_disk_in_a_training_run_is_one_line(data, tmp_path):
    result = run("train_end_to_end.py", *train_args(data, tmp_path, *TINY, "--epochs=1"), limit_bytes=20_000)
    one_line_error(result, "cannot write", "the disk is full")
    assert "unexpected pos" not in result.stderr


def test_out_root_that_is_a_file_is_one_line(data, tmp_path):
    (tmp_path / "file").write_text("")
    one_line_error(run("train_autoencoder.py", *train_args(data, tmp_path / "file", *ENCODER, "--epochs=1")),
                   "file", "not writable")


# 7 ------------------------------------------------------------------ settings outside their range

@pytest.mark.parametrize("bad", ["--batch=0", "--batch=-2", "--image_size=0", "--image_size=8",
                                 "--checkpoint_every=0", "--log_every=0", "--heads=3", "--tile=5",
                                 "--temperature=warm", "--lr=-1e-3", "--lr=0", "--lr_gamma=0", "--workers=-1",
                                 "--epochs=0", "--lr=nan", "--lr_schedule=linear", "--deep=0"])
def test_out_of_range_settings_are_refused_by_name(bad):
    key = bad[2:].split("=")[0]
    with pytest.raises(CrossFuseError, match=key) as raised:
        settings(EndToEnd, [bad], "")
    assert "\n" not in str(raised.value)


def test_model_config_errors_reach_the_user_as_the_suite_error():
    with pytest.raises(ConfigError, match="heads=3"):
        ModelConfig(heads=3)
    with pytest.raises(CrossFuseError, match="^heads=3 does not divide the token width"):
        settings(EndToEnd, ["--heads=3"], "")


# 8 ------------------------------------------------------------------ worker errors stay one line

def test_worker_error_with_on_error_raise_is_one_line(data, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(data / "train", bad)
    full = (bad / "ir" / "001.png").read_bytes()
    (bad / "ir" / "001.png").write_bytes(full[: len(full) // 2])  # header fine, pixels cut
    pairs = find_pairs(bad).pairs
    loader = make_loader(PairDataset(pairs, ImageTransform(32), 0, "raise"), 2, True, 1, 0, 0)
    with pytest.raises(CrossFuseError) as raised:
        list(loader)
    assert "\n" not in str(raised.value) and "001.png" in str(raised.value)


# 9 --------------------------------------------------------------------- swapped encoders are refused

def test_swapped_stage1_encoders_are_refused_unless_allowed(runs, data, tmp_path):
    ae = runs / "autoencoder"
    swapped = [f"--ir_encoder={ae / 'auto_encoder_epoch_1_vi.model'}",
               f"--vi_encoder={ae / 'auto_encoder_epoch_1_ir.model'}"]
    one_line_error(run("train_fusion.py", *train_args(data, tmp_path, *FUSION, "--epochs=1", *swapped)),
                   "auto_encoder_epoch_1_vi.model", "VIS encoder given as the IR one")
    allowed = run("train_fusion.py", *train_args(data, tmp_path, *FUSION, "--epochs=1", *swapped,
                                                 "--allow_other_modality"))
    assert allowed.returncode == 0, allowed.stderr[-2000:]


# 10 ------------------------------------------------------------------- flat inputs give flat outputs

def test_nearly_flat_output_is_not_stretched_into_noise():
    torch.manual_seed(0)
    model = CrossFuse(ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, heads=2, mlp_ratio=2)).eval()
    textured = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    fused = fuse_gray(model, textured, textured, torch.device("cpu"))
    assert fused.min() == 0 and fused.max() == 255  # a meaningful output keeps the reference's stretch
    with torch.no_grad():  # an output of 3 plus float-rounding-sized detail, as a collapsed model gives
        model.fusion.decoder.out.bn.weight.fill_(1e-7)
        model.fusion.decoder.out.bn.bias.fill_(3.0)
    for image in (textured, np.full((40, 48), 128, np.uint8), np.full((1, 1), 7, np.uint8)):
        fused = fuse_gray(model, image, image, torch.device("cpu"))
        assert fused.min() == fused.max() == 3, "float noise stretched to the full grey range"


# 11 ------------------------------------------------------------------- no preview with a test folder

def test_zero_preview_images_with_a_test_folder(data, tmp_path):
    result = run("train_end_to_end.py", *train_args(data, tmp_path, *TINY, "--epochs=1", "--preview_images=0",
                                                    f"--test_dir={data / 'test'}"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "end_to_end/test/epoch_1").glob("*.png"))) == 2
    assert not (tmp_path / "end_to_end/preview").exists()


# 12 ------------------------------------------------------------------- fuse.py writes what it says

@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".bmp", "BMP"), (".tif", "TIFF"), (".png", "PNG")])
def test_fuse_writes_the_format_named(runs, data, tmp_path, suffix, fmt):
    out = tmp_path / f"fused{suffix}"
    result = run("fuse.py", "--ir", str(data / "test/ir/000.png"), "--vi", str(data / "test/vi/000.png"),
                 "--out", str(out), "--model", str(runs / "transfuse"))
    assert result.returncode == 0 and str(out) in result.stdout, result.stderr
    assert Image.open(out).format == fmt and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_fuse_refuses_an_unknown_format_and_an_unwritable_place_before_working(runs, data, tmp_path):
    pair = ["--ir", str(data / "test/ir/000.png"), "--vi", str(data / "test/vi/000.png")]
    one_line_error(run("fuse.py", *pair, "--out", str(tmp_path / "f.gif"), "--model", str(runs / "transfuse")),
                   "f.gif", "cannot write .gif")
    (tmp_path / "file").write_text("")
    # the model does not exist either: the output place is checked first, before any loading or fusing
    one_line_error(run("fuse.py", *pair, "--out", str(tmp_path / "file" / "f.png"), "--model", str(tmp_path / "no")),
                   "not writable")


# smaller ------------------------------------------------------------------------------------------

def test_non_finite_loss_before_any_checkpoint_says_so(data, tmp_path):
    result = run("train_end_to_end.py", *train_args(data, tmp_path, *TINY, "--epochs=1", "--lr=1e30"))
    one_line_error(result, "non-finite loss", "no checkpoint had been written yet")


def test_stage1_width_mismatch_names_both_files(runs, data, tmp_path):
    wide = tmp_path / "wide"
    assert run("train_autoencoder.py", *train_args(data, wide, "--shallow=4", "--growth=4", "--deep=16",
                                                   "--epochs=1", "--modality=vi")).returncode == 0
    ir = runs / "autoencoder/auto_encoder_epoch_1_ir.model"
    vi = wide / "autoencoder/auto_encoder_epoch_1_vi.model"
    one_line_error(run("train_fusion.py", *train_args(data, tmp_path, "--epochs=1", f"--ir_encoder={ir}",
                                                      f"--vi_encoder={vi}")), str(ir), str(vi))


def test_encoders_of_different_widths_are_one_line():
    narrow, wide = (Encoder(ModelConfig(shallow=4, growth=4, deep=d, decoder=8, tile=4, heads=2)) for d in (8, 16))
    assert encoder_widths(narrow, narrow) == {"shallow": 4, "growth": 4, "dense_layers": 3, "deep": 8}
    with pytest.raises(CrossFuseError, match=r"ir.model has \(4, 4, 3, 8\) and vi.model has \(4, 4, 3, 16\)"):
        encoder_widths(narrow, wide, ("ir.model", "vi.model"))


@pytest.mark.parametrize("size", [(48, 48), (7, 300)])
def test_uniform_inputs_fuse_flat(size):
    """Two constant images fuse to a (nearly) constant image at their level, not to border effects stretched
    over the full grey range; inputs of ordinary contrast keep the reference's full 0..255 stretch."""
    torch.manual_seed(0)
    model = CrossFuse(ModelConfig(shallow=8, growth=8, deep=16, decoder=16, tile=8, heads=4, mlp_ratio=2)).eval()
    ir, vi = np.full(size, 100, np.uint8), np.full(size, 120, np.uint8)
    fused = fuse_gray(model, ir, vi, torch.device("cpu"))
    assert fused.std() < 3 and abs(float(fused.mean()) - 110) < 3
    low = np.random.default_rng(0).integers(100, 105, size).astype(np.uint8)  # 4 grey levels of texture
    assert np.ptp(fuse_gray(model, low, vi, torch.device("cpu"))) <= 4 * 255 / 64 + 1
    textured = np.random.default_rng(1).integers(0, 256, size).astype(np.uint8)
    fused = fuse_gray(model, textured, vi, torch.device("cpu"))
    if min(size) >= 48:  # smaller images are padded, stretched, then cropped (as the reference would)
        assert fused.min() == 0 and fused.max() == 255


def test_model_config_refuses_a_key_it_does_not_know_in_one_line():
    with pytest.raises(ConfigError, match="unknown model setting.*cross_dept") as info:
        ModelConfig.from_dict({**ModelConfig().to_dict(), "cross_dept": 2})
    assert "\n" not in str(info.value)
