"""The settings beyond the reference: feature_norm, cam_gate (tiny models) and the presets that use them."""
import pytest
import torch

from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from cli.training_start import settings
from formats.checkpoint import load_crossfuse, save_model
from net.config import ConfigError, ModelConfig
from net.encoder import Encoder
from net.layers import box_mean_3x3, brighter_source
from net.model import CrossFuse, output_stats, standardise_pair
from training.optim import lr_at
from training.presets import DEMO, PRESETS, STUDY_DEMO
from utils.args_base import defaults
from utils.errors import CrossFuseError

TINY = dict(shallow=4, growth=4, deep=8, decoder=8, tile=4, heads=2, mlp_ratio=2)


def test_standardise_pair_centres_for_the_cam_and_keeps_activity_ratios():
    torch.manual_seed(0)
    a = 5 + 0.3 * torch.randn(2, 8, 6, 6)  # per-channel offsets dominate, as in stage-1 deep features
    b = 9 + 0.5 * torch.randn(2, 8, 6, 6)
    sa, sb, ca, cb = standardise_pair(a, b)
    assert ca.mean(dim=(2, 3)).abs().max() < 1e-5 and cb.mean(dim=(2, 3)).abs().max() < 1e-5
    std = torch.cat([ca, cb], 1).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(std, torch.ones(2))
    ratio = box_mean_3x3(a) / (box_mean_3x3(a) + box_mean_3x3(b))
    torch.testing.assert_close(box_mean_3x3(sa) / (box_mean_3x3(sa) + box_mean_3x3(sb)), ratio)


def test_unknown_feature_norm_is_refused():
    with pytest.raises(ConfigError, match="feature_norm='layer': expected one of none, standard"):
        ModelConfig(feature_norm="layer")


def test_closed_gate_hides_the_cam_and_still_learns():
    torch.manual_seed(0)
    model = CrossFuse(ModelConfig(**TINY, feature_norm="standard", cam_gate=True)).train()
    ir, vi = 255 * torch.rand(2, 1, 32, 32), 255 * torch.rand(2, 1, 32, 32)
    out = model(ir, vi)
    out.square().mean().backward()
    assert model.fusion.gate.grad.abs() > 0  # the gate can open
    with torch.no_grad():
        for p in model.fusion.cam.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(model(ir, vi), out)  # but while it is 0 the CAM does not reach the output


def test_settings_survive_a_checkpoint(tmp_path):
    model = CrossFuse(ModelConfig(**TINY, feature_norm="standard", cam_gate=True)).eval()
    with torch.no_grad():
        model.fusion.gate.fill_(0.5)
    path = save_model(tmp_path / "m.model", model, "crossfuse")
    loaded = load_crossfuse(path).eval()
    assert loaded.cfg.feature_norm == "standard" and loaded.cfg.cam_gate
    ir, vi = 255 * torch.rand(1, 1, 40, 48), 255 * torch.rand(1, 1, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ir, vi), model(ir, vi))


def test_defaults_add_no_parameter():
    model = CrossFuse(ModelConfig(**TINY))
    assert model.fusion.gate is None
    assert not any("gate" in k for k in model.state_dict())


@pytest.mark.parametrize("kind", ["standard", "rule"])
def test_standardised_output_takes_its_statistics_from_the_inputs(kind):
    torch.manual_seed(0)
    model = CrossFuse(ModelConfig(**TINY, output_norm=kind)).train()
    ir, vi = 255 * torch.rand(2, 1, 40, 48), 120 * torch.rand(2, 1, 40, 48)
    out = model(ir, vi)
    var, mean = torch.var_mean(out, dim=(-2, -1), correction=0)
    want_mean, want_std = output_stats(kind, ir, vi)
    torch.testing.assert_close(mean, want_mean.view(2, 1))
    torch.testing.assert_close(var.sqrt(), want_std.view(2, 1))
    out.square().mean().backward()
    assert model.fusion.out_gain.grad is not None and model.fusion.out_offset.grad is not None
    model.eval()
    with torch.no_grad():
        model.fusion.out_offset.fill_(5.0)  # far outside 0..255: inference clamps, training does not
        fused = model(ir, vi)
    assert fused.min() >= 0 and fused.max() <= 255 and fused.max() == 255


@pytest.mark.parametrize("kind", ["minmax", "standard", "rule"])
def test_bf16_outputs_and_features_get_their_statistics_in_float32(kind):
    """Under --amp the decoder's output and the features are bf16, whose 8 bits of mantissa cannot hold a
    spread that is small beside the mean: taken in bf16, the standardisation turned trained models' TNO
    fusions into flat grey. In float32 a bf16 map gives what its float32 copy gives."""
    torch.manual_seed(0)
    fusion = CrossFuse(ModelConfig(**TINY, output_norm=kind)).fusion.eval()
    ir, vi = 255 * torch.rand(1, 1, 24, 24), 200 * torch.rand(1, 1, 24, 24)
    z = (1000 + torch.randn(1, 1, 24, 24)).bfloat16()  # a spread of 1 beside a mean of 1000
    with torch.no_grad():
        torch.testing.assert_close(fusion.finish(z, ir, vi), fusion.finish(z.float(), ir, vi))
        assert fusion.finish(z, ir, vi).std() > 1
    a, b = ((500 + torch.randn(1, 4, 12, 12)).bfloat16() for _ in range(2))
    for got, want in zip(standardise_pair(a, b), standardise_pair(a.float(), b.float()), strict=True):
        torch.testing.assert_close(got, want)


