"""The fusion decoder, the fusion network (CAM + decoder) and the full CrossFuse model."""
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from net.cam import CrossAttentionModule
from net.config import ModelConfig
from net.encoder import Encoder, ShallowFeatures, crop_center, pad_small
from net.layers import (
    ConvBN,
    box_mean_3x3,
    brighter_source,
    high_pass,
    normalise_pair_,
    pad_to,
    reflect_pad,
    row_bands,
    to_channels_last,
    upsample,
)

Shallow = torch.Tensor | ShallowFeatures  # whole maps, or made band by band at inference

DECODER_BAND_PIXELS = 2**19  # output pixels the decoder's full-resolution layers make at once at inference


class FusionDecoder(nn.Module):
    """Adds activity-weighted deep and shallow features of both sources to the CAM output; the result
    is the output before its stretch to grey levels (CrossFuse.forward, which knows the inputs).

    At inference the full-resolution end (conv4, the shallow-feature weights, the output layer) runs
    in horizontal bands and reads the shallow features band by band (CrossFuse.encode hands them
    over as ShallowFeatures), so no 32-channel full-resolution map of a large image is ever whole.
    """

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.magnitude = cfg.deep_weights == "magnitude"
        self.conv1 = ConvBN(cfg.deep, cfg.decoder)
        self.conv2 = ConvBN(cfg.decoder, cfg.decoder)
        self.conv3 = ConvBN(cfg.decoder, cfg.shallow)
        self.conv4 = ConvBN(cfg.shallow, cfg.shallow)
        self.out = ConvBN(cfg.shallow, 1, 1)
        self.band_pixels = DECODER_BAND_PIXELS

    def forward(self, cf: torch.Tensor, ir_sh: Shallow, ir_de: torch.Tensor, vi_sh: Shallow, vi_de: torch.Tensor,
                sh_std: torch.Tensor | None = None) -> torch.Tensor:
        """sh_std: divide the shallow features by it first (feature_norm "standard"). The shallow
        features are ShallowFeatures only at inference (eval mode, no gradient)."""
        if not torch.is_grad_enabled():
            cf = to_channels_last(cf)  # the CAM reassembles NCHW; the decoder follows the encoders' NHWC
        wx, wy = self.deep_weights(ir_de, vi_de)
        z = cf + wx * ir_de + wy * vi_de
        z = upsample(self.conv1(z))
        z = upsample(self.conv2(z))
        z = self.conv3(z)
        if not (torch.is_grad_enabled() or self.training):
            return self.full_resolution_in_bands(z, ir_sh, vi_sh, sh_std)
        if sh_std is not None:
            ir_sh, vi_sh = ir_sh / sh_std, vi_sh / sh_std
        z = pad_to(self.conv4(upsample(z)), *ir_sh.shape[-2:])
        return self.blend(z, ir_sh, vi_sh)

    @torch.no_grad()  # the reference detaches both pairs of weights
    def deep_weights(self, ir_de: torch.Tensor, vi_de: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wx = gx / (gx + gy + 1e-6), wy likewise, from each deep map's local activity g.

        "signed" (the reference): g = A_3(x), local means summed over the channels. The encoders have no
        activation, so these sums can be negative, and where the two cancel the weights have a pole: on a
        bright flat VIS sky over a dark IR one they reach -2418 and 398 (TNO 08, docs/cpu-study.md), and the
        decoder draws a dark-cored blob with a bright rim there. "magnitude": g = A_3(|x|), never negative,
        so the weights stay in [0, 1] and share every position between the two maps.
        """
        if self.magnitude:
            ir_de, vi_de = ir_de.abs(), vi_de.abs()
        return normalise_pair_(box_mean_3x3(ir_de), box_mean_3x3(vi_de))

    def blend(self, z: torch.Tensor, ir_sh: torch.Tensor, vi_sh: torch.Tensor,
              rows: slice = slice(None)) -> torch.Tensor:
        """The output layer on z + 0.5 wx ir_sh + wy vi_sh for the given rows of the shallow maps
        (z holds just those rows); the weights wx, wy come from each map's local activity."""
        with torch.no_grad():
            wx, wy = normalise_pair_(high_pass(ir_sh), high_pass(vi_sh))
            wx.mul_(0.5)  # the reference halves the IR term
        ir_sh, vi_sh, wx, wy = (t[..., rows, :] for t in (ir_sh, vi_sh, wx, wy))
        # one full-resolution temporary instead of five
        return self.out(torch.addcmul(z, wx, ir_sh).addcmul_(wy, vi_sh))

    def full_resolution_in_bands(self, y: torch.Tensor, ir_sh: Shallow, vi_sh: Shallow,
                                 sh_std: torch.Tensor | None) -> torch.Tensor:
        """pad_to(conv4(upsample(y))) blended with the shallow features, one band of output rows at a
        time; bit-identical to one pass, since every kept value sees the same inputs.

        A band's rows come from the rows of y under it, reflected only where the band meets the
        edge of the map that pad_to or conv4 pads; the 3 x 3 activity mean reads one shallow row
        beyond the band (its zero padding applies only at the image's own edges).
        """
        h, w = ir_sh.shape[-2:]
        h4, w4 = 2 * y.shape[-2], 2 * y.shape[-1]
        top, left = (h - h4) // 2, (w - w4) // 2
        weight, bias = self.conv4.folded()
        out = torch.empty((ir_sh.shape[0], 1, h, w), dtype=y.dtype, device=y.device)
        for r0, r1 in row_bands(h, self.band_pixels, w):
            lo, hi = max(0, r0 - top), min(h4, r1 - top)  # conv4's output rows under the band
            u0, u1 = max(0, lo - 1), min(h4, hi + 1)  # the upsampled rows conv4 reads for them
            z = upsample(y[..., u0 // 2 : (u1 + 1) // 2, :])[..., u0 % 2 : u0 % 2 + u1 - u0, :]
            z = F.conv2d(F.pad(z, (1, 1, int(lo == 0), int(hi == h4)), mode="reflect"), weight, bias)
            z = reflect_pad(z, left, w - w4 - left, lo - (r0 - top), (r1 - top) - hi)
            s0, s1 = max(0, r0 - 1), min(h, r1 + 1)
            ir, vi = (shallow_rows(sh, s0, s1) for sh in (ir_sh, vi_sh))
            if sh_std is not None:
                ir, vi = ir / sh_std, vi / sh_std
            out[..., r0:r1, :] = self.blend(z, ir, vi, slice(r0 - s0, r1 - s0))
        return out


LOW_PRECISION = (torch.bfloat16, torch.float16)  # autocast's: statistics of such maps are taken in float32
FLAT_RANGE = 1e-3  # an output whose max - min is below this share of its magnitude is flat
FULL_STRETCH_INPUTS = 64  # inputs spanning at least this many grey levels get the reference's full stretch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x, in float32 if autocast made it bf16 or fp16: 8 bits of mantissa cannot hold a spread that is
    small beside the mean, so statistics of such maps are taken in float32."""
    return x.float() if x.dtype in LOW_PRECISION else x


def output_span(ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the grey range the output is stretched over and where it starts (B x 1 x 1 x 1 each).

    The reference stretches every output to 0..255, whatever the inputs hold; so two flat inputs fuse
    to their border effects blown up to the full range. Here the output may span at most 255 /
    FULL_STRETCH_INPUTS times the larger of the two inputs' ranges: inputs of ordinary contrast (64
    grey levels or more, every image the reference was run on) get exactly the reference's 0..255,
    flatter ones proportionally less, centred on the inputs' mean level, and flat inputs a flat output.
    """
    def spread(x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1), keepdim=True) - x.amin(dim=(-2, -1), keepdim=True)

    span = (torch.maximum(spread(ir), spread(vi)) * (255 / FULL_STRETCH_INPUTS)).clamp(max=255)
    level = (ir.mean(dim=(-2, -1), keepdim=True) + vi.mean(dim=(-2, -1), keepdim=True)) / 2
    return span, torch.minimum((level - span / 2).clamp(min=0), 255 - span)


def stretch_output(z: torch.Tensor, span: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The reference's per-image min-max stretch, over `span` grey levels from `start` (output_span),
    except for (nearly) flat outputs.

    Stretching a flat output would blow float rounding noise up to full-range noise, so an image
    whose range is below FLAT_RANGE of its magnitude is returned unstretched (no host sync: where).
    """
    lo = z.amin(dim=(-2, -1), keepdim=True)
    hi = z.amax(dim=(-2, -1), keepdim=True)
    flat = (hi - lo) <= FLAT_RANGE * torch.maximum(hi.abs(), lo.abs()).clamp_min(1.0)
    return torch.where(flat, z, (z - lo) / (hi - lo + 1e-6) * span + start)


def output_stats(kind: str, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image (B x 1 x 1 x 1) mean and standard deviation a standardised output is given, from
    the two input images only (0..255), as any fixed fusion rule could compute them.

    standard: the mean of the sources' means, and the larger of their standard deviations.
    rule: the mean and standard deviation of brighter_source(ir, vi), the rule the fusion loss's
    intensity target follows (on TNO its mean is 1.2-1.6 times the sources' and its SD 0.5-1.2 times
    their larger SD, so neither source statistic predicts it well).
    """
    if kind == "rule":
        var, mean = torch.var_mean(brighter_source(ir, vi), dim=(-2, -1), keepdim=True, correction=0)
        return mean, var.sqrt()
    (var_ir, mean_ir), (var_vi, mean_vi) = (torch.var_mean(x, dim=(-2, -1), keepdim=True, correction=0)
                                            for x in (ir, vi))
    return (mean_ir + mean_vi) / 2, torch.maximum(var_ir, var_vi).sqrt()


def standardise_output(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gain: torch.Tensor,
                       offset: torch.Tensor) -> torch.Tensor:
    """z standardised per image, then given mean + std * (gain * z + offset).

    Why (output_norm "standard" / "rule", not the reference): the min-max stretch fixes the output's range
    at 0..255 whatever the network does, while the fusion target's range is narrower, so the cheapest way
    to lower the loss is a few extreme outlier pixels that squeeze the rest into the target's range:
    washed-out fusions with dark contours. A mean and standard deviation are robust to a few outliers
    and scale-free (nothing a bounded output would need BatchNorm statistics of small crops to carry to
    full-size images); taking them from the inputs leaves the network the image's structure to learn.
    """
    zv, zm = torch.var_mean(z, dim=(-2, -1), keepdim=True, correction=0)
    return mean + std * (gain * (z - zm) / zv.add(1e-12).sqrt() + offset)


def standardise_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Both maps divided by their joint per-image standard deviation, and those maps centred per channel.

    The stage-1 encoders are linear but for max-pooling, so their biases give every channel a constant
    offset: about 95% of the deep features' RMS, the same for every input. The CAM tokenises and
    LayerNorms them, which turns those offsets into a fixed per-token pattern (99% of the CAM output's
    RMS is input-independent), and the decoder adds that unit-scale pattern to deep features of RMS 0.5:
    a grid at the token period. Centred features give the CAM the inputs' content only; one common
    factor keeps the activity weights wx, wy (ratios of the two modalities) as they were.
    """
    a, b = at_least_float32(a), at_least_float32(b)  # bf16 (--amp): centre in float32
    std = joint_std(a, b)
    return a / std, b / std, (a - a.mean(dim=(2, 3), keepdim=True)) / std, (b - b.mean(dim=(2, 3), keepdim=True)) / std


def shallow_rows(sh: Shallow, start: int, stop: int) -> torch.Tensor:
    return sh.rows(start, stop) if isinstance(sh, ShallowFeatures) else sh[..., start:stop, :]


def channel_var_mean(x: Shallow) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel (B x C) variance and mean, in float32 at least: from bf16 features (--amp) the
    statistics would keep 8 bits, too few for a spread that is small beside the mean."""
    if isinstance(x, ShallowFeatures):
        return x.var_mean()
    return torch.var_mean(at_least_float32(x), dim=(2, 3), correction=0)


def joint_std(a: Shallow, b: Shallow) -> torch.Tensor:
    """The per-image standard deviation of both maps together around their per-channel means (every
    channel has as many pixels, so the mean of the channels' variances), as B x 1 x 1 x 1; no
    temporary the size of the maps, which matters for full-resolution features."""
    var = sum(channel_var_mean(x)[0].mean(1) for x in (a, b)) / 2
    return var.add(1e-12).sqrt().view(-1, 1, 1, 1)


class FusionNet(nn.Module):
    """What stage 2 trains: the CAM and the fusion decoder (the reference's fusion checkpoint)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.cam = CrossAttentionModule(cfg)
        self.decoder = FusionDecoder(cfg)
        # cam_gate: the CAM output enters the decoder times a learned scalar starting at 0, so training
        # starts from the features' own path and admits the CAM's (input-independent at first) output
        # only as far as it lowers the loss.
        self.gate = nn.Parameter(torch.zeros(())) if cfg.cam_gate else None
        # output_norm "standard" / "rule": a learned gain and offset (in units of the inputs' standard
        # deviation) on the standardised output, starting at exactly the inputs' statistics.
        if cfg.output_norm != "minmax":
            self.out_gain = nn.Parameter(torch.ones(()))
            self.out_offset = nn.Parameter(torch.zeros(()))

    def finish(self, z: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        """The decoder's output as grey levels, by the model's output_norm and the input images: the
        reference's stretch (output_span), or standardised to the inputs' statistics and, at inference,
        clamped to 0..255 (in training the loss sees the values as they are, gradients included).
        Under bf16 autocast z is bf16: its statistics and the stretch are taken in float32, since 8 bits of
        mantissa cannot hold a spread that is small beside the mean (the fused image collapsed to grey)."""
        z = at_least_float32(z)
        if self.cfg.output_norm == "minmax":
            return stretch_output(z, *output_span(ir, vi))
        out = standardise_output(z, *output_stats(self.cfg.output_norm, ir, vi), self.out_gain, self.out_offset)
        return out if (torch.is_grad_enabled() or self.training) else out.clamp_(0, 255)

    def forward(self, ir_sh: Shallow, ir_de: torch.Tensor, vi_sh: Shallow, vi_de: torch.Tensor) -> torch.Tensor:
        cam_ir, cam_vi, sh_std = ir_de, vi_de, None
        if self.cfg.feature_norm == "standard":
            sh_std = joint_std(ir_sh, vi_sh)  # the decoder divides, band by band at inference
            ir_de, vi_de, cam_ir, cam_vi = standardise_pair(ir_de, vi_de)
        cf = self.cam(cam_ir, cam_vi, tiled=not self.training)
        if self.gate is not None:
            cf = cf * self.gate
        return self.decoder(cf, ir_sh, ir_de, vi_sh, vi_de, sh_std)


class CrossFuse(nn.Module):
    """IR encoder + VIS encoder + fusion network: an IR and a VIS image of any size in, fused out.

    Inputs and output are B x 1 x H x W holding 0..255 (FusionNet.finish turns the decoder's output into
    grey levels).
    With frozen encoders (stage 2) they stay in eval mode and run without gradient, as in the reference.
    """

    def __init__(self, cfg: ModelConfig = ModelConfig(), frozen_encoders: bool = False):
        super().__init__()
        self.cfg = cfg
        self.ir_encoder = Encoder(cfg)
        self.vi_encoder = Encoder(cfg)
        self.fusion = FusionNet(cfg)
        self.frozen_encoders = frozen_encoders
        if frozen_encoders:
            self.ir_encoder.requires_grad_(False)
            self.vi_encoder.requires_grad_(False)
            self.train(self.training)

    @classmethod
    def from_parts(cls, ir_encoder: Encoder, vi_encoder: Encoder, fusion: FusionNet,
                   frozen_encoders: bool = False) -> "CrossFuse":
        """Assemble a model from trained pieces (stage-1 encoders, a fusion network), copying weights.

        The encoders' widths win over the fusion network's config for the encoder fields.
        """
        e = ir_encoder.cfg
        widths = {(c.shallow, c.deep) for c in (e, vi_encoder.cfg, fusion.cfg)}
        if len(widths) > 1:
            raise ValueError("encoders and fusion network disagree on the shallow/deep widths")
        cfg = replace(fusion.cfg, growth=e.growth, dense_layers=e.dense_layers)
        model = cls(cfg, frozen_encoders=frozen_encoders)
        model.ir_encoder.load_state_dict(ir_encoder.state_dict())
        model.vi_encoder.load_state_dict(vi_encoder.state_dict())
        model.fusion.load_state_dict(fusion.state_dict())
        return model

    def train(self, mode: bool = True) -> "CrossFuse":
        super().train(mode)
        if self.frozen_encoders:
            self.ir_encoder.eval()
            self.vi_encoder.eval()
        return self

    def encode(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[Shallow, torch.Tensor, Shallow, torch.Tensor]:
        if not (torch.is_grad_enabled() or self.training):
            return (*self.ir_encoder.encode_lazily(ir), *self.vi_encoder.encode_lazily(vi))
        if not (torch.is_grad_enabled() and self.frozen_encoders):
            return (*self.ir_encoder(ir), *self.vi_encoder(vi))
        with torch.no_grad():
            features = (*self.ir_encoder(ir), *self.vi_encoder(vi))
        # Frozen encoders run as inference (channels-last); the fusion net trains faster in NCHW.
        return tuple(f.contiguous() for f in features)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        if ir.shape != vi.shape:
            raise ValueError(f"IR and VIS batches differ in shape: {tuple(ir.shape)} vs {tuple(vi.shape)}")
        h, w = ir.shape[-2:]
        fused = self.fusion.finish(self.fusion(*self.encode(pad_small(ir), pad_small(vi))), ir, vi)
        return crop_center(fused, h, w)
