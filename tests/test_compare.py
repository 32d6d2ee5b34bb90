"""compare_training_approaches.py on tiny fake runs, and evaluation/stats.py on cases with known answers."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import compare_training_approaches as compare
from dataio.images import write_gray
from dataio.pairs import find_pairs
from evaluation import analysis, comparison_report, scoring, stats
from evaluation import runs as runs_module
from formats.checkpoint import load_crossfuse, save_model
from formats.reference import to_reference
from inference.files import read_pair
from metrics.core import METRICS
from net.config import ModelConfig
from net.encoder import AutoEncoder
from net.model import CrossFuse, FusionNet

TINY = ModelConfig(shallow=4, growth=4, deep=8, decoder=8, tile=4, patch=2, heads=2, mlp_ratio=2)
PLOTS = ("loss_curves.png", "loss_terms.png", "temperature.png", "lr.png", "training_cost.png", "fused_grid.png",
         "feature_maps.png", "cka.png", "quality_vs_time.png", "quality_vs_epoch.png")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only spin on a busy machine


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
    code, stdout, _ = run_main(["--root", runs, "--out", out, "--device", "cpu", "--curve-images", 2], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert {"runs", "test", "scores", "per_image", "comparison", "curves", "compute_to_reach", "cka", "loss",
            "training_cost", "plots"} <= report.keys()
    assert report["runs"]["two-stage"][0]["epoch"] == 2 and report["test"]["pairs"] == 7
    assert report["test"]["skipped_metrics"] == ["VIF"]  # 32 x 32 is below VIF's 41 px
    assert set(report["comparison"]) == {"end-to-end"}
    assert set(report["comparison"]["end-to-end"]) == set(METRICS) - {"VIF"}
    for metric, test in report["comparison"]["end-to-end"].items():
        assert test["verdict"] in stats.VERDICTS
        assert test["p_value"] is None or 0 <= test["p_value"] <= test["p_holm"] <= 1
        assert test["ci_low"] <= test["diff"] <= test["ci_high"]
        for method in ("two-stage", "end-to-end"):
            assert len(report["per_image"][method]["transfuse" if method == "two-stage" else "end_to_end"]) == 7
            assert metric in report["scores"][method]["mean"] and report["scores"][method]["sd"][metric] is None
    for modality in ("ir", "vi"):
        for layer in ("shallow", "dense1", "deep"):
            assert report["cka"]["end-to-end"][modality][layer] == pytest.approx(1.0, abs=1e-6)
    cost = report["training_cost"]
    assert set(cost["two-stage"][0]["stages"]) == {"stage 1 (IR)", "stage 1 (VIS)", "stage 2"}
    assert cost["two-stage"][0]["total_time_s"] == pytest.approx(3 * 2 * 12.5)
    assert cost["end-to-end"][0]["total_time_s"] == pytest.approx(25.0)
    two_stage_curve = report["curves"]["two-stage"][0]
    assert two_stage_curve["epoch"] == [1, 2] and two_stage_curve["time_s"] == pytest.approx([62.5, 75.0])
    assert report["curves"]["end-to-end"][0]["time_s"] == pytest.approx([12.5, 25.0])
    assert report["loss"]["end-to-end"]["end_to_end"]["final_temperature"] < 1.0
    assert set(report["loss"]["two-stage"]["transfuse"]["final_terms"]) == {"loss_intensity", "loss_gradient"}
    assert report["single_run"] and comparison_report.SINGLE_RUN_NOTE in report["warnings"]

    markdown = (out / "report.md").read_text()
    for name in PLOTS:
        assert (out / name).stat().st_size > 0
        assert f"({name})" in markdown
    assert "run-to-run variation (initialisation, data order) is not measured" in markdown
    assert "Wilcoxon" in markdown and "Holm" in markdown and "Encoder analysis" in markdown
    assert "verdict" in stdout and "training cost" in stdout and "stage 1 (IR)" in stdout
    assert "not measured" in stdout
    assert not list(out.glob(".*"))  # no temporary or probe files left


def test_metric_profile_names_the_metrics_and_their_direction(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code, _, _ = run_main(["--root", runs, "--out", out, "--device", "cpu", "--curve-images", 0,
                           "--profile", "tang"], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["profile"] == "tang" and {"MSE", "Nabf"} <= set(report["test"]["metrics"])
    assert report["comparison"]["end-to-end"]["Nabf"]["higher_is_better"] is False
    assert report["comparison"]["end-to-end"]["EN"]["higher_is_better"] is True
    assert "Metric profile: `tang`" in (out / "report.md").read_text() and "lower is better for" in (
        out / "report.md").read_text()
    assert (out / "table.tex").read_text().startswith("% metric profile: tang")
    code, _, err = run_main(["--root", runs, "--out", out, "--profile", "matlab"], capsys)
    assert code == 2 and "unknown metric profile 'matlab'" in err


def test_guards_flag_a_collapsed_model_and_withhold_its_verdicts(runs, tmp_path, capsys):
    model = load_crossfuse(runs / "end_to_end" / "end_to_end_fusion_epoch_2.model")
    with torch.no_grad():  # an output of 3 plus rounding-sized detail: a flat grey image for every input
        model.fusion.decoder.out.bn.weight.fill_(1e-7)
        model.fusion.decoder.out.bn.bias.fill_(3.0)
    save_model(runs / "end_to_end" / "end_to_end_fusion_epoch_2.model", model, "crossfuse", epoch=2)
    out = tmp_path / "report"
    code, _, _ = run_main(["--root", runs, "--out", out, "--device", "cpu", "--curve-images", 0], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["flags"]["end-to-end"]) == set(report["test"]["names"])
    assert all("collapsed" in " ".join(what) for what in report["flags"]["end-to-end"].values())
    assert set(report["reference_rules"]) == {"pixel-mean", "pixel-max"}
    results = report["comparison"]["end-to-end"].values()
    assert all(r["verdict_without_flagged"] is None for r in results)  # every image flagged: nothing left
    assert all(r["flag_driven"] == (r["verdict"] in (stats.BETTER, stats.WORSE)) for r in results)
    markdown = (out / "report.md").read_text()
    assert "## Flagged images" in markdown and "(flagged_images.png)" in markdown
    assert "rule: pixel-mean" in markdown and (out / "flagged_images.png").stat().st_size > 0


def test_settings_in_which_the_arms_differ_are_boxed(runs, tmp_path, capsys):
    out = tmp_path / "alike"
    assert run_main(["--root", runs, "--out", out, "--device", "cpu", "--curve-images", 0], capsys)[0] == 0
    assert json.loads((out / "report.json").read_text())["training_differences"] == {}
    assert "Trained alike" in (out / "report.md").read_text()
    config = {**TINY.to_dict(), "test_dir": str(runs.parent / "test"), "lr": 1e-3, "epochs": 2}
    write_loss(runs / "transfuse" / "loss" / "loss_data_trans_e1.mat", ("intensity", "gradient"),
               {**config, "lr_schedule": "step"})
    write_loss(runs / "end_to_end" / "loss" / "loss_data_end_to_end_e1.mat", ("intensity", "gradient"),
               {**config, "lr_schedule": "cosine"}, temperature=True)
    out = tmp_path / "report"
    code, stdout, err = run_main(["--root", runs, "--out", out, "--device", "cpu", "--curve-images", 0], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["training_differences"] == {"lr_schedule": {"two-stage": "step", "end-to-end": "cosine"}}
    assert "The arms were not trained alike" in (out / "report.md").read_text()
    assert "NOT TRAINED ALIKE: lr_schedule two-stage='step', end-to-end='cosine'" in stdout


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
                                "--max-images", 3, "--reference", reference, "--out", out, "--curve-images", 0],
                               capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["runs"]["end-to-end"][0]["epoch"] == 1 and report["runs"]["two-stage"][0]["epoch"] == 5
    assert report["test"]["pairs"] == 3 and report["curves"] == {}
    assert any("fusetrans_epoch_5.model is from epoch 5" in w and "ends at epoch 2" in w for w in report["warnings"])
    assert set(report["scores"]) == {"two-stage", "end-to-end", "reference"}
    verdicts = {t["verdict"] for c in report["comparison"].values() for t in c.values()}
    assert verdicts == {"too little data"}  # 3 images can never give p < 0.05
    assert "reference" in stdout
    markdown = (out / "report.md").read_text()
    assert "## Training" in markdown and "(loss_curves.png)" in markdown and "quality_vs_time" not in markdown
    assert not list(reference.rglob("eval"))  # nothing cached into the released-model folder


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


def test_unwritable_report_folder_fails_before_any_scoring(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scoring.Scorer, "scores", lambda *a, **k: pytest.fail("scored before checking the output"))
    (tmp_path / "file").write_text("")
    code, _, err = run_main(["--root", runs, "--out", tmp_path / "file" / "report"], capsys)
    assert code == 2 and err.count("\n") == 1 and "report folder is not writable" in err


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
    result = stats.paired_test(base, base + diff, 0.05)
    assert result["verdict"] == verdict
    assert 0 <= result["p_value"] <= 1


def test_paired_test_ignores_infinite_scores():
    base = np.array([30.0, 31, 32, 33, 34, 35, np.inf])
    result = stats.paired_test(base, base + 1, 0.05)
    assert result["n"] == 6 and result["verdict"] == "better" and result["p_value"] == pytest.approx(2 / 2**6)


def test_min_pairs():
    assert stats.min_pairs(0.05) == 6
    assert stats.min_pairs(0.01) == 8


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert stats.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert stats.linear_cka(x, 3 * x @ rotation + 7) == pytest.approx(1.0, abs=1e-9)
    assert stats.linear_cka(x, rng.normal(size=(500, 4))) < 0.1
    assert np.isnan(stats.linear_cka(x, np.ones((500, 3))))


# ------------------------------------------------------------------ k approaches x n runs


def make_study(study: Path, test_dir: Path, epochs: int = 3) -> None:
    """Three approaches x two seeds as study.py lays them out; two-stage and warm-start share stage 1."""
    config = {**TINY.to_dict(), "test_dir": str(test_dir)}
    for seed in (0, 1):
        torch.manual_seed(seed)
        stage1 = study / "stage-1" / f"seed_{seed}" / "autoencoder"
        autoencoders = {m: AutoEncoder(TINY) for m in ("ir", "vi")}
        sources = []
        for modality, ae in autoencoders.items():
            sources.append(str(save_model(stage1 / f"auto_encoder_epoch_2_{modality}.model", ae, "autoencoder")))
            write_loss(stage1 / "loss" / f"loss_data_autoencoder_{modality}_e1.mat", ("mse", "ssim"), config)
        encoders = [autoencoders[m].encoder for m in ("ir", "vi")]
        for arm, folder, stem, meta in (
                ("two-stage", "transfuse", "fusetrans", {"encoders": sources}),
                ("end-to-end", "end_to_end", "end_to_end_fusion", {}),
                ("warm-start", "end_to_end_warm", "end_to_end_fusion", {"encoders_from": sources})):
            run = study / arm / f"seed_{seed}" / folder
            model = CrossFuse.from_parts(*encoders, FusionNet(TINY)) if meta else CrossFuse(TINY)
            for epoch in range(1, epochs + 1):
                save_model(run / f"{stem}_epoch_{epoch}.model", model, "crossfuse", epoch=epoch, **meta)
            job = "trans" if arm == "two-stage" else "end_to_end"
            write_loss(run / "loss" / f"loss_data_{job}_e{epochs - 1}.mat", ("intensity", "gradient"), config, epochs)


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    make_study(tmp_path / "study", make_test_set(tmp_path / "test", pairs=6, size=48))
    return tmp_path / "study"


def test_study_report_k_approaches_n_runs_and_cache(study_dir, capsys, monkeypatch):
    code, stdout, _ = run_main(["--study", study_dir, "--curve-images", 2, "--bootstrap", 500], capsys)
    assert code == 0
    out = study_dir / "report"
    report = json.loads((out / "report.json").read_text())
    assert list(report["runs"]) == ["two-stage", "end-to-end", "warm-start"] and not report["single_run"]
    assert [r["label"] for r in report["runs"]["warm-start"]] == ["seed_0", "seed_1"]
    assert set(report["comparison"]) == {"end-to-end", "warm-start"}
    metrics = report["test"]["metrics"]
    for scores in report["scores"].values():
        for m in metrics:
            means = [r[m] for r in scores["run_means"]]
            assert scores["mean"][m] == pytest.approx(np.mean(means))
            assert scores["sd"][m] == pytest.approx(np.std(means, ddof=1), nan_ok=True)
    # stage 1 (2 modalities x 2 epochs x 12.5 s) counts for both arms that start from it, not for end-to-end
    assert report["curves"]["warm-start"][0]["time_s"] == pytest.approx([62.5, 75.0, 87.5])
    assert report["curves"]["end-to-end"][1]["time_s"] == pytest.approx([12.5, 25.0, 37.5])
    assert set(report["compute_to_reach"]) == {f"{a} to reach {b}" for a, b in (
        ("end-to-end", "two-stage"), ("two-stage", "end-to-end"), ("warm-start", "two-stage"),
        ("two-stage", "warm-start"))}
    assert set(report["training_cost"]["warm-start"][0]["stages"]) == {"stage 1 (IR)", "stage 1 (VIS)", "warm-start"}
    assert "run-to-run variation" not in (out / "report.md").read_text()
    assert "reaches two-stage's final quality" in stdout or "does not reach two-stage's" in stdout

    tex = (out / "table.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex
    assert tex.count("\\textbf{") == len(metrics)
    rows = (out / "table.csv").read_text().splitlines()
    assert rows[0].startswith("metric,two-stage mean,two-stage sd,two-stage runs") and len(rows) == 1 + len(metrics)
    assert len(list(study_dir.glob("*/seed_*/*/eval/*/scores.json"))) == 6 * (1 + 2)  # final on all + 2 epochs

    monkeypatch.setattr(scoring, "fuse_gray", lambda *a, **k: pytest.fail("fused again despite the cache"))
    pairs = find_pairs(study_dir.parent / "test").pairs
    scorer = scoring.Scorer(pairs, [read_pair(p) for p in pairs], metrics, torch.device("cpu"))
    run = runs_module.load_run("warm-start", "seed_1", study_dir / "warm-start" / "seed_1", None)
    per_image, fused = scorer.scores(run, 3, images=True)
    assert per_image == report["per_image"]["warm-start"]["seed_1"] and len(fused) == 6
    assert scorer.scores(run, 2, 2)[0].keys() == {p.name for p in pairs[:2]}
    fused_in = []  # a bf16 fusion is another fusion: cached apart, never taken for the fp32 one
    monkeypatch.setattr(scoring, "fuse_gray",
                        lambda model, ir, vi, device, amp: fused_in.append(amp) or (ir // 2 + vi // 2))
    bf16 = scoring.Scorer(pairs, [read_pair(p) for p in pairs], metrics, torch.device("cpu"), amp=True)
    assert bf16.scores(run, 3)[0] != per_image and fused_in == [True] * 6


def test_several_test_sets_get_a_report_each_and_a_summary_with_holm_across_them(study_dir, tmp_path, capsys):
    """--test NAME=DIR, repeated: a whole report per set in OUT/NAME/, and OUT/report.md with every set's
    scores beside the pixel-mean rule and each verdict with Holm's correction over all (set, metric) tests.
    DIR[START:END] takes a slice of a folder's pairs (the pairs a train_num run did not see)."""
    other = make_test_set(tmp_path / "other", pairs=7, size=44)
    out = tmp_path / "sets"
    code, stdout, _ = run_main(["--study", study_dir, "--test", f"first={tmp_path / 'test'}", "--test",
                                f"second={other}[2:]", "--out", out, "--curve-images", 2, "--bootstrap", 200], capsys)
    assert code == 0
    summary = json.loads((out / "report.json").read_text())
    per_set = {name: json.loads((out / name / "report.json").read_text()) for name in ("first", "second")}
    assert list(summary["sets"]) == ["first", "second"] and per_set["second"]["test"]["pairs"] == 5
    assert per_set["second"]["test"]["names"] == [p.name for p in find_pairs(other).pairs[2:]]
    assert per_set["second"]["test"]["source"] == f"{other}[2:]"
    assert per_set["first"]["curves"] and not per_set["second"]["curves"]  # the costly curve on the first set only
    for approach in ("end-to-end", "warm-start"):
        tests = [(name, m) for name, r in per_set.items() for m in r["comparison"][approach]]
        assert summary["tests_corrected"][approach] == len(tests)
        adjusted = stats.holm([per_set[name]["comparison"][approach][m]["p_value"] for name, m in tests])
        for (name, m), p in zip(tests, adjusted, strict=True):
            cell = summary["comparison"][approach][m][name]
            assert cell["p_holm_sets"] == pytest.approx(p, nan_ok=True)
            assert cell["p_holm_sets"] >= per_set[name]["comparison"][approach][m]["p_holm"] or math.isnan(p)
        for holds in summary["holds"][approach].values():
            assert sorted(n for names in holds.values() for n in names) == ["first", "second"]
    for name, r in per_set.items():
        assert summary["pixel_mean"][name] == r["reference_rules"]["pixel-mean"]["mean"]
        runs_means = r["scores"]["end-to-end"]["run_means"]
        beat = summary["runs_beating_pixel_mean"][name]["end-to-end"]["Qabf"]
        assert beat == sum(run["Qabf"] > r["reference_rules"]["pixel-mean"]["mean"]["Qabf"] for run in runs_means)
        assert (out / name / "report.md").is_file() and (out / name / "fused_grid.png").is_file()
    markdown = (out / "report.md").read_text()
    assert "### first" in markdown and "### second" in markdown and "(first/fused_grid.png)" in markdown
    assert "holds on" in markdown and "[full report](second/report.md)" in markdown
    assert "first: " in stdout and "second: " in stdout and "holds on" in stdout
    with pytest.raises(SystemExit) as stop:
        compare.main(["--study", str(study_dir), "--test", f"x={other}", "--test", f"x={other}"])
    assert stop.value.code == 2 and "two test sets named alike" in capsys.readouterr().err
    code, _, err = run_main(["--study", study_dir, "--test", f"{other}[7:]", "--out", tmp_path / "none"], capsys)
    assert code == 2 and f"{other}[7:]: no IR/VIS pairs found (the folder holds 7)" in err


