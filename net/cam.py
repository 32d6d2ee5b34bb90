"""The cross attention module (CAM): two self-attention stages per modality, then cross attention.

Feature maps become tokens by cutting them into patch x patch squares (channel-major inside a
token, raster order across tokens); the reference's half-tile "shift" only permutes tokens of an
attention without positional encoding, so it is left out (it changes nothing but rounding).
"""
import torch
import torch.nn.functional as F
from torch import nn

from net.config import ModelConfig
from net.layers import reflect_pad


def to_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """B x C x h x w -> B x N x (C*patch*patch), reflection-padding bottom/right to the patch grid."""
    b, c, h, w = x.shape
    x = reflect_pad(x, 0, -w % patch, 0, -h % patch)
    gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
    x = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c * patch * patch)


def from_tokens(t: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Exact inverse of to_tokens, cropping the padding."""
    b, _, d = t.shape
    c = d // (patch * patch)
    gh, gw = -(-height // patch), -(-width // patch)
    x = t.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * patch, gw * patch)[..., :height, :width]


def to_tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """B x C x H x W (multiples of tile) -> (B * tiles) x C x tile x tile, raster order per image."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // tile, tile, w // tile, tile).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, tile, tile)


def from_tiles(x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of to_tiles."""
    _, c, tile, _ = x.shape
    x = x.reshape(batch, height // tile, width // tile, c, tile, tile).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, c, height, width)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


class SelfBlock(nn.Module):
    """Pre-norm transformer block with multi-head self-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(merge_heads(F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])))
        return x + self.mlp(self.norm2(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(SelfBlock(cfg.embed, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.self_depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class CrossBlock(nn.Module):
    """Cross attention with the reference's "re-softmax": softmax(-q k^T / sqrt(d) / T).

    The negated scores favour the least correlated tokens of the other modality. T is 1 (fixed,
    the reference) or learnable, one scalar per block or one per head.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int, temperature: str):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        if temperature == "fixed":
            self.temperature = None
        else:
            self.temperature = nn.Parameter(torch.ones(heads if temperature == "head" else 1))

    def forward(self, xq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nq, nk = self.norm1(xq), self.norm1(xk)
        nv = nk if xv is xk else self.norm1(xv)
        q = split_heads(self.q(nq), self.heads)
        scale = -1.0 if self.temperature is None else -1.0 / self.temperature.view(1, -1, 1, 1)
        attn = F.scaled_dot_product_attention(q * scale, split_heads(self.k(nk), self.heads),
                                              split_heads(self.v(nv), self.heads))
        y = xv + self.proj(merge_heads(attn))
        return nq, y + self.mlp(self.norm2(y))


class CrossAttention(nn.Module):
    """Query from one modality, key/value from the other; the final LayerNorm follows every block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            CrossBlock(cfg.embed, cfg.heads, cfg.mlp_ratio, cfg.temperature) for _ in range(cfg.cross_depth)
        )
        self.norm = nn.LayerNorm(cfg.embed, eps=1e-6)

    def forward(self, query: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        xq, xk, xv = query, other, other
        for block in self.blocks:
            xq, xk = block(xq, xk, xv)
            xv = self.norm(xk)
        return xv


TILE_CHUNK = 16  # tiles attended at once at inference: bounds the working set, so cost per tile stays flat


class CrossAttentionModule(nn.Module):
    """CAM on deep features. Whole maps in training; at inference every tile of cfg.tile, in batches of
    `chunk` tiles (each tile attends only within itself, so the batching changes nothing)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.self1_ir, self.self1_vi = SelfAttention(cfg), SelfAttention(cfg)
        self.self2_ir, self.self2_vi = SelfAttention(cfg), SelfAttention(cfg)
        self.cross_ir, self.cross_vi = CrossAttention(cfg), CrossAttention(cfg)
        self.chunk = TILE_CHUNK

    def temperatures(self) -> list[torch.Tensor]:
        """The learnable temperatures (empty when fixed at 1)."""
        return [blk.temperature for m in (self.cross_ir, self.cross_vi) for blk in m.blocks
                if blk.temperature is not None]

    def forward(self, a: torch.Tensor, b: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        if not tiled:
            return self.attend(a, b)
        batch, _, h, w = a.shape
        t = self.cfg.tile
        ph, pw = -h % t, -w % t
        a, b = (to_tiles(reflect_pad(x, 0, pw, 0, ph), t) for x in (a, b))
        n = self.chunk
        out = torch.cat([self.attend(a[i : i + n], b[i : i + n]) for i in range(0, a.shape[0], n)])
        out = from_tiles(out, batch, h + ph, w + pw)
        return out[..., :h, :w]

    def attend(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p, (h, w) = self.cfg.patch, a.shape[-2:]
        ta, tb = to_tokens(a, p), to_tokens(b, p)
        ta, tb = self.self1_ir(ta), self.self1_vi(tb)
        if h % p or w % p:  # the reference reassembles and re-pads between stages
            ta, tb = (to_tokens(from_tokens(t, p, h, w), p) for t in (ta, tb))
        ta, tb = self.self2_ir(ta), self.self2_vi(tb)
        return from_tokens(self.cross_ir(ta, tb) + self.cross_vi(tb, ta), p, h, w)
