"""compare_training_approaches.py on tiny fake runs: the full report, its statistics and its error messages."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import compare_training_approaches as compare
from net.checkpoint import save_model
from net.config import ModelConfig
from net.encoder import AutoEncoder
from net.model import CrossFuse, FusionNet
from net.reference import to_reference
from utils.images import write_gray
from utils.metrics import METRICS

TINY = ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, patch=2, heads=2, mlp_ratio=2)
PLOTS = ("loss_raw.png", "loss_smoothed.png", "loss_distribution.png", "loss_convergence.png", "loss_terms.png",
         "temperature.png", "lr.png", "training_cost.png", "fused_grid.png", "feature_maps.png", "cka.png")


def write_loss(path: Path, terms: tuple[str, ...], config: dict, epochs: int = 2, steps: int = 6,
               temperature: bool = False) -> None:
    """A cumulative loss file in the training scripts' format."""
    rng = np.random.default_rng(len(str(path)))
    n = epochs * steps
    decay = 100 * np.exp(-np.arange(n) / n) + rng.uniform(0, 5, n)
    data = {"loss_data": decay[None], "lr": np.full((1, n), 1e-3),
            "temperature": (1 - 0.01 * np.arange(n) / n if temperature else np.ones(n))[None],
            "epoch": np.repeat(np.arange(1, epochs + 1), steps)[None].astype(float),
            "epoch_time": np.full((1, epochs), 12.5), "peak_memory": np.full((1, epochs), 3 * 2**20),
            "memory_kind": "rss", "config": json.dumps(config)}
    data.update({f"loss_{t}": (decay / (i + 2))[None] for i, t in enumerate(terms)})
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, data)