def test_identical_approaches_give_no_significant_difference(study_dir, tmp_path, capsys):
    moved = study_dir.rename(tmp_path / "moved")  # the checkpoints' stage-1 paths now point nowhere
    code, _, _ = run_main(["--run", f"a={moved / 'two-stage'}", "--run", f"b={moved / 'two-stage'}",
                           "--baseline", "a", "--test", tmp_path / "test", "--out", tmp_path / "r",
                           "--curve-images", 0], capsys)
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(report["training_cost"]["b"][1]["stages"]) == {"stage 1 (IR)", "stage 1 (VIS)", "stage 2"}
    assert not any("no stage-1 loss files" in w for w in report["warnings"])
    comparison = report["comparison"]["b"]
    assert {r["verdict"] for r in comparison.values()} == {"no significant difference"}
    # the same runs: no difference at all, and an interval around zero as wide as the run-to-run noise
    assert all(r["diff"] == 0 and r["ci_low"] < 0 < r["ci_high"] for r in comparison.values())


def test_unknown_baseline_and_empty_study(study_dir, tmp_path, capsys):
    code, _, err = run_main(["--study", study_dir, "--baseline", "nope"], capsys)
    assert code == 2 and "--baseline nope: not among the approaches" in err
    code, _, err = run_main(["--study", tmp_path / "test"], capsys)
    assert code == 2 and "no ARM/seed_K run folders" in err


