"""The per-modality encoder and the stage-1 autoencoder built around it."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from net.config import ModelConfig
from net.layers import MIN_SIDE, ConvLayer, DenseBlock, pad_to, reflect_pad, row_bands, to_channels_last, upsample

ENCODER_BAND_PIXELS = 2**18  # half-resolution pixels a dense-block band covers at inference, besides its context
SHALLOW_BAND_PIXELS = 2**19  # full-resolution pixels of shallow features made at once at inference
PERIOD = 4  # half-resolution rows per deep-feature row: band edges stay on this period


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off, for the shallow layer: the fusion decoder weighs the two shallow maps by their local
    activity |x - A_3(x)|, which in flat regions (a clear sky) is as small as bf16's rounding of the map;
    from bf16 maps the weights follow the rounding and put blobs of the other source into the sky. A
    1 -> 32 channel layer costs little in float32."""
    return torch.autocast(x.device.type, enabled=False)


class ShallowFeatures:
    """An image's full-resolution shallow features at inference, made a band of rows at a time.

    The fusion decoder reads them once more at its very end. Holding both 32-channel maps of a
    large image from the encoders until then would dominate its memory, while making a band again
    costs one 1 -> 32 convolution. Every band is bit-identical to those rows of the whole map.
    """

    def __init__(self, layer: ConvLayer, x: torch.Tensor):
        self.layer, self.x = layer, x  # the encoder's first layer; the image scaled to 0..1

    @property
    def shape(self) -> torch.Size:
        b, _, h, w = self.x.shape
        return torch.Size((b, self.layer.conv.out_channels, h, w))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop - 1: the layer on those image rows and one real row either side
        (reflection only at the image's own edges)."""
        h = self.x.shape[-2]
        band = self.x[..., max(0, start - 1) : min(h, stop + 1), :]
        with full_precision(band):
            return self.layer.valid(to_channels_last(reflect_pad(band, 1, 1, int(start == 0), int(stop == h))))

    def var_mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image, per-channel (B x C) variance and mean over the whole map, as torch.var_mean
        gives them, from float64 sums taken band by band."""
        b, c, h, w = self.shape
        total = squares = torch.zeros((b, c), dtype=torch.float64, device=self.x.device)
        for start, stop in row_bands(h, SHALLOW_BAND_PIXELS, w):
            band = self.rows(start, stop).double()
            total, squares = total + band.sum((2, 3)), squares + band.square().sum((2, 3))
        mean = total / (h * w)
        return (squares / (h * w) - mean.square()).to(self.x.dtype), mean.to(self.x.dtype)


class Encoder(nn.Module):
    """Shallow features at full resolution and deep features at 1/8 (floor at each pooling).

    At inference the dense blocks of a large image run in horizontal bands, so their working set
    (the largest of the network) is bounded by the band, not the image.
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.shallow = ConvLayer(1, cfg.shallow)
        self.dense1 = DenseBlock(cfg.shallow, cfg.growth, cfg.dense_layers, cfg.deep)
        self.dense2 = DenseBlock(cfg.deep, cfg.growth, cfg.dense_layers, cfg.deep)
        self.band_pixels = ENCODER_BAND_PIXELS

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x / 255
        if not torch.is_grad_enabled():
            x = to_channels_last(x)  # every later activation follows the input's layout
        with full_precision(x):
            sh = self.shallow(x)
        half = F.max_pool2d(sh, 2)
        return sh, self.deep(half) if torch.is_grad_enabled() else self.deep_in_bands(half)

    def encode_lazily(self, x: torch.Tensor) -> tuple[ShallowFeatures, torch.Tensor]:
        """Inference: the shallow features as a ShallowFeatures (never whole), the deep ones as forward()."""
        sh = ShallowFeatures(self.shallow, to_channels_last(x / 255))
        b, c, h, w = sh.shape
        half = torch.empty((b, c, h // 2, w // 2), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        for top, bottom in row_bands(h // 2, SHALLOW_BAND_PIXELS // 4, w // 2):
            half[..., top:bottom, :] = F.max_pool2d(sh.rows(2 * top, 2 * bottom), 2)
        return sh, self.deep_in_bands(half)

    def deep(self, half: torch.Tensor) -> torch.Tensor:
        """Deep features from the pooled shallow ones: dense block, pool, dense block, pool."""
        return F.max_pool2d(self.dense2(F.max_pool2d(self.dense1(half), 2)), 2)

    @property
    def context(self) -> int:
        """Half-resolution rows beyond a band that its deep features depend on: each 3 x 3
        convolution reaches one row further at its own scale (dense1's at 1/2, dense2's at 1/4, so
        twice as far), rounded up to the period so that every band starts on it."""
        convs = self.cfg.dense_layers + 1  # per dense block
        return -(-3 * convs // PERIOD) * PERIOD

    def deep_in_bands(self, half: torch.Tensor) -> torch.Tensor:
        """self.deep(half) computed band by band: bit-identical to one pass.

        Each band runs with `context` real rows above and below it, so every row it keeps saw the
        inputs it sees in the whole map (reflection happens only at the map's own edges); the rows
        that the band's own edges spoil lie in the context and are dropped.
        """
        h = half.shape[-2]
        bands = row_bands(h, self.band_pixels, half.shape[-1], PERIOD)
        if len(bands) == 1:
            return self.deep(half)
        deep = []
        for top, bottom in bands:
            start, stop = max(0, top - self.context), min(h, bottom + self.context)
            first = (top - start) // PERIOD
            band = self.deep(half[..., start:stop, :])
            deep.append(band[..., first : first + bottom // PERIOD - top // PERIOD, :])
        return torch.cat(deep, -2)


class ReconstructionDecoder(nn.Module):
    """Stage-1 decoder: back to full size, add the shallow features, one 1x1 conv, times 255."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.conv1 = ConvLayer(cfg.deep, cfg.decoder)
        self.conv2 = ConvLayer(cfg.decoder, cfg.decoder)
        self.conv3 = ConvLayer(cfg.decoder, cfg.shallow)
        self.out = ConvLayer(cfg.shallow, 1, 1)

    def forward(self, sh: torch.Tensor, de: torch.Tensor) -> torch.Tensor:
        x = upsample(self.conv1(de))
        x = upsample(self.conv2(x))
        x = upsample(self.conv3(x))
        x = pad_to(x, *sh.shape[-2:]) + sh
        return self.out(x) * 255


def pad_small(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad images with a side under MIN_SIDE so every layer has room; callers crop back."""
    h, w = x.shape[-2:]
    if h >= MIN_SIDE and w >= MIN_SIDE:
        return x
    dh, dw = max(MIN_SIDE - h, 0), max(MIN_SIDE - w, 0)
    return reflect_pad(x, dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)


def crop_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Undo pad_small."""
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class AutoEncoder(nn.Module):
    """Encoder + reconstruction decoder, trained per modality in stage 1."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = ReconstructionDecoder(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        recon = self.decoder(*self.encoder(pad_small(x)))
        return crop_center(recon, h, w)
