"""Shapes, sizes, tiling, temperature and checkpoint conversion of the network (narrow models, fast)."""
import pytest
import torch

from formats.checkpoint import load_crossfuse, read_checkpoint, save_model
from formats.reference import from_reference, to_reference
from net.cam import CrossAttentionModule, from_tiles, from_tokens, to_tiles, to_tokens
from net.config import ModelConfig
from net.encoder import PERIOD, AutoEncoder, Encoder, ShallowFeatures
from net.layers import MIN_BAND_ROWS, ConvLayer, DenseBlock, pointwise, reflect_pad, row_bands
from net.model import CrossFuse, FusionNet
from utils.errors import CrossFuseError

TINY = ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, patch=2, heads=2, mlp_ratio=2)


def images(h: int, w: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 1, h, w, generator=g) * 255 for _ in range(2))


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 3), (15, 16), (17, 23), (40, 33), (64, 64)])
def test_any_size_gives_same_size_finite_output(size):
    model = CrossFuse(TINY).eval()
    ir, vi = images(*size)
    with torch.no_grad():
        out = model(ir, vi)
    assert out.shape == ir.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 255 + 1e-3


def test_reflect_pad_matches_torch_where_valid_and_extends_beyond():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert torch.equal(reflect_pad(x, 1, 2, 2, 1), torch.nn.functional.pad(x, (1, 2, 2, 1), mode="reflect"))
    big = reflect_pad(x, 9, 9, 7, 7)
    assert big.shape[-2:] == (17, 22)
    assert torch.equal(big[..., 7:10, 9:13], x)
    assert reflect_pad(torch.ones(1, 1, 1, 1), 3, 3, 3, 3).shape[-2:] == (7, 7)


def test_tokens_are_channel_major_and_invertible():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    t = to_tokens(x, 2)
    assert t.shape == (2, 6, 12)
    # token 1 is the patch at rows 0-1, cols 2-3; element c*4 + py*2 + px
    assert t[0, 1, 1 * 4 + 1 * 2 + 0] == x[0, 1, 1, 2]
    assert torch.equal(from_tokens(t, 2, 4, 6), x)
    odd = torch.rand(1, 3, 5, 7)
    assert torch.equal(from_tokens(to_tokens(odd, 2), 2, 5, 7), odd)


def test_tiles_roundtrip_in_raster_order():
    x = torch.rand(2, 3, 8, 12)
    tiles = to_tiles(x, 4)
    assert tiles.shape == (12, 3, 4, 4)
    assert torch.equal(tiles[1], x[0, :, 0:4, 4:8]) and torch.equal(tiles[3], x[0, :, 4:8, 0:4])
    assert torch.equal(from_tiles(tiles, 2, 8, 12), x)


def test_batched_tiles_equal_one_tile_at_a_time():
    cam = CrossAttentionModule(TINY).eval()
    a, b = torch.rand(1, 8, 8, 12), torch.rand(1, 8, 8, 12)
    with torch.no_grad():
        batched = cam(a, b, tiled=True)
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                one = cam.attend(a[..., i:i + 4, j:j + 4], b[..., i:i + 4, j:j + 4])
                torch.testing.assert_close(batched[..., i:i + 4, j:j + 4], one, rtol=1e-5, atol=1e-5)


def test_tile_chunks_are_bit_identical_to_one_batch():
    """Inference attends tiles in chunks (a Python loop per chunk, none per tile); any chunk size,
    including ones that straddle two images of the batch, gives exactly the one-batch result."""
    cam = CrossAttentionModule(TINY).eval()
    a, b = torch.rand(2, 8, 18, 23), torch.rand(2, 8, 18, 23)  # 5 x 6 tiles of 4 per image, padded
    with torch.no_grad():
        cam.chunk = 10**9
        whole = cam(a, b, tiled=True)
        for chunk in (1, 7, 30, 31):
            cam.chunk = chunk
            assert torch.equal(cam(a, b, tiled=True), whole), chunk


def test_cross_attention_matches_explicit_resoftmax():
    cam = CrossAttentionModule(TINY)
    block = cam.cross_ir.blocks[0]
    xq, xkv = torch.rand(2, 5, TINY.embed), torch.rand(2, 5, TINY.embed)
    nq, nkv = block.norm1(xq), block.norm1(xkv)
    hd = TINY.embed // TINY.heads
    pairs = ((block.q, nq), (block.k, nkv), (block.v, nkv))
    q, k, v = (lin(n).view(2, 5, TINY.heads, hd).transpose(1, 2) for lin, n in pairs)
    attn = torch.softmax(-(q @ k.transpose(-1, -2)) / hd**0.5, dim=-1) @ v
    y = xkv + block.proj(attn.transpose(1, 2).reshape(2, 5, TINY.embed))
    y = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(cam.cross_ir(xq, xkv), cam.cross_ir.norm(y))


