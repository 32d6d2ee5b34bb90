"""Convolution building blocks and the padding rules CrossFuse uses everywhere."""
import torch
import torch.nn.functional as F
from torch import nn

MIN_SIDE = 16  # below this the deep map is 1 px and the reference's 3x3 reflection pads fail


def reflect_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Reflection padding of any amount: repeated reflections when a pad exceeds the side.

    One reflection is exactly torch's "reflect" wherever that is valid, so results match the
    reference there; larger pads (tiny images) reflect again instead of failing, and a side of one
    pixel is replicated since it has nothing to reflect.
    """
    while left or right or top or bottom:
        h, w = x.shape[-2:]
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        if not any(step):
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step, strict=True))
    return x


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflection-pad a decoder map up to the shallow features' size, split as the reference does."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return reflect_pad(x, dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def box_mean_3x3(x: torch.Tensor) -> torch.Tensor:
    """The reference's fixed A_3 kernel (1/9 for every channel pair) as a channel sum + 3x3 mean.

    Every output channel of that convolution is identical, so one channel is computed and broadcast.
    """
    return F.avg_pool2d(x.sum(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)


def detached_weights(gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised activity weights of two sources, without gradient (as in the reference)."""
    gx, gy = gx.detach(), gy.detach()
    total = gx + gy + 1e-6
    return gx / total, gy / total


class ConvLayer(nn.Module):
    """Reflection padding of k//2 then a biased convolution; no normalisation, no activation."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBN(ConvLayer):
    """ConvLayer followed by BatchNorm (fusion decoder); still no activation."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(cin, cout, k)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DenseBlock(nn.Module):
    """Each growth layer's output is concatenated after its input; a last conv adjusts the width."""

    def __init__(self, cin: int, growth: int, layers: int, cout: int):
        super().__init__()
        self.layers = nn.ModuleList(ConvLayer(cin + i * growth, growth) for i in range(layers))
        self.adjust = ConvLayer(cin + layers * growth, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.adjust(x)
