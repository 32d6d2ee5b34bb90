"""The settings beyond the reference: feature_norm = "standard" and cam_gate (tiny models)."""
import pytest
import torch

from net.checkpoint import load_crossfuse, save_model
from net.config import ModelConfig
from net.layers import box_mean_3x3
from net.model import CrossFuse, standardise_pair
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
    with pytest.raises(CrossFuseError, match="feature_norm='layer': expected one of none, standard"):
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