def make_test_set(folder: Path, pairs: int = 7, size: int = 32) -> Path:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:size, :size]
    for i in range(pairs):
        ir = np.clip(120 + 80 * np.sin(x / (3 + i)) + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
        vi = np.clip(60 + 4 * y + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
        write_gray(folder / "ir" / f"{i:02d}.png", ir)
        write_gray(folder / "vi" / f"{i:02d}.png", vi)
    return folder


def make_runs(root: Path, test_dir: Path) -> None:
    """Both runs; the end-to-end model shares the stage-1 encoders, so their CKA must be exactly 1."""
    torch.manual_seed(0)
    config = {**TINY.to_dict(), "test_dir": str(test_dir)}
    autoencoders = {m: AutoEncoder(TINY) for m in ("ir", "vi")}
    for modality, ae in autoencoders.items():
        save_model(root / "autoencoder" / f"auto_encoder_epoch_2_{modality}.model", ae, "autoencoder", epoch=2)
        write_loss(root / "autoencoder" / "loss" / f"loss_data_autoencoder_{modality}_e1.mat", ("mse", "ssim"),
                   config)
    two_stage = CrossFuse.from_parts(autoencoders["ir"].encoder, autoencoders["vi"].encoder, FusionNet(TINY), True)
    end_to_end = CrossFuse.from_parts(autoencoders["ir"].encoder, autoencoders["vi"].encoder, FusionNet(TINY))
    for epoch in (1, 2):
        save_model(root / "transfuse" / f"fusetrans_epoch_{epoch}.model", two_stage, "crossfuse", epoch=epoch)
        save_model(root / "end_to_end" / f"end_to_end_fusion_epoch_{epoch}.model", end_to_end, "crossfuse",
                   epoch=epoch)
        for modality in ("ir", "vi"):
            save_model(root / "end_to_end" / f"end_to_end_{modality}_encoder_epoch_{epoch}.model",
                       getattr(end_to_end, f"{modality}_encoder"), "encoder", epoch=epoch, config=TINY)
    write_loss(root / "transfuse" / "loss" / "loss_data_trans_e0.mat", ("intensity", "gradient"), config, 1)
    write_loss(root / "transfuse" / "loss" / "loss_data_trans_e1.mat", ("intensity", "gradient"), config)
    write_loss(root / "end_to_end" / "loss" / "loss_data_end_to_end_e1.mat", ("intensity", "gradient"), config,
               temperature=True)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and spinning threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_runs(tmp_path / "models", make_test_set(tmp_path / "test"))
    return tmp_path / "models"


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_full_report_from_configured_test_folder(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, _ = run_main(["--root", runs, "--out", out, "--device", "cpu"], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert {"runs", "test", "metrics", "comparison", "cka", "loss", "training_cost", "plots"} <= report.keys()
    assert report["runs"]["two-stage"]["epoch"] == 2 and report["test"]["pairs"] == 7
    assert report["test"]["skipped_metrics"] == ["VIF"]  # 32 x 32 is below VIF's 41 px
    assert set(report["comparison"]) == set(METRICS) - {"VIF"}
    for metric, test in report["comparison"].items():
        assert test["verdict"] in compare.VERDICTS
        assert len(test["per_image_diff"]) == 7
        assert test["p_value"] is None or 0 <= test["p_value"] <= 1
        for method in ("two-stage", "end-to-end"):
            assert len(report["metrics"][method]["per_image"]) == 7
            assert metric in report["metrics"][method]["mean"]
    for modality in ("ir", "vi"):
        for layer in compare.LAYERS:
            assert report["cka"][modality][layer] == pytest.approx(1.0, abs=1e-6)
    cost = report["training_cost"]
    assert set(cost["two-stage"]["stages"]) == {"stage 1 (IR)", "stage 1 (VIS)", "stage 2"}
    assert cost["two-stage"]["total_time_s"] == pytest.approx(3 * 2 * 12.5)
    assert cost["end-to-end"]["total_time_s"] == pytest.approx(25.0)
    assert report["loss"]["end-to-end"]["final_temperature"] < 1.0
    assert set(report["loss"]["two-stage"]["final_terms"]) == {"loss_intensity", "loss_gradient"}

    markdown = (out / "report.md").read_text()
    for name in PLOTS:
        assert (out / name).stat().st_size > 0
        assert f"({name})" in markdown
    assert "Wilcoxon" in markdown and "Encoder analysis" in markdown
    assert "verdict" in stdout and "training cost" in stdout and "stage 1 (IR)" in stdout


def test_chosen_epochs_max_images_and_reference_column(runs, tmp_path, capsys):
    reference = tmp_path / "reference"
    reference.mkdir()
    for modality in ("ir", "vi"):
        torch.save(to_reference(AutoEncoder(TINY)), reference / f"auto_encoder_{modality}.model")
    torch.save(to_reference(FusionNet(TINY)), reference / "fusetrans_epoch_32.model")
    (runs / "transfuse" / "fusetrans_epoch_5.model").write_bytes((runs / "transfuse" / "fusetrans_epoch_2.model")
                                                                  .read_bytes())  # newer than its loss file
    out = tmp_path / "report"
    code, stdout, _ = run_main(["--root", runs, "--epoch-end-to-end", 1, "--test", tmp_path / "test",
                                "--max-images", 3, "--reference", reference, "--out", out], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["end-to-end"]["epoch"] == 1 and report["runs"]["two-stage"]["epoch"] == 5
    assert report["test"]["pairs"] == 3
    assert any("fusetrans_epoch_5.model is from epoch 5" in w and "ends at epoch 2" in w for w in report["warnings"])
    assert set(report["metrics"]) == {"two-stage", "end-to-end", "reference"}
    assert {t["verdict"] for t in report["comparison"].values()} <= {"too little data", "no significant difference"}
    assert "reference" in stdout


def test_missing_runs_say_what_to_train(tmp_path, capsys):
    code, _, err = run_main(["--root", tmp_path / "models"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"no two-stage run in {tmp_path / 'models' / 'transfuse'}: run train_autoencoder.py and " \
           "train_fusion.py first" in err
    assert "no end-to-end run in" in err and "run train_end_to_end.py first" in err


def test_missing_end_to_end_checkpoint_and_epoch(runs, tmp_path, capsys):
    code, _, err = run_main(["--root", runs, "--epoch-two-stage", 7, "--test", tmp_path / "test"], capsys)
    assert code == 2 and "no two-stage checkpoint for epoch 7 (epochs saved: 1, 2)" in err
    for path in (runs / "end_to_end").glob("end_to_end_fusion_*.model"):
        path.unlink()
    code, _, err = run_main(["--root", runs, "--test", tmp_path / "test"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no end-to-end checkpoint (end_to_end_fusion_epoch_N.model)" in err and "train_end_to_end.py" in err


def test_empty_and_corrupt_loss_files(runs, tmp_path, capsys):
    loss = runs / "transfuse" / "loss" / "loss_data_trans_e1.mat"
    scipy.io.savemat(loss, {"loss_data": np.zeros((1, 0)), "config": "{}"})
    code, _, err = run_main(["--root", runs, "--test", tmp_path / "test"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{loss}: holds no loss values" in err and "train_fusion.py" in err
    loss.write_bytes(b"not a mat file at all")
    code, _, err = run_main(["--root", runs, "--test", tmp_path / "test"], capsys)
    assert code == 2 and f"{loss}: not a readable .mat loss file" in err


def test_checkpoint_from_another_configuration(runs, tmp_path, capsys):
    config = {**TINY.to_dict(), "deep": 16}
    write_loss(runs / "end_to_end" / "loss" / "loss_data_end_to_end_e1.mat", ("intensity", "gradient"), config)
    code, _, err = run_main(["--root", runs, "--test", tmp_path / "test"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "another configuration" in err and "deep 16 vs 8" in err and "train_end_to_end.py" in err


def test_no_test_set_configured(runs, tmp_path, capsys):
    for mat in runs.rglob("loss_data_*.mat"):
        data = scipy.io.loadmat(mat)
        data["config"] = json.dumps(TINY.to_dict())
        scipy.io.savemat(mat, {k: v for k, v in data.items() if not k.startswith("__")})
    code, _, err = run_main(["--root", runs, "--out", tmp_path / "report"], capsys)
    assert code == 2 and "no test set configured: pass --test DIR" in err


@pytest.mark.parametrize(("diff", "verdict"), [
    (np.linspace(0.1, 0.8, 8), "better"),
    (-np.linspace(0.1, 0.8, 8), "worse"),
    (np.array([0.3, -0.2, 0.1, -0.4, 0.25, -0.15, 0.05, -0.35]), "no significant difference"),
    (np.zeros(8), "no significant difference"),
    (np.array([1.0, 2.0, 3.0]), "too little data"),
    (np.array([1.0, 2.0, 3.0, 0, 0, 0, 0, 0]), "too little data"),  # only 3 pairs differ
    (np.zeros(2), "too little data"),
])
def test_paired_test_verdicts(diff, verdict):
    base = np.linspace(5, 6, diff.size)
    result = compare.paired_test(base, base + diff, 0.05)
    assert result["verdict"] == verdict
    assert 0 <= result["p_value"] <= 1


def test_paired_test_ignores_infinite_scores():
    base = np.array([30.0, 31, 32, 33, 34, 35, np.inf])
    result = compare.paired_test(base, base + 1, 0.05)
    assert result["n"] == 6 and result["verdict"] == "better" and result["p_value"] == pytest.approx(2 / 2**6)


def test_min_pairs():
    assert compare.min_pairs(0.05) == 6
    assert compare.min_pairs(0.01) == 8


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert compare.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert compare.linear_cka(x, 3 * x @ rotation + 7) == pytest.approx(1.0, abs=1e-9)
    assert compare.linear_cka(x, rng.normal(size=(500, 4))) < 0.1
    assert np.isnan(compare.linear_cka(x, np.ones((500, 3))))
