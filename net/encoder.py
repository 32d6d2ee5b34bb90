"""The per-modality encoder and the stage-1 autoencoder built around it."""
import torch
import torch.nn.functional as F
from torch import nn

from net.config import ModelConfig
from net.layers import MIN_SIDE, ConvLayer, DenseBlock, pad_to, reflect_pad, to_channels_last, upsample


class Encoder(nn.Module):
    """Shallow features at full resolution and deep features at 1/8 (floor at each pooling)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.shallow = ConvLayer(1, cfg.shallow)
        self.dense1 = DenseBlock(cfg.shallow, cfg.growth, cfg.dense_layers, cfg.deep)
        self.dense2 = DenseBlock(cfg.deep, cfg.growth, cfg.dense_layers, cfg.deep)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x / 255
        if not torch.is_grad_enabled():
            x = to_channels_last(x)  # every later activation follows the input's layout
        sh = self.shallow(x)
        de = F.max_pool2d(self.dense1(F.max_pool2d(sh, 2)), 2)
        return sh, F.max_pool2d(self.dense2(de), 2)


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
