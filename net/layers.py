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


MIN_BAND_ROWS = 16  # oneDNN rounds differently for maps only a few rows high


def row_bands(height: int, pixels: int, width: int, period: int = 1) -> list[tuple[int, int]]:
    """(top, bottom) row ranges covering a map, each about `pixels` / `width` rows (a multiple of
    `period`, at least MIN_BAND_ROWS); a shorter remainder joins the band before it."""
    rows = max(MIN_BAND_ROWS, pixels // width) // period * period
    tops = list(range(0, height, rows))
    if len(tops) > 1 and height - tops[-1] < MIN_BAND_ROWS:
        tops.pop()
    return list(zip(tops, [*tops[1:], height], strict=True))


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


# The reference's fixed box kernels are float32 tensors in its checkpoint, whatever the precision it runs in;
# these are their float32 values. (In float64 the difference from 1/9 moves |x - A_3(x)| by 1e-10.)
NINTH = torch.tensor(1 / 9, dtype=torch.float32).item()
ONE_121TH = torch.tensor(1 / 121, dtype=torch.float32).item()


def box_mean_3x3(x: torch.Tensor) -> torch.Tensor:
    """The reference's fixed A_3 kernel (1/9 for every channel pair) as a channel sum + 3x3 mean.

    Every output channel of that convolution is identical, so one channel is computed and broadcast.
    """
    return F.avg_pool2d(x.sum(1, keepdim=True), 3, stride=1, padding=1, divisor_override=1) * NINTH


def normalise_pair_(gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gx / (gx + gy + 1e-6) and gy / (gx + gy + 1e-6), overwriting gx and gy.

    In place because at full resolution these are 32-channel maps, and every fresh buffer of
    that size costs memory and page faults. For weights without gradient: call under no_grad.
    """
    total = (gx + gy).add_(1e-6)
    return gx.div_(total), gy.div_(total)


def box_mean_11(x: torch.Tensor) -> torch.Tensor:
    """11 x 11 mean as a zero-padded conv2d; avg_pool2d would round differently and flip ties."""
    return F.conv2d(x, torch.full((1, 1, 11, 11), ONE_121TH, dtype=x.dtype, device=x.device), padding=5)


def brighter_source(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Per pixel, the source whose 11 x 11 mean is brighter (spec 7: the fusion loss's intensity target)."""
    sx, sy = box_mean_11(ir), box_mean_11(vi)
    total = sx + sy + 1e-6
    mask = (sx / total > sy / total).to(ir.dtype)
    return mask * ir + (1 - mask) * vi


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """|x - A_3(x)|, the local activity of the shallow features."""
    return (x - box_mean_3x3(x)).abs_()


def write_reflected(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[:] = F.pad(src, (1, 1, 1, 1), mode="reflect"), written in place (src sides >= 2)."""
    dst[..., 1:-1, 1:-1] = src
    dst[..., 0, 1:-1] = src[..., 1, :]
    dst[..., -1, 1:-1] = src[..., -2, :]
    dst[..., :, 0] = dst[..., :, 2]
    dst[..., :, -1] = dst[..., :, -3]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x with NHWC strides. Inference runs channels-last: oneDNN's NHWC convolutions skip a reorder
    of every input (1.2-1.5x on this network), but their backward is slower, so training stays NCHW.

    .contiguous(memory_format=...) would leave a 1-channel image as it is (its layout is ambiguous)
    and the first convolution would then pick NCHW; a copy into NHWC strides settles it.
    """
    if x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) == 1:
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 convolution of an NCHW map as one batched matrix product: the weight (out x in) times
    each image's (in x pixels) matrix. On the CPU oneDNN's training kernels for the 32-to-1 output
    layer run at a few GFLOP/s; the product, forward and backward, is several times faster."""
    b, c, h, w = x.shape
    out = torch.baddbmm(bias.view(1, -1, 1), weight.view(1, -1, c).expand(b, -1, -1), x.view(b, c, h * w))
    return out.view(b, -1, h, w)


class ConvLayer(nn.Module):
    """Reflection padding of k//2 then a biased convolution; no normalisation, no activation."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.kernel_size == (1, 1) and x.is_contiguous():
            return pointwise(x, self.conv.weight, self.conv.bias)
        return self.conv(x)

    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution alone, for an input that already carries its reflection padding."""
        return F.conv2d(x, self.conv.weight, self.conv.bias)


class ConvBN(ConvLayer):
    """ConvLayer followed by BatchNorm (fusion decoder); still no activation."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(cin, cout, k)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(super().forward(x))
        pad = self.conv.padding[0]
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x, *self.folded())

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the convolution with the eval-mode BatchNorm folded in: an affine map per
        channel, it then costs no pass of its own over the (full-resolution) output."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.view(-1, 1, 1, 1), (self.conv.bias - bn.running_mean) * scale + bn.bias


class DenseBlock(nn.Module):
    """Each growth layer's output is concatenated after its input; a last conv adjusts the width.

    Maps need sides of at least 2 for the 1-pixel reflection padding (CrossFuse's pad_small sees to it).
    """

    def __init__(self, cin: int, growth: int, layers: int, cout: int):
        super().__init__()
        self.layers = nn.ModuleList(ConvLayer(cin + i * growth, growth) for i in range(layers))
        self.adjust = ConvLayer(cin + layers * growth, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.adjust.valid(self.padded_pieces(x))
        return self.adjust.valid(self.padded_features(x))

    def padded_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """The reflect-padded concatenation for training: each piece is padded once, when it is made.

        Padding commutes with concatenation, so this equals padding every layer's whole input, but
        pads (and, backwards, folds) each channel once instead of once per later layer.
        """
        pieces = [F.pad(x, (1, 1, 1, 1), mode="reflect")]
        for layer in self.layers:
            features = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
            pieces.append(F.pad(layer.valid(features), (1, 1, 1, 1), mode="reflect"))
        return torch.cat(pieces, 1)

    def padded_features(self, x: torch.Tensor) -> torch.Tensor:
        """The reflect-padded concatenation, built in one buffer that every layer writes into.

        This saves a concatenation and a padding copy per layer, but autograd cannot follow the
        in-place writes, so it serves inference (and frozen encoders) only.
        """
        b, c, h, w = x.shape
        growth = self.layers[0].conv.out_channels
        buf = torch.empty((b, c + len(self.layers) * growth, h + 2, w + 2), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        write_reflected(buf[:, :c], x)
        for layer in self.layers:
            write_reflected(buf[:, c : c + growth], layer.valid(buf[:, :c]))
            c += growth
        return buf
