"""fuse.py end to end: reference weights reproduce the stored fused crops; folders, colour and errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fuse
from formats.checkpoint import save_model
from net.config import ModelConfig
from net.model import CrossFuse
from tests.scripts import Result, run_script

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, patch=2, heads=2, mlp_ratio=2)


@pytest.fixture(scope="module")
def reference_weights(reference_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    subprocess.run([sys.executable, str(reference_dir / "official_weights.py"), str(out)], check=True)
    return out


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path / "fusetrans_epoch_1.model", CrossFuse(TINY), "crossfuse", epoch=1)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def noise(h: int, w: int, seed: int, channels: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("entry", ["infer_200x264_shift", "infer_203x261_shift"])
def test_reference_checkpoints_reproduce_stored_fused_images(entry, reference_dir, reference_weights, tmp_path):
    v = torch.load(reference_dir / "crossfuse_vectors.pt")[entry]
    ir = save(tmp_path / "ir.png", v["ir"][0, 0].numpy().astype(np.uint8))
    vi = save(tmp_path / "vi.png", v["vi"][0, 0].numpy().astype(np.uint8))
    out = tmp_path / "fused.png"
    assert fuse.main(["--ir", str(ir), "--vi", str(vi), "--out", str(out), "--reference", str(reference_weights)]) == 0
    fused = np.asarray(Image.open(out), dtype=np.float64)
    assert fused.shape == tuple(v["fused"].shape[-2:])
    assert np.abs(fused - v["fused"][0, 0].numpy()).max() <= 1.0


def test_folder_mode_lists_unpaired_and_keeps_colour(tiny_model, tmp_path, capsys):
    for name in ("a", "b"):
        save(tmp_path / "ir" / f"{name}.png", noise(40, 30, 1))
    save(tmp_path / "vi" / "a.jpg", noise(40, 30, 2, channels=3))
    save(tmp_path / "vi" / "b.png", noise(40, 30, 3))
    save(tmp_path / "vi" / "c.png", noise(40, 30, 4))
    code = fuse.main(["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(tmp_path / "out"),
                      "--model", str(tiny_model)])
    captured = capsys.readouterr()
    assert code == 0 and "no partner for" in captured.err and "c.png" in captured.err
    colour, gray = Image.open(tmp_path / "out" / "a.png"), Image.open(tmp_path / "out" / "b.png")
    assert colour.mode == "RGB" and colour.size == (30, 40) and gray.mode == "L"
    fuse.main(["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--out", str(tmp_path / "g"),
               "--model", str(tiny_model), "--gray"])
    assert Image.open(tmp_path / "g" / "a.png").mode == "L"


def test_colour_output_keeps_visible_chroma(tiny_model, tmp_path):
    vi = save(tmp_path / "vi.png", noise(24, 20, 5, channels=3))
    ir = save(tmp_path / "ir.png", noise(24, 20, 6))
    fuse.main(["--ir", str(ir), "--vi", str(vi), "--out", str(tmp_path / "f.png"), "--model", str(tiny_model)])
    out = np.asarray(Image.open(tmp_path / "f.png").convert("YCbCr"), dtype=int)
    src = np.asarray(Image.open(vi).convert("YCbCr"), dtype=int)
    # chroma survives the RGB round trip except where the new luma pushes a colour out of gamut
    assert np.median(np.abs(out[..., 1:] - src[..., 1:])) <= 1


def run(*argv: str) -> Result:
    return run_script("fuse.py", *argv)


def test_errors_are_one_clear_line(tiny_model, tmp_path):
    ir = save(tmp_path / "ir.png", noise(30, 30, 1))
    vi = save(tmp_path / "vi.png", noise(31, 30, 2))
    result = run("--ir", str(ir), "--vi", str(vi), "--out", str(tmp_path / "o.png"), "--model", str(tiny_model),
                 "--same-size")
    assert result.returncode == 2 and "sizes differ" in result.stderr and str(ir) in result.stderr
    (tmp_path / "bad.png").write_bytes(b"garbage")
    result = run("--ir", str(tmp_path / "bad.png"), "--vi", str(ir), "--out", str(tmp_path / "o.png"),
                 "--model", str(tiny_model))
    assert "bad.png: not a readable image" in result.stderr and "Traceback" not in result.stderr
    result = run("--ir", str(ir), "--vi", str(ir), "--out", str(tmp_path / "o.png"), "--reference", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().startswith("error: ") and "_ir.model" in result.stderr
    result = run("--ir", str(ir), "--vi", str(ir), "--out", str(tmp_path / "o.png"), "--fusion", str(ir))
    assert result.returncode == 2 and "ir.png: cannot be read as a torch checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1
