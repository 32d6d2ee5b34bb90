"""MS-SSIM exactly as the reference's stage-1 loss computes it (spec section 4), quirks included."""
import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int, channels: int, sigma: float = 1.5, like: torch.Tensor | None = None) -> torch.Tensor:
    """channels x 1 x size x size Gaussian (outer product of a normalised 1-D one), for grouped conv."""
    i = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((i - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()
    return w if like is None else w.to(like)


def ssim_and_cs(img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term at one level, with the reference's range rule."""
    channels, h, w = img1.shape[-3:]
    size = min(11, h, w)
    window = gaussian_window(size, channels, like=img1)
    max_val = 255.0 if img1.max() > 128 else 1.0
    min_val = -1.0 if img1.min() < -0.5 else 0.0
    rng = max_val - min_val
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu12
    v1, v2 = 2 * sigma12 + c2, sigma1_sq + sigma2_sq + c2
    ssim_map = ((2 * mu12 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean(), (v1 / v2).mean()


def msssim(img1: torch.Tensor, img2: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Five-level MS-SSIM; the range is taken from img1 (the network output in the loss)."""
    ssims, css = [], []
    for level in range(len(WEIGHTS)):
        if level:
            img1, img2 = F.avg_pool2d(img1, 2), F.avg_pool2d(img2, 2)
        s, c = ssim_and_cs(img1, img2)
        ssims.append(s)
        css.append(c)
    ssims, css = torch.stack(ssims), torch.stack(css)
    if normalize:
        ssims, css = (ssims + 1) / 2, (css + 1) / 2
    w = torch.tensor(WEIGHTS, dtype=img1.dtype, device=img1.device)
    # The reference multiplies the last level's ssim**w into each of the four cs factors.
    return torch.prod(css[:-1] ** w[:-1] * ssims[-1] ** w[-1])