@pytest.mark.parametrize("mode,shape", [("block", (1,)), ("head", (TINY.heads,))])
def test_learnable_temperature(mode, shape):
    cfg = ModelConfig(**{**TINY.to_dict(), "temperature": mode})
    model = CrossFuse(cfg).train()
    temps = model.fusion.cam.temperatures()
    assert len(temps) == 2 * cfg.cross_depth and all(t.shape == shape and torch.all(t == 1) for t in temps)
    ir, vi = images(32, 32, batch=2)
    model(ir, vi).mean().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in temps)
    assert CrossFuse(TINY).fusion.cam.temperatures() == []


def test_frozen_encoders_stay_in_eval_without_grad():
    model = CrossFuse(TINY, frozen_encoders=True).train()
    assert not model.ir_encoder.training and model.fusion.training
    ir, vi = images(32, 32, batch=2)
    model(ir, vi).mean().backward()
    assert all(p.grad is None for p in model.ir_encoder.parameters())
    assert all(p.grad is not None for p in model.fusion.decoder.parameters())


def test_dense_block_training_path_equals_padding_every_layer_input():
    """Padding each piece once (training) gives the reference's pad-the-whole-input-per-layer result
    exactly, forward, and its gradients up to float rounding; inference (the shared buffer) too."""
    torch.manual_seed(0)
    block = DenseBlock(3, 4, 3, 5)
    x = torch.randn(2, 3, 9, 12, requires_grad=True)

    def per_layer(x: torch.Tensor) -> torch.Tensor:
        for layer in block.layers:
            x = torch.cat([x, layer(x)], 1)
        return block.adjust(x)

    expected, ours = per_layer(x), block(x)
    assert torch.equal(ours, expected)
    grads = [torch.autograd.grad(y.square().sum(), [x, *block.parameters()]) for y in (expected, ours)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_pointwise_layer_equals_its_convolution():
    """The 1 x 1 output layer runs as a batched matrix product in NCHW: same values and gradients."""
    torch.manual_seed(0)
    layer = ConvLayer(6, 2, k=1)
    x = torch.randn(3, 6, 7, 5, requires_grad=True)
    expected = layer.conv(x)
    ours = layer(x)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(pointwise(x, layer.conv.weight, layer.conv.bias), ours)
    for a, b in zip(*(torch.autograd.grad(y.sum(), [x, *layer.parameters()]) for y in (expected, ours)), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def band_budget(model: CrossFuse, rows: int, width: int) -> None:
    """Bands of about `rows` image rows in the encoders' dense blocks and the decoder's end."""
    model.fusion.decoder.band_pixels = rows * width
    model.ir_encoder.band_pixels = model.vi_encoder.band_pixels = rows * width // 4


@pytest.mark.parametrize("feature_norm", ["none", "standard"])
def test_banded_inference_is_bit_identical_to_one_pass(feature_norm):
    """Large images run in bands at inference; any band size gives exactly the one-pass result, and
    that result is the training path's (whole maps, NCHW) up to float rounding."""
    torch.manual_seed(0)
    # the paper's widths: oneDNN's kernels for very narrow layers round differently per band height
    model = CrossFuse(ModelConfig(feature_norm=feature_norm, cam_gate=True)).eval()
    model.fusion.gate.data.fill_(0.7)
    for h, w in [(203, 64), (97, 130), (40, 72)]:
        ir, vi = images(h, w, seed=h)
        with torch.no_grad():
            band_budget(model, 10**6, w)
            whole = model(ir, vi)
            for rows in (1, 20, 64):
                band_budget(model, rows, w)
                assert torch.equal(model(ir, vi), whole), (h, w, rows)
        torch.testing.assert_close(whole, model(ir, vi).detach(), rtol=0, atol=2e-3)


def test_encoder_band_context_is_what_the_deep_features_need():
    """With one period less of context the band edges leak into the kept rows: the context is not padding."""
    torch.manual_seed(0)
    encoder = Encoder().eval()
    x = torch.rand(1, 1, 256, 64) * 255
    with torch.no_grad():
        encoder.band_pixels = 10**6
        whole = encoder(x)[1]
        encoder.band_pixels = 32 * 32
        assert torch.equal(encoder(x)[1], whole)
        short = encoder.context - PERIOD
        Short = type("Short", (Encoder,), {"context": short})
        encoder.__class__ = Short
        assert not torch.equal(encoder(x)[1], whole)


def test_shallow_features_made_on_request_equal_the_whole_map():
    torch.manual_seed(0)
    encoder = Encoder().eval()
    x = torch.rand(2, 1, 45, 70) * 255
    with torch.no_grad():
        whole = encoder(x)[0]
        lazy, _ = encoder.encode_lazily(x)
        assert lazy.shape == whole.shape
        for start, stop in [(0, 45), (0, 16), (10, 30), (29, 45)]:
            assert torch.equal(lazy.rows(start, stop), whole[..., start:stop, :])
        var, mean = lazy.var_mean()
        expected = torch.var_mean(whole, dim=(2, 3), correction=0)
        torch.testing.assert_close(var, expected[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(mean, expected[1], rtol=1e-5, atol=1e-7)
    assert isinstance(lazy, ShallowFeatures)


@pytest.mark.parametrize("height, pixels, width, period", [(100, 400, 20, 1), (203, 10, 64, 8), (16, 1, 1, 4),
                                                            (1000, 64 * 100, 64, 8), (35, 640, 40, 1)])
def test_row_bands_cover_the_map_in_order(height, pixels, width, period):
    bands = row_bands(height, pixels, width, period)
    assert bands[0][0] == 0 and bands[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
    assert all(top % period == 0 for top, _ in bands)
    assert all(bottom - top >= MIN_BAND_ROWS for top, bottom in bands) or len(bands) == 1


def test_memory_is_linear_in_pixels():
    """Activations of tiled inference scale with the pixel count (no global attention)."""
    cam = CrossAttentionModule(TINY).eval()
    seen = []
    for side in (16, 32):
        a = torch.rand(1, 8, side, side)
        seen.append(to_tiles(a, TINY.tile).shape[0])
    assert seen[1] == 4 * seen[0]
    with torch.no_grad():
        assert cam(torch.rand(1, 8, 32, 32), torch.rand(1, 8, 32, 32), tiled=True).shape == (1, 8, 32, 32)


def test_reference_roundtrip_both_ways():
    fusion, ae = FusionNet(TINY), AutoEncoder(TINY)
    for module, kind in ((fusion, "fusion"), (ae, "autoencoder")):
        ref = to_reference(module)
        back = from_reference(ref, kind, cfg=TINY)
        for key, value in module.state_dict().items():
            assert torch.equal(value, back.state_dict()[key]), key
        again = to_reference(back)
        assert ref.keys() == again.keys()


def test_reference_layout_matches_schema(reference_dir):
    import json
    schema = json.loads((reference_dir / "official_schema.json").read_text())
    for kind, module in (("autoencoder", AutoEncoder()), ("fusion", FusionNet())):
        ref = {k: list(v.shape) for k, v in to_reference(module).items()}
        assert ref == dict(schema[kind])


def test_reference_errors_name_file_and_key():
    ref = to_reference(FusionNet(TINY))
    with pytest.raises(CrossFuseError, match=r"f\.model: missing key 'cross_atten_block"):
        from_reference({k: v for k, v in ref.items() if "cross_atten1.blocks.0.attn.q_linear.bias" not in k},
                       "fusion", "f.model", TINY)
    with pytest.raises(CrossFuseError, match="unexpected key 'extra.weight'"):
        from_reference({**ref, "extra.weight": torch.zeros(1)}, "fusion", "f.model", TINY)
    bad = dict(ref)
    bad["decoder_fusion.conv_block.0.conv2d.0.bias"] = torch.zeros(3)
    with pytest.raises(CrossFuseError, match=r"conv_block\.0\.conv2d\.0\.bias' has shape \(3,\)"):
        from_reference(bad, "fusion", "f.model", TINY)
    with pytest.raises(CrossFuseError, match="reference autoencoder checkpoint, expected a fusion"):
        from_reference(to_reference(AutoEncoder(TINY)), "fusion", "a.model")


def test_suite_checkpoints_roundtrip_and_reject_wrong_kinds(tmp_path):
    model = CrossFuse(TINY).eval()
    path = save_model(tmp_path / "fusetrans_epoch_1.model", model, "crossfuse", epoch=1)
    assert read_checkpoint(path).meta["epoch"] == 1
    loaded = load_crossfuse(path)
    ir, vi = images(40, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ir, vi), model(ir, vi))
    ae = save_model(tmp_path / "auto_encoder_epoch_1_ir.model", AutoEncoder(TINY), "autoencoder")
    with pytest.raises(CrossFuseError, match="auto_encoder_epoch_1_ir.model: expected a fusion checkpoint"):
        load_crossfuse(ae)
    (tmp_path / "junk.model").write_bytes(b"not a checkpoint")
    with pytest.raises(CrossFuseError, match="junk.model: cannot be read"):
        load_crossfuse(tmp_path / "junk.model")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.model")
    with pytest.raises(CrossFuseError, match="other.model: neither"):
        load_crossfuse(tmp_path / "other.model")
