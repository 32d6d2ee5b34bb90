"""Fusing real image files with a model: shared by fuse.py, training-time test sets and comparisons."""
from pathlib import Path

import numpy as np
import torch

from dataio.datasets import to_ir_size
from dataio.images import Range, is_color, read_gray, read_ycbcr, write_gray, write_ycbcr_as_rgb
from dataio.pairs import Pair
from net.model import CrossFuse
from utils.device import autocast
from utils.errors import CrossFuseError


@torch.inference_mode()
def fuse_gray(model: CrossFuse, ir: np.ndarray, vi: np.ndarray, device: torch.device,
              amp: bool = False) -> np.ndarray:
    """Fuse two uint8 H x W images; returns the uint8 H x W fused image."""
    ir_t, vi_t = (torch.from_numpy(x).float()[None, None].to(device) for x in (ir, vi))
    with autocast(device, amp):
        fused = model(ir_t, vi_t)
    return fused.float().clamp(0, 255).round().to(torch.uint8)[0, 0].cpu().numpy()


def read_pair(pair: Pair, same_size: bool = False, ir_range: Range | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both images as uint8 luma at the IR image's size: a VIS image of another size is resized to it,
    as training reads such pairs (dataio.datasets.to_ir_size); same_size=True refuses it instead.
    A high-depth IR image is stretched over ir_range when given (dataio.images.read_gray)."""
    ir, vi = read_gray(pair.ir, "ir", ir_range), read_gray(pair.vi)
    if ir.shape != vi.shape and same_size:
        raise CrossFuseError(f"{pair.ir} is {ir.shape[1]}x{ir.shape[0]} but {pair.vi} is "
                             f"{vi.shape[1]}x{vi.shape[0]}: sizes differ (without --same-size such a pair "
                             "is fused with the VIS image resized to the IR image's size, as training reads it)")
    return ir, to_ir_size(ir, vi)


def fuse_pair(model: CrossFuse, pair: Pair, out: Path, device: torch.device, amp: bool = False,
              gray: bool = False, same_size: bool = False, ir_range: Range | None = None) -> Path:
    """Read, check, fuse and write one pair at the IR image's size; a colour VIS image keeps its chroma
    (resized with it) unless gray."""
    fused = fuse_gray(model, *read_pair(pair, same_size, ir_range), device, amp)
    if gray or not is_color(pair.vi):
        write_gray(out, fused)
    else:
        ycbcr = read_ycbcr(pair.vi)
        if ycbcr.shape[:2] != fused.shape:
            ycbcr = np.stack([to_ir_size(fused, ycbcr[..., c]) for c in range(3)], axis=-1)
        ycbcr[..., 0] = fused
        write_ycbcr_as_rgb(out, ycbcr)
    return out