def test_the_shallow_layer_runs_in_float32_under_bf16_autocast():
    """The decoder weighs the shallow maps by their local activity, which in a flat sky is as small as bf16's
    rounding: under autocast the shallow layer stays float32 (whole maps in training, bands at inference)."""
    encoder = Encoder(ModelConfig(**{k: TINY[k] for k in ("shallow", "growth", "deep")})).eval()
    x = 255 * torch.rand(1, 1, 40, 40)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sh, de = encoder(x)
        lazy, _ = encoder.encode_lazily(x)
        band = lazy.rows(0, 40)
    assert sh.dtype == band.dtype == torch.float32 and de.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(sh, encoder(x)[0])


@pytest.mark.parametrize("deep_weights", ["signed", "magnitude"])
def test_deep_weights_of_a_flat_sky_whose_channel_sums_cancel(deep_weights):
    """A flat dark IR sky beside a flat bright VIS sky whose deep channel sums slowly turn from cancelling the
    IR's to not (as trained encoders give on TNO 08, docs/cpu-study.md): the reference's signed sums put a pole
    in the weights there, a dark-cored, bright-rimmed blob in the decoder's output; magnitudes keep the
    weights in [0, 1] and the output as flat as its inputs."""
    torch.manual_seed(0)
    decoder = CrossFuse(ModelConfig(**TINY, deep_weights=deep_weights)).fusion.decoder.eval()
    h, w = 6, 16
    ir_de = torch.ones(1, 8, h, w)
    vi_de = -1 - 0.01 * (torch.arange(w) - 7.5).view(1, 1, 1, w).expand(1, 8, h, w)  # sums cross -IR's mid-map
    wx, wy = decoder.deep_weights(ir_de, vi_de)
    flat_sky = torch.full((1, 4, 8 * h, 8 * w), 0.5)
    with torch.no_grad():
        z = decoder(torch.zeros(1, 8, h, w), flat_sky, ir_de, flat_sky, vi_de)
    if deep_weights == "signed":
        assert wx.abs().max() > 100 and z.max() - z.min() > 50  # the pole, and the blob it draws
    else:
        assert wx.min() >= 0 and wy.min() >= 0 and (wx + wy).max() <= 1
        assert z.max() - z.min() < 0.05


def test_rule_statistics_are_those_of_the_loss_target():
    ir, vi = 255 * torch.rand(1, 1, 30, 30), 255 * torch.rand(1, 1, 30, 30)
    mean, std = output_stats("rule", ir, vi)
    target = brighter_source(ir, vi)
    torch.testing.assert_close(mean.flatten(), target.mean().reshape(1))
    torch.testing.assert_close(std.flatten(), target.std(correction=0).reshape(1))


def test_warm_up_ramps_the_lr_step_by_step_then_follows_the_schedule():
    config = settings(EndToEnd, ["--warmup_epochs=1", "--lr=4e-3", "--epochs=4"], "")
    assert [lr_at(config, 0, b, 4) for b in range(4)] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3])
    plain = settings(EndToEnd, ["--lr=4e-3", "--epochs=4"], "")
    assert lr_at(config, 1, 0, 4) == lr_at(plain, 1) and lr_at(plain, 0, 2, 4) == 4e-3


# ------------------------------------------------------------------ presets and the args files

FAIRNESS_KEYS = ("batch", "lr", "epochs", "weight_decay", "lr_schedule", "lr_min", "w_int", "w_grad",
                 "temperature", "feature_norm", "cam_gate", "image_size", "train_num")


@pytest.mark.parametrize("preset", ["fair", "cpu"])
def test_preset_trains_both_arms_alike(preset):
    stage2, end_to_end = (settings(cls, [f"--preset={preset}"], "") for cls in (Stage2, EndToEnd))
    assert stage2.preset == end_to_end.preset == preset
    assert {k: getattr(stage2, k) for k in FAIRNESS_KEYS} == {k: getattr(end_to_end, k) for k in FAIRNESS_KEYS}


def test_reference_preset_is_the_args_files():
    for cls in (Stage1, Stage2, EndToEnd):
        assert settings(cls, ["--preset=reference"], "").as_dict() == {**defaults(cls), "preset": "reference"}
    assert settings(Stage2, [], "").lr_schedule == "step"
    assert settings(EndToEnd, [], "").lr_schedule == "cosine"


def test_command_line_wins_over_the_preset_wherever_it_stands():
    for argv in (["--epochs=3", "--preset=cpu"], ["--preset=cpu", "--epochs=3"]):
        config = settings(EndToEnd, argv, "")
        assert config.epochs == 3 and config.image_size == 64


def test_unknown_preset_is_one_line():
    with pytest.raises(CrossFuseError, match=r"--preset=fast: unknown preset \(expected one of reference, fair, cpu\)"):
        settings(Stage2, ["--preset=fast"], "")


def test_every_preset_and_demo_value_is_a_setting_of_its_args_file():
    for sets in (*PRESETS.values(), DEMO, STUDY_DEMO):
        for cls, values in sets.items():
            assert set(values) <= set(defaults(cls)), (cls.__name__, set(values) - set(defaults(cls)))


def test_settings_are_typed_and_frozen():
    config = settings(EndToEnd, ["--epochs=3"], "")
    assert isinstance(config, EndToEnd) and config.epochs == 3 and isinstance(config.lr, float)
    with pytest.raises(AttributeError, match="frozen"):
        config.epochs = 4
    with pytest.raises(AttributeError):
        config.epochz  # noqa: B018 - a misspelt setting fails where it is read
    assert config.replace(epochs=4).epochs == 4 and config.epochs == 3
    with pytest.raises(CrossFuseError, match="unknown setting"):
        EndToEnd(epochz=4)