# ------------------------------------------------------------------ statistics with known answers


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(3)
    image_effect = rng.normal(50, 5, 40)  # some test images are easier than others, for both approaches
    base = image_effect + rng.normal(0, 0.3, (3, 1)) + rng.normal(0, 0.5, (3, 40))
    new = image_effect + 1.0 + rng.normal(0, 0.3, (3, 1)) + rng.normal(0, 0.5, (3, 40))
    diff, low, high = stats.hierarchical_bootstrap(base, new, 4000)
    assert low < 1.0 < high and low > 0
    assert diff == pytest.approx(new.mean() - base.mean())
    same, low0, high0 = stats.hierarchical_bootstrap(base, base.copy())
    assert same == 0 and low0 < 0 < high0  # runs are drawn independently per approach: run noise shows
    _, low1, high1 = stats.hierarchical_bootstrap(base[:1], new[:1], 4000)
    assert high1 - low1 < high - low  # one run each: run noise is invisible, the interval too narrow


def test_bootstrap_coverage_is_near_nominal():
    """Over many simulated studies with a true difference of 0.5, the 95% interval covers it most of the time."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(40):
        image = rng.normal(0, 2, 30)
        base = image + rng.normal(0, 0.4, (3, 1)) + rng.normal(0, 0.3, (3, 30))
        new = image + 0.5 + rng.normal(0, 0.4, (3, 1)) + rng.normal(0, 0.3, (3, 30))
        _, low, high = stats.hierarchical_bootstrap(base, new, 1000, seed=int(rng.integers(1e6)))
        covered += low <= 0.5 <= high
    assert covered >= 30


def test_holm_on_hand_computed_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> monotone 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adjusted[4])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
    assert stats.smallest_p(6) == pytest.approx(0.03125) and stats.min_pairs(0.05) == 6


def test_verdicts_follow_holm_interval_and_metric_direction():
    rng = np.random.default_rng(0)
    base = {m: rng.normal(5, 1, 12) + rng.normal(0, 0.05, (2, 12)) for m in ("A", "B", "C")}
    new = {"A": base["A"] + 0.5, "B": base["B"] - 0.5, "C": base["C"].copy()}
    result = stats.compare_metrics(base, new, 0.05, {"A": True, "B": True, "C": True}, 1000)
    assert [result[m]["verdict"] for m in "ABC"] == ["better", "worse", "no significant difference"]
    assert result["A"]["p_holm"] == pytest.approx(min(1, 2 * result["A"]["p_value"]), rel=1e-9) \
        or result["A"]["p_holm"] == pytest.approx(min(1, 3 * result["A"]["p_value"]), rel=1e-9)
    lower = stats.compare_metrics(base, new, 0.05, {"A": False, "B": False, "C": False}, 1000)
    assert [lower[m]["verdict"] for m in "ABC"] == ["worse", "better", "no significant difference"]
    tiny = stats.compare_metrics({"A": base["A"][:, :3]}, {"A": new["A"][:, :3]}, 0.05, {}, 500)
    assert tiny["A"]["verdict"] == "too little data"


def test_a_difference_only_the_winners_flagged_images_carry_is_withheld():
    rng = np.random.default_rng(0)
    names = [f"{i:02d}" for i in range(24)]
    base = {"SD": rng.normal(20, 1, (2, 24))}
    new = {"SD": base["SD"] + np.r_[np.full(12, 8.0), rng.normal(0, 0.01, 12)]}  # a grid wins SD on 00-11
    results = stats.compare_metrics(base, new, 0.05, {"SD": True}, 400)
    assert results["SD"]["verdict"] == stats.BETTER
    flagged = {"base": set(), "new": set(names[:12])}
    marked = analysis.mark_flag_driven(results, base, new, names, flagged, 0.05, 400)["SD"]
    assert marked["flag_driven"] and marked["verdict_without_flagged"] == stats.SAME and marked["loser_flagged"] == 0
    kept = analysis.mark_flag_driven(stats.compare_metrics(base, new, 0.05, {"SD": True}, 400), base, new, names,
                                     {"base": set(), "new": set()}, 0.05, 400)["SD"]
    assert not kept["flag_driven"] and kept["verdict_without_flagged"] == stats.BETTER


def test_a_win_over_the_losers_failed_images_stands_marked():
    """The baseline collapses on half the images (flagged, on the losing side): those can only have cost
    it, so the verdict stands, with the count of its flagged images; the same win by a flagged winner
    would be withheld."""
    rng = np.random.default_rng(1)
    names = [f"{i:02d}" for i in range(24)]
    new = {"VIF": rng.normal(0.6, 0.02, (3, 24))}
    base = {"VIF": new["VIF"] - np.r_[np.full(12, 0.4), rng.normal(0, 0.01, 12)]}  # collapsed on 00-11, level after
    results = stats.compare_metrics(base, new, 0.05, {"VIF": True}, 400)
    assert results["VIF"]["verdict"] == stats.BETTER
    loser = analysis.mark_flag_driven(results, base, new, names, {"base": set(names[:12]), "new": set()}, 0.05, 400)
    assert not loser["VIF"]["flag_driven"] and loser["VIF"]["loser_flagged"] == 12
    assert "12 flagged image(s) of two-stage, the losing side" in comparison_report.verdict_text(
        loser["VIF"], "end-to-end", "two-stage")
    results = stats.compare_metrics(base, new, 0.05, {"VIF": True}, 400)
    winner = analysis.mark_flag_driven(results, base, new, names, {"base": set(), "new": set(names[:12])}, 0.05, 400)
    assert winner["VIF"]["flag_driven"] and winner["VIF"]["verdict_without_flagged"] == stats.SAME
    assert comparison_report.verdict_text(winner["VIF"], "end-to-end", "two-stage").startswith("withheld: better")
