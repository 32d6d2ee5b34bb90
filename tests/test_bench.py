"""bench.py: the --quick run's JSON, and the CUDA-only code paths run on the CPU where torch allows.

Nothing here asserts a time: only that measurements exist, are positive and finite.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import bench
from benchmarks import gpu_plan, sections, timing, versus
from tests.conftest import ROOT
from tests.scripts import run_script
from tests.tiny import ENCODER, FUSION
from utils.device import amp_note, autocast, to_device
from utils.errors import CrossFuseError

QUICK = timing.BenchSettings(device="cpu", threads=2, repeats=1, quick=True)


def positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_run_writes_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench.py", "--quick", "--device", "cpu", "--variants", "fp32", "--json",
                           str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # a shared, loaded machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fusion (1 pair)" in proc.stdout and "training step" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results) == {"meta", "ceiling", "fusion", "train", "profile", "load", "data"}
    assert positive(results["ceiling"]["fp32"]["gflops_per_s"])
    assert [(r["height"], r["width"]) for r in results["fusion"]] == list(bench.QUICK_FUSION_SIZES)
    assert [r["stage"] for r in results["train"]] == list(bench.STAGES)
    for row in results["fusion"] + results["train"]:
        for key in ("seconds", "flops", "gflops_per_s", "fraction_of_ceiling", "peak_mem_bytes"):
            assert positive(row[key]), (key, row)
        assert row["mem_kind"] == "rss" and row["variant"] == "fp32"
        assert len(row["times"]) == 1
    assert all(positive(r["seconds_per_mp"]) for r in results["fusion"])
    assert [r["stage"] for r in results["profile"]] == list(bench.STAGES) and "where a step's time goes" in proc.stdout
    for row in results["profile"]:
        assert sum(row["shares"].values()) == pytest.approx(1.0) and row["shares"]["convolution"] > 0
        assert row["shares"]["optimiser"] > 0 and positive(row["operator_seconds"])
    load = results["load"]
    if "skipped" in load:  # a process allowed one core (taskset -c 0)
        assert len(os.sched_getaffinity(0)) == 1 and "one core" in load["skipped"]
    else:
        assert all(positive(load[k]) for k in ("alone_seconds", "crowded_seconds", "picked_seconds",
                                               "allowed_slowdown"))
        assert 1 <= load["picked_threads"] <= 2
    assert "targets" not in proc.stdout and "under load" in proc.stdout
    data = results["data"]
    if "skipped" in data:
        assert "RoadScene" in data["skipped"]
    else:
        assert [(r["source"], r["workers"]) for r in data["rows"]] == [("jpeg", 0), ("jpeg", 1), ("jpeg", 2),
                                                                       ("cache", 0)]
        assert all(positive(r["pairs_per_s"]) for r in data["rows"])


def test_data_section_skips_with_a_reason(tmp_path):
    result = sections.measure_data(QUICK, tmp_path / "missing")
    assert "skipped" in result and str(tmp_path / "missing") in result["skipped"]


def test_bad_options_are_one_line_errors():
    proc = subprocess.run([sys.executable, "bench.py", "--sections", "fusion,nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--sections 'fusion,nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_fusion_sizes_are_width_by_height():
    assert bench.parse_sizes("96x64, 32x32") == [(64, 96), (32, 32)]
    assert bench.shown(bench.FUSION_SIZES).split(",")[-1] == "768x576"
    for bad in ("96", "96x", "0x8", "axb", ","):
        with pytest.raises(CrossFuseError, match="--fusion-sizes"):
            bench.parse_sizes(bad)


def test_cpu_flash_attention_flops_are_counted():
    """SDPA on the CPU dispatches to kernels torch's counter does not know; bench's counter knows them,
    without registering them in torch's global registry (importing bench changes nothing else)."""
    from torch.utils.flop_counter import flop_registry

    assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry
    q, k, v = (torch.rand(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    forward = timing.count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert forward == 2 * (2 * 2 * 4 * 16 * 16 * 8)
    both = timing.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert both == forward + 5 * (2 * 2 * 4 * 16 * 16 * 8)


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_the_cpu_is_bf16_where_native_and_fp32_with_a_note_elsewhere(monkeypatch, native):
    """--amp takes bf16 autocast on a CPU with native bf16 (AVX-512 BF16 or AMX); on another CPU, which would
    emulate bf16 slower than fp32, the model computes in fp32 unchanged and one line says so."""
    from net.model import CrossFuse
    from tests.test_model import TINY, images

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    cpu = torch.device("cpu")
    model = CrossFuse(TINY).eval()
    ir, vi = images(40, 48)
    with torch.no_grad():
        plain = model(ir, vi)
        with autocast(cpu, True):
            amp = model(ir, vi)
    assert amp.shape == plain.shape and torch.equal(plain, amp) != native
    assert (amp - plain).abs().max() < 8  # grey levels: bf16 keeps about 3 significant digits
    assert (amp_note(cpu, True) is None) == native and amp_note(cpu, False) is None
    assert bench.default_variants(cpu) == (["fp32", "amp"] if native else ["fp32"])


def test_host_batches_move_to_the_device_unchanged():
    """Pinned memory and non-blocking copies are for CUDA; on the CPU the same calls are plain moves."""
    host = timing.host_batch((2, 1, 8, 8), 2, torch.device("cpu"))
    assert not any(t.is_pinned() for t in host)
    moved = to_device(host, torch.device("cpu"))
    assert all(a is b for a, b in zip(host, moved, strict=True))
    assert all(t.min() >= 0 and t.max() <= 255 for t in moved)


@pytest.mark.parametrize("stage", bench.STAGES)
def test_compiled_training_step_matches_eager(stage):
    """The --compile path (torch.compile; eager backend, so no C++ toolchain) takes the same step."""
    params = {}
    for variant in ("fp32", "compile"):
        torch.manual_seed(0)
        run = sections.training_step(stage, torch.device("cpu"), 2, 32, variant, compile_backend="eager")
        run.step()
        params[variant] = [p.detach().clone() for p in run.optimizer.param_groups[0]["params"]]
    for eager, compiled in zip(params["fp32"], params["compile"], strict=True):
        torch.testing.assert_close(eager, compiled)


def test_fusion_measurement_runs_every_variant_on_cpu():
    for variant in bench.VARIANTS:
        row = sections.measure_fusion(QUICK, 32, 40, variant, compile_backend="eager")
        assert row["variant"] == variant and positive(row["seconds"]) and positive(row["flops"])


def test_the_gpu_plan_splits_the_peak_and_scales_with_the_batch(tmp_path, capsys):
    """bench.py --plan: a step at the args files' settings, measured without data; the parts add up to the
    peak, activations grow with the batch while the FLOPs per pair and the weights do not. Its --json file
    is read back."""
    narrow = [*ENCODER, *FUSION, "--image_size=64", "--epochs=2", "--train_num=10"]
    assert bench.main(["--plan", "--json", str(tmp_path / "plan.json"), "--batch=2", *narrow]) == 0
    rows = json.loads((tmp_path / "plan.json").read_text())["plan"]
    assert capsys.readouterr().out.strip() == gpu_plan.format_plan(rows)
    assert [r["stage"] for r in rows] == ["stage1", "stage2", "end_to_end"]
    for row in rows:
        parts = ("weights", "gradient", "optimizer", "input", "activation")
        assert sum(row[f"{k}_bytes"] for k in parts) == row["peak_bytes"] and row["activation_bytes"] > 0
        assert row["forward_flops_per_pair"] > 0 and row["backward_flops_per_pair"] > 0
        assert 0 < row["optimizer_bytes"] - 2 * 4 * row["trainable"] < 4096  # Adam's two fp32 moments, step counts
    assert rows[0]["pairs_per_epoch"] == 20 and rows[1]["trainable"] < rows[1]["parameters"]  # frozen encoders
    a, b = rows[2], gpu_plan.plan_stage("end_to_end", ["--batch=4", *narrow])
    assert b["activation_bytes"] > a["activation_bytes"] and b["weights_bytes"] == a["weights_bytes"]
    assert b["forward_flops_per_pair"] == a["forward_flops_per_pair"]
    text = gpu_plan.format_plan(rows)
    assert "end_to_end: batch 2 at 64 px, 2 epochs of 10 pairs" in text and "A100 80GB" in text
    assert "the seed says 5-8 GB" in text
    with pytest.raises(CrossFuseError, match="train_num=0 .* give --train_num=N"):
        gpu_plan.plan_stage("end_to_end", [*narrow, "--train_num=0"])
    with pytest.raises(CrossFuseError, match="--plan --bogus=1: not a --key=value setting"):
        bench.main(["--plan", "--bogus=1"])
    with pytest.raises(CrossFuseError, match="--batch=3: not a bench.py option"):
        bench.main(["--batch=3"])


FAKE_REFERENCE = {  # the reference checkout's layout and entry points, with one convolution each
    "network/__init__.py": "",
    "network/net_autoencoder.py": """
import torch
class Auto_Encoder_single(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    def forward(self, x):
        return self.conv(x / 255), self.conv(x / 255)[:, :, ::8, ::8]
    def train_module(self, x):
        return {"total_loss": (self.conv(x / 255).mean(1, keepdim=True) * 255 - x).square().mean()}
""",
    "network/net_conv_trans.py": """
import torch, cv2, seaborn  # imported by the reference's tools, never called in a step
class Trans_FuseNet(torch.nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 1, 3, padding=1)
    def train_module(self, x_ir, x_vi, ir_sh, vi_sh, ir_de, vi_de, shift, gradient, order):
        out = self.conv(torch.cat([ir_sh, vi_sh], 1)) * 255
        return {"total_loss": order(out, x_ir, x_vi) + gradient(out, x_ir, x_vi)}
""",
    "network/loss.py": """
class Gradient_loss:
    def __init__(self, channels): pass
    def __call__(self, out, x_ir, x_vi): return (out - x_vi).abs().mean()
class Order_loss(Gradient_loss):
    def __call__(self, out, x_ir, x_vi): return (out - x_ir).square().mean()
""",
}


def test_the_reference_steps_run_beside_ours_alternating(tmp_path):
    """--reference-code: the reference's modules are imported from its checkout (here a stand-in with its
    layout) and its step is timed beside ours, each repeat once each; a folder that is not one is refused."""
    for name, text in FAKE_REFERENCE.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    row = timing.in_fresh_process(versus.measure_versus, QUICK, "end_to_end", "fp32", tmp_path)
    assert row["stage"] == "end_to_end" and len(row["reference_s"]) == len(row["ours_s"]) == 3
    assert positive(row["speedup"]) and row["speedup"] == row["reference_median_s"] / row["ours_median_s"]
    assert "beside the reference" in bench.table({"meta": {**row, "device_name": "cpu", "threads": 2, "quick": True,
                                                          "torch": "", "repeats": 3}, "versus": [row]})
    proc = run_script("bench.py", "--sections", "versus", "--reference-code", str(tmp_path / "x"))
    assert proc.returncode == 2 and "not a checkout of the reference" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("bench.py", "--sections", "versus")
    assert proc.returncode == 2 and "--sections versus needs --reference-code" in proc.stderr
