"""Training losses on the 0..255 scale: stage-1 reconstruction (spec 3) and fusion (spec 7)."""
import torch
import torch.nn.functional as F

from training.msssim import msssim


def reconstruction_loss(out: torch.Tensor, x: torch.Tensor, w_mse: float = 1.0,
                        w_ssim: float = 10000.0) -> dict[str, torch.Tensor]:
    """w_mse * MSE + w_ssim * (1 - MS-SSIM(out, x)); returns each term and the total."""
    mse = F.mse_loss(out, x)
    ssim = 1 - msssim(out, x, normalize=True)
    return {"mse": mse, "ssim": ssim, "total": w_mse * mse + w_ssim * ssim}


def box_mean_11(x: torch.Tensor) -> torch.Tensor:
    """11 x 11 mean as a zero-padded conv2d; avg_pool2d would round differently and flip ties."""
    return F.conv2d(x, torch.full((1, 1, 11, 11), 1.0 / 121, dtype=x.dtype, device=x.device), padding=5)


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
    sx, sy = box_mean_11(ir), box_mean_11(vi)
    total = sx + sy + 1e-6
    mask = (sx / total > sy / total).to(out.dtype)
    intensity = F.mse_loss(out, mask * ir + (1 - mask) * vi)
    lap = laplacian_kernel(out)
    gradient = F.mse_loss(positive_laplacian(out, lap),
                          torch.maximum(positive_laplacian(ir, lap), positive_laplacian(vi, lap)))
    return {"intensity": intensity, "gradient": gradient, "total": w_int * intensity + w_grad * gradient}
