"""Training losses on the 0..255 scale: stage-1 reconstruction (spec 3) and fusion (spec 7)."""
import torch
import torch.nn.functional as F

from net.layers import brighter_source
from training.msssim import msssim


def reconstruction_loss(out: torch.Tensor, x: torch.Tensor, w_mse: float = 1.0,
                        w_ssim: float = 10000.0) -> dict[str, torch.Tensor]:
    """w_mse * MSE + w_ssim * (1 - MS-SSIM(out, x)); returns each term and the total."""
    mse = F.mse_loss(out, x)
    ssim = 1 - msssim(out, x, normalize=True)
    return {"mse": mse, "ssim": ssim, "total": w_mse * mse + w_ssim * ssim}


def laplacian_kernel(like: torch.Tensor) -> torch.Tensor:
    """The 4-neighbour Laplacian as a conv2d weight, filled in on like's device: a constant copied from
    the host would be a blocking copy, and so a wait for the GPU, in every step."""
    kernel = like.new_zeros((1, 1, 3, 3))
    kernel[..., 1, :] = 1.0
    kernel[..., :, 1] = 1.0
    kernel[..., 1, 1] = -4.0
    return kernel


def positive_laplacian(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel, padding=1).clamp_min(0)


def fusion_loss(out: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, w_int: float = 1.0,
                w_grad: float = 10.0) -> dict[str, torch.Tensor]:
    """Intensity loss towards the locally brighter source plus a gradient loss towards the stronger edge."""
    intensity = F.mse_loss(out, brighter_source(ir, vi))
    lap = laplacian_kernel(out)
    gradient = F.mse_loss(positive_laplacian(out, lap),
                          torch.maximum(positive_laplacian(ir, lap), positive_laplacian(vi, lap)))
    return {"intensity": intensity, "gradient": gradient, "total": w_int * intensity + w_grad * gradient}
