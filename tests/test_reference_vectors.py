"""The model, loaded with the reference-layout weights, reproduces every reference vector to 1e-4."""
import pytest
import torch

from tests.reference_models import reference_crossfuse, reference_parts
from training.losses import fusion_loss, reconstruction_loss
from training.msssim import msssim

TOL = 1e-4
INFER = ["infer_200x264_shift", "infer_200x264_noshift", "infer_203x261_shift"]


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Relative to the reference tensor's largest magnitude, as the spec's tolerance is stated."""
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours.detach().float() - theirs).abs().max().item() / max(theirs.abs().max().item(), 1e-12)
    assert err <= TOL, f"{what}: relative error {err:.2e} > {TOL}"


@pytest.fixture(scope="module")
def vectors(reference_dir):
    return torch.load(reference_dir / "crossfuse_vectors.pt")


@pytest.fixture(scope="module")
def model(reference_dir):
    return reference_crossfuse(reference_dir)


@pytest.mark.parametrize("entry", INFER)
def test_inference_entries(entry, vectors, model):
    v = vectors[entry]
    model.eval()
    with torch.no_grad():
        ir_sh, ir_de, vi_sh, vi_de = model.encode(v["ir"], v["vi"])  # inference: shallow maps made on request
        assert_close(ir_sh.rows(0, ir_sh.shape[-2])[:, :4], v["ir_shallow_first4"], f"{entry} ir_shallow_first4")
        assert_close(ir_de, v["ir_deep"], f"{entry} ir_deep")
        assert_close(vi_de, v["vi_deep"], f"{entry} vi_deep")
        assert_close(model.fusion.cam(ir_de, vi_de, tiled=True), v["cam_out"], f"{entry} cam_out")
        assert_close(model(v["ir"], v["vi"]), v["fused"], f"{entry} fused")


def test_shift_is_a_no_op(vectors):
    """The reference's half-tile shift only permutes tokens: with and without it agree."""
    assert_close(vectors["infer_200x264_noshift"]["fused"], vectors["infer_200x264_shift"]["fused"], "shift")


def test_reconstruction(vectors, reference_dir):
    ir, _, _ = reference_parts(reference_dir)
    v = vectors["recon_203x261"]
    with torch.no_grad():
        assert_close(ir.eval()(v["x"]), v["recon"], "recon_203x261")


def test_training_mode_fusion(vectors, model):
    v = vectors["train_fusion_2x256"]
    model.train()
    with torch.no_grad():
        _, ir_de, _, vi_de = model.encode(v["ir"], v["vi"])
        assert_close(model.fusion.cam(ir_de, vi_de), v["cam_out"], "train cam_out")
        fused = model(v["ir"], v["vi"])
        assert_close(fused, v["fused"], "train fused")
        loss = fusion_loss(fused, v["ir"], v["vi"])
    assert_close(loss["intensity"], v["intensity_loss"], "intensity_loss")
    assert_close(loss["gradient"], v["gradient_loss"], "gradient_loss")
    assert_close(loss["total"], v["total_loss"], "total_loss")


def test_training_mode_autoencoder(vectors, reference_dir):
    ir, _, _ = reference_parts(reference_dir)
    v = vectors["train_autoencoder_2x64"]
    with torch.no_grad():
        recon = ir.train()(v["x"])
        loss = reconstruction_loss(recon, v["x"])
    assert_close(recon, v["recon"], "train recon")
    assert_close(loss["mse"], v["mse_loss"], "mse_loss")
    assert_close(1 - loss["ssim"], v["msssim"], "msssim")


def test_msssim_cases(vectors):
    v = vectors["msssim_cases"]
    for i in range(v["img1"].shape[0]):
        assert_close(msssim(v["img1"][i], v["img2"][i], normalize=True), v["msssim"][i], f"msssim case {i}")
