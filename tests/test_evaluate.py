"""evaluate.py on small synthetic folders: scoring, pairing of fused files, reports, outputs, exit codes."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
from utils.errors import CrossFuseError
from utils.metrics import METRICS, score_pair
from utils.pairs import find_pairs

ROOT = Path(__file__).resolve().parents[1]
SIZE = (48, 56)
FEW = ["EN", "SSIM", "PSNR"]


def texture(seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    img = 128 + 70 * np.sin(x / (3 + seed)) * np.cos(y / 4) + rng.normal(0, 12, size)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """ir/ and vi/ with pairs 1..3, plus fused folders 'mean' (all three) and 'max' (pair 3 missing)."""
    for i in (1, 2, 3):
        a, b = texture(i), texture(10 + i)
        save(tmp_path / "ir" / f"{i}.png", a)
        save(tmp_path / "vi" / f"{i}.png", b)
        save(tmp_path / "mean" / f"{i}.png", ((a.astype(float) + b) / 2).round().astype(np.uint8))
        if i < 3:
            save(tmp_path / "max" / f"{i}.png", np.maximum(a, b))
    return tmp_path


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "evaluate.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


# --- library functions ----------------------------------------------------------------------------


def test_evaluate_folder_scores_every_pair_like_score_pair(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    result = evaluate.evaluate_folder(data / "mean", pairs, FEW)
    assert result["problems"] == []
    assert list(result["per_image"]) == ["1", "2", "3"]
    a, b = np.asarray(Image.open(data / "ir" / "2.png")), np.asarray(Image.open(data / "vi" / "2.png"))
    f = np.asarray(Image.open(data / "mean" / "2.png"))
    assert result["per_image"]["2"] == pytest.approx(score_pair(f, a, b, FEW))
    for m in FEW:
        values = [scores[m] for scores in result["per_image"].values()]
        assert result["mean"][m] == pytest.approx(np.mean(values))
        assert result["std"][m] == pytest.approx(np.std(values))


def test_evaluate_folder_defaults_to_all_metrics(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs[:1]
    result = evaluate.evaluate_folder(data / "mean", pairs)
    assert list(result["mean"]) == list(METRICS)
    assert all(math.isfinite(v) for v in result["per_image"]["1"].values())


def test_fused_file_may_use_the_ir_or_vis_stem(tmp_path):
    a, b = texture(1), texture(2)
    save(tmp_path / "ir" / "IR7.png", a)
    save(tmp_path / "vi" / "VIS7.png", b)
    pairs = find_pairs(tmp_path / "ir", tmp_path / "vi").pairs
    assert pairs[0].name == "7"
    save(tmp_path / "by_ir" / "IR7.jpg", a)
    save(tmp_path / "by_vis" / "VIS7.bmp", b)
    assert evaluate.evaluate_folder(tmp_path / "by_ir", pairs, ["SSIM"])["per_image"]["7"]["SSIM"] > 1
    assert evaluate.evaluate_folder(tmp_path / "by_vis", pairs, ["SSIM"])["per_image"]["7"]["SSIM"] > 1


def test_missing_extra_unreadable_and_mismatched_fused_images_are_reported(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    save(data / "max" / "stray.png", texture(5))
    result = evaluate.evaluate_folder(data / "max", pairs, FEW)
    assert list(result["per_image"]) == ["1", "2"]
    assert len(result["problems"]) == 2
    assert "3: no fused image" in result["problems"][0]
    assert "stray.png: fused image matches no IR/VIS pair" in result["problems"][1]

    save(data / "max" / "1.png", texture(1, (40, 56)))
    (data / "max" / "2.png").write_bytes(b"not a png")
    result = evaluate.evaluate_folder(data / "max", pairs, FEW)
    assert result["per_image"] == {}
    problems = result["problems"]
    assert any("1.png: image sizes differ (fused 40x56, IR 48x56, VIS 48x56)" in p for p in problems)
    assert any("2.png: not a readable image" in p for p in problems)
    assert all(math.isnan(v) for v in result["mean"].values())


def test_two_fused_files_with_one_stem_are_ambiguous(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    save(data / "mean" / "1.jpg", texture(1))
    problems = evaluate.evaluate_folder(data / "mean", pairs, FEW)["problems"]
    assert len(problems) == 1 and "1: several fused images share its stem" in problems[0]


def test_missing_fused_folder_is_an_error(data):
    with pytest.raises(CrossFuseError, match="fused folder does not exist"):
        evaluate.evaluate_folder(data / "nope", find_pairs(data / "ir", data / "vi").pairs, FEW)


def test_format_table_shows_mean_row_and_std_row_per_method():
    results = {
        "mean": {"mean": {"EN": 6.5, "PSNR": math.inf}, "std": {"EN": 0.25, "PSNR": math.nan},
                 "per_image": {"a": {}}},
        "max": {"mean": {"EN": 7.0, "PSNR": 12.0}, "std": {"EN": 0.0, "PSNR": 1.5},
                "per_image": {"a": {}, "b": {}}},
    }
    lines = evaluate.format_table(results).splitlines()
    assert [line.split() for line in lines] == [
        ["method", "n", "EN", "PSNR"],
        ["mean", "1", "6.500", "inf"],
        ["±0.2500", "±nan"],
        ["max", "2", "7.000", "12.00"],
        ["±0.000", "±1.500"],
    ]
    assert lines[1].index("6.500") + len("6.500") == lines[0].index("EN") + len("EN")  # right-aligned


def test_to_json_layout_and_non_finite_values():
    one = {"mean": {"PSNR": math.inf}, "std": {"PSNR": math.nan}, "per_image": {"x": {"PSNR": math.inf}}}
    expected = {"mean": {"PSNR": None}, "std": {"PSNR": None}, "per_image": {"x": {"PSNR": None}}}
    assert evaluate.to_json({"m": one}) == expected
    assert set(evaluate.to_json({"m": one, "n": one})) == {"m", "n"}


def test_parse_fused_and_metrics():
    assert evaluate.parse_fused(["a=/x/y", "/p/q"]) == {"a": Path("/x/y"), "q": Path("/p/q")}
    with pytest.raises(CrossFuseError, match="given twice"):
        evaluate.parse_fused(["a=/x", "a=/y"])
    assert evaluate.parse_metrics("en, ms-ssim,Qabf") == ["EN", "MS-SSIM", "Qabf"]
    assert evaluate.parse_metrics(None) == list(METRICS)
    with pytest.raises(CrossFuseError, match="unknown metric"):
        evaluate.parse_metrics("EN,FOO")


# --- command line ---------------------------------------------------------------------------------


def test_cli_writes_table_json_and_csv(data):
    out = cli("--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
              "--json", str(data / "out" / "s.json"), "--csv", str(data / "out" / "s.csv"))
    assert out.returncode == 0, out.stderr
    header, means, stds = out.stdout.splitlines()
    assert header.split() == ["method", "n", *METRICS]
    assert means.split()[:2] == ["mean", "3"]

    document = json.loads((data / "out" / "s.json").read_text())
    assert set(document) == {"mean", "std", "per_image"}
    assert list(document["per_image"]) == ["1", "2", "3"]
    assert list(document["mean"]) == list(METRICS)
    ssim = [document["per_image"][k]["SSIM"] for k in "123"]
    assert document["mean"]["SSIM"] == pytest.approx(np.mean(ssim))
    assert document["std"]["SSIM"] == pytest.approx(np.std(ssim))
    assert f"{document['mean']['SSIM']:#.4g}" in means

    rows = list(csv.DictReader((data / "out" / "s.csv").open()))
    assert [(r["method"], r["image"]) for r in rows] == [("mean", "1"), ("mean", "2"), ("mean", "3")]
    assert float(rows[1]["EN"]) == document["per_image"]["2"]["EN"]


def test_cli_compares_methods_and_reports_missing_fused_image(data):
    out = cli("--fused", f"avg={data / 'mean'}", "--fused", f"max={data / 'max'}", "--ir", str(data / "ir"),
              "--vi", str(data / "vi"), "--metrics", "EN,PSNR", "--json", str(data / "s.json"),
              "--csv", str(data / "s.csv"))
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows[0] == ["method", "n", "EN", "PSNR"]
    assert rows[1][:2] == ["avg", "3"] and rows[3][:2] == ["max", "2"]
    assert "1 problem(s):" in out.stderr
    assert "[max] 3: no fused image" in out.stderr

    document = json.loads((data / "s.json").read_text())
    assert set(document) == {"avg", "max"}
    assert list(document["max"]["per_image"]) == ["1", "2"]
    rows = list(csv.DictReader((data / "s.csv").open()))
    assert [r["method"] + r["image"] for r in rows] == ["avg1", "avg2", "avg3", "max1", "max2"]
    assert list(rows[0]) == ["method", "image", "EN", "PSNR"]


def test_cli_reports_unpaired_sources_and_mismatched_size(data):
    save(data / "ir" / "4.png", texture(4))
    save(data / "mean" / "2.png", texture(2, (50, 56)))
    out = cli("--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
              "--metrics", "EN")
    assert out.returncode == 0, out.stderr
    assert "2 problem(s):" in out.stderr
    assert "4.png: no IR/VIS partner" in out.stderr
    assert "2.png: image sizes differ (fused 50x56, IR 48x56, VIS 48x56)" in out.stderr
    assert out.stdout.splitlines()[1].split()[:2] == ["mean", "2"]


def assert_one_line_error(out: subprocess.CompletedProcess, text: str) -> None:
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0]
    assert out.stdout == ""


def test_cli_exits_2_when_nothing_could_be_scored(data, tmp_path):
    (tmp_path / "empty").mkdir()
    out = cli("--fused", str(tmp_path / "empty"), "--ir", str(data / "ir"), "--vi", str(data / "vi"))
    assert_one_line_error(out, "nothing could be scored")
    assert "3 problem(s):" in out.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--ir", "NOPE_IR", "--vi", "{vi}", "--fused", "{mean}"], "NOPE_IR: IR folder does not exist"),
        (["--ir", "{ir}", "--vi", "{vi}", "--fused", "NOPE_F"], "NOPE_F: fused folder does not exist"),
        (["--ir", "{ir}", "--vi", "{vi}", "--fused", "{mean}", "--metrics", "EN,XX"], "unknown metric(s) XX"),
        (["--ir", "{ir}", "--vi", "{vi}", "--fused", "a={mean}", "--fused", "a={max}"], "given twice"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(data, args, text):
    folders = {name: str(data / name) for name in ("ir", "vi", "mean", "max")}
    assert_one_line_error(cli(*(a.format(**folders) for a in args)), text)
