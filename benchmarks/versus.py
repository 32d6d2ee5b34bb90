"""The reference implementation's training step beside ours, alternating in one process.

`bench.py --reference-code DIR` takes a checkout of the authors' code (github.com/hli1221/CrossFuse; its
CAM needs `timm`) and times, for stage 1, stage 2 and end-to-end at the bench's batch and size, the
reference's step (its modules, its `train_module` loss, Adam as its training scripts build it) and the
suite's (training.trainer.train_step with the args files' settings), one after the other in each
round, so that a change of load on a shared machine hits both alike. The reference's repository ships
its own end-to-end step nowhere: its end-to-end row trains both encoders through the stage-2 loss, as
the seed fork does.
"""
import importlib
import statistics
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.sections import training_step
from benchmarks.timing import BenchSettings, setup, timed
from utils.errors import CrossFuseError

# The reference scripts' model configurations (train_autoencoder.py, train_conv_trans.py).
AUTOENCODER = dict(in_channels=1, out_channels=1, en_out_channels1=32, en_out_channels=64, num_layers=3,
                   dense_out=128, part_out=128, train_flag=True)
FUSION = dict(en_out_channels1=32, out_channels=1, part_out=128, train_flag=True, img_size=32, patch_size=2,
              depth_self=1, depth_cross=1, n_heads=16, qkv_bias=True, mlp_ratio=4, p=0.0, attn_p=0.0)
UNUSED_IMPORTS = ("cv2", "seaborn")  # image files and plots: the reference imports them, a step never calls them


def check_checkout(code: Path) -> None:
    """Refuse, before anything is timed, a folder that is not the reference's checkout."""
    if not (code / "network" / "net_conv_trans.py").is_file():
        raise CrossFuseError(f"--reference-code {code}: not a checkout of the reference (network/net_conv_trans.py "
                             "missing; github.com/hli1221/CrossFuse)")


def reference_modules(code: Path) -> types.SimpleNamespace:
    """The reference's network and loss classes, imported from its checkout."""
    check_checkout(code)
    for name in UNUSED_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.path.insert(0, str(code.resolve()))
    try:
        conv_trans = importlib.import_module("network.net_conv_trans")
        autoencoder = importlib.import_module("network.net_autoencoder")
        loss = importlib.import_module("network.loss")
    except ImportError as e:
        raise CrossFuseError(f"--reference-code {code}: cannot import the reference ({e}; its CAM needs "
                             "timm)") from None
    return types.SimpleNamespace(FuseNet=conv_trans.Trans_FuseNet, AutoEncoder=autoencoder.Auto_Encoder_single,
                                 Gradient=loss.Gradient_loss, Order=loss.Order_loss)


def reference_step(ref: types.SimpleNamespace, stage: str, batch: int, size: int) -> Callable[[], None]:
    """One optimiser step of the reference on a fixed random batch (grey levels 0..255, as it reads images)."""
    ir, vi = (torch.rand(batch, 1, size, size) * 255 for _ in range(2))
    if stage == "stage1":
        net = ref.AutoEncoder(**AUTOENCODER).train()
        optimizer = torch.optim.Adam(net.parameters(), 1e-4)

        def loss() -> torch.Tensor:
            return net.train_module(ir)["total_loss"]
    else:
        fusion = ref.FuseNet(**FUSION).train()
        encoders = [ref.AutoEncoder(**AUTOENCODER) for _ in range(2)]
        gradient, order = ref.Gradient(1), ref.Order(1)
        trained = [fusion, *encoders] if stage == "end_to_end" else [fusion]
        params = [p for m in trained for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, 1e-3, weight_decay=0.9)
        for encoder in encoders:
            encoder.train(stage == "end_to_end")

        def loss() -> torch.Tensor:
            with torch.set_grad_enabled(stage == "end_to_end"):
                (ir_sh, ir_de), (vi_sh, vi_de) = encoders[0](ir), encoders[1](vi)
            return fusion.train_module(ir, vi, ir_sh, vi_sh, ir_de, vi_de, False, gradient, order)["total_loss"]

    def step() -> None:
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()

    return step


def measure_versus(settings: BenchSettings, stage: str, variant: str, code: Path) -> dict[str, Any]:
    """Seconds per step of the reference (always fp32: it has no bf16 path) and of ours (`variant`), alternating."""
    device = setup(settings)
    if device.type != "cpu":
        raise CrossFuseError("--reference-code: the side-by-side steps run on the CPU")
    batch, size = 2, 64 if settings.quick else 256
    ref = reference_step(reference_modules(code), stage, batch, size)
    ours = training_step(stage, device, batch, size, variant).step
    ref(), ours()  # warm-up
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for _ in range(max(settings.repeats, 3)):
        times["reference"] += timed(ref, 1, device)
        times["ours"] += timed(ours, 1, device)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"stage": stage, "variant": variant, "batch": batch, "size": size,
            "reference_s": times["reference"], "ours_s": times["ours"],
            "reference_median_s": medians["reference"], "ours_median_s": medians["ours"],
            "speedup": medians["reference"] / medians["ours"]}
