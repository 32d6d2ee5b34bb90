"""MS-SSIM exactly as the reference's stage-1 loss computes it (spec section 4), quirks included."""
import torch
import torch.nn.functional as F

# The reference builds its constants in float32 (torch.FloatTensor), whatever the images' precision:
# these are those float32 values, which the loss then applies in the images' dtype.
WEIGHTS = tuple(torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=torch.float32).tolist())


def gaussian_window(size: int, like: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """The reference's 2-D Gaussian window, in like's dtype and on like's device (a copy from the host
    would make every step wait for the GPU).

    As the reference does: the 1-D Gaussian rounded to float32 and normalised there, the window its float32
    outer product. Its sum misses 1 by about 1e-7, and SSIM's variance E[x^2] - E[x]^2 cancels on the 0..255
    scale, so a window computed in float64 (or applied as two separable 1-D passes) moves the float64 loss
    by 4e-7; this one reproduces it to 5e-13. One 11 x 11 pass is no slower here than two 1-D passes.
    """
    i = torch.arange(size, dtype=torch.float64, device=like.device)
    g = torch.exp(-((i - size // 2) ** 2) / (2 * sigma**2)).float()
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(like.dtype)


class ValidFilter(torch.autograd.Function):
    """Valid correlation of one-channel maps with a fixed kernel, whose gradient is computed as the
    full correlation with the flipped kernel: on the CPU oneDNN's backward kernel for one channel
    runs several times slower than its forward one."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        return F.conv2d(x, kernel)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (kernel,) = ctx.saved_tensors
        kh, kw = kernel.shape[-2:]
        return F.conv2d(F.pad(grad, (kw - 1, kw - 1, kh - 1, kh - 1)), kernel.flip(-2, -1)), None


def blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Valid 2-D filter of every channel with the window; channels ride in the batch."""
    n, c, h, w = x.shape
    x = ValidFilter.apply(x.reshape(n * c, 1, h, w), window[None, None])
    return x.reshape(n, c, *x.shape[-2:])


def ssim_and_cs(img1: torch.Tensor, img2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term at one level, with the reference's range rule.

    The range rule is applied on the device (torch.where), so the loss never waits for the host.
    """
    h, w = img1.shape[-2:]
    window = gaussian_window(min(11, h, w), img1)
    max_val = torch.where(img1.max() > 128, img1.new_full((), 255.0), img1.new_ones(()))  # in img1's dtype
    rng = max_val + (img1.min() < -0.5)  # minus min_val, which is -1 there and 0 elsewhere
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    # all five filtered maps in one pass
    mu1, mu2, e11, e22, e12 = blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2]), window).chunk(5)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
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
    # Filled in on the device: torch.tensor(WEIGHTS, device=...) would copy from the host and, on a
    # GPU, wait for it in every step.
    w = torch.stack([img1.new_full((), v) for v in WEIGHTS])
    # The reference multiplies the last level's ssim**w into each of the four cs factors.
    return torch.prod(css[:-1] ** w[:-1] * ssims[-1] ** w[-1])
