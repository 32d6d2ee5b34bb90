"""evaluate.py on small synthetic folders: scoring, pairing of fused files, reports, outputs, exit codes."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
from dataio.pairs import find_pairs
from evaluation.folder_scores import score_folder
from metrics.core import METRICS, score_pair
from metrics.profiles import get_profile, score
from tests.scripts import Result, run_script
from utils.errors import CrossFuseError

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


def cli(*args: str) -> Result:
    return run_script("evaluate.py", *args)


# --- library functions ----------------------------------------------------------------------------


def test_evaluate_folder_scores_every_pair_like_score_pair(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    result = score_folder(data / "mean", pairs, FEW)
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
    result = score_folder(data / "mean", pairs)
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
    assert score_folder(tmp_path / "by_ir", pairs, ["SSIM"])["per_image"]["7"]["SSIM"] > 1
    assert score_folder(tmp_path / "by_vis", pairs, ["SSIM"])["per_image"]["7"]["SSIM"] > 1


def test_missing_extra_unreadable_and_mismatched_fused_images_are_reported(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    save(data / "max" / "stray.png", texture(5))
    result = score_folder(data / "max", pairs, FEW)
    assert list(result["per_image"]) == ["1", "2"]
    assert len(result["problems"]) == 2
    assert "3: no fused image" in result["problems"][0]
    assert "stray.png: fused image matches no IR/VIS pair" in result["problems"][1]

    save(data / "max" / "1.png", texture(1, (40, 56)))
    (data / "max" / "2.png").write_bytes(b"not a png")
    result = score_folder(data / "max", pairs, FEW)
    assert result["per_image"] == {}
    problems = result["problems"]
    assert any("1.png: image sizes differ (fused 56x40, IR 56x48, VIS 56x48)" in p for p in problems)
    assert any("2.png: not a readable image" in p for p in problems)
    assert all(math.isnan(v) for v in result["mean"].values())


def test_two_fused_files_with_one_stem_are_ambiguous(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    save(data / "mean" / "1.jpg", texture(1))
    problems = score_folder(data / "mean", pairs, FEW)["problems"]
    assert len(problems) == 1 and "1: several fused images share its stem" in problems[0]


def test_missing_fused_folder_is_an_error(data):
    with pytest.raises(CrossFuseError, match="fused folder does not exist"):
        score_folder(data / "nope", find_pairs(data / "ir", data / "vi").pairs, FEW)


def test_results_table_shows_mean_row_and_std_row_per_method():
    results = {
        "mean": {"mean": {"EN": 6.5, "PSNR": math.inf}, "std": {"EN": 0.25, "PSNR": math.nan},
                 "per_image": {"a": {}}},
        "max": {"mean": {"EN": 7.0, "PSNR": 12.0}, "std": {"EN": 0.0, "PSNR": 1.5},
                "per_image": {"a": {}, "b": {}}},
    }
    lines = evaluate.results_table(results).splitlines()
    assert [line.split() for line in lines] == [
        ["method", "n", "EN", "PSNR"],
        ["mean", "1", "6.500", "inf"],
        ["±0.2500", "±n/a"],
        ["max", "2", "7.000", "12.00"],
        ["±0.000", "±1.500"],
    ]
    assert lines[1].index("6.500") + len("6.500") == lines[0].index("EN") + len("EN")  # right-aligned


def test_to_json_layout_and_non_finite_values():
    one = {"mean": {"PSNR": math.inf}, "std": {"PSNR": math.nan}, "per_image": {"x": {"PSNR": math.inf}}}
    expected = {"mean": {"PSNR": None}, "std": {"PSNR": None}, "per_image": {"x": {"PSNR": None}}}
    head = {"profile": "suite", "missing": [], "reference_rules": {}}
    assert evaluate.to_json({"m": one}) == head | expected
    several = evaluate.to_json({"m": one, "n": one}, get_profile("tang"), ["[n] 3"], {"pixel-mean": one})
    assert several == {"profile": "tang", "missing": ["[n] 3"], "reference_rules": {"pixel-mean": expected},
                       "m": expected, "n": expected}


def test_parse_fused_and_metrics():
    assert evaluate.parse_fused(["a=/x/y", "/p/q"]) == {"a": Path("/x/y"), "q": Path("/p/q")}
    with pytest.raises(CrossFuseError, match="given twice"):
        evaluate.parse_fused(["a=/x", "a=/y"])
    assert evaluate.parse_metrics("en, ms-ssim,Qabf") == ["EN", "MS-SSIM", "Qabf"]
    assert evaluate.parse_metrics(None) == list(METRICS)
    with pytest.raises(CrossFuseError, match="unknown metric"):
        evaluate.parse_metrics("EN,FOO")
    vifb = get_profile("vifb")
    assert evaluate.parse_metrics("qcb,ENTROPY", vifb) == ["Qcb", "Entropy"]
    with pytest.raises(CrossFuseError, match="unknown metric.*EN in profile vifb"):
        evaluate.parse_metrics("EN", vifb)
    with pytest.raises(CrossFuseError, match="reserved"):
        evaluate.parse_fused(["missing=/x"])


# --- command line ---------------------------------------------------------------------------------


def test_cli_writes_table_json_and_csv(data):
    out = cli("--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
              "--json", str(data / "out" / "s.json"), "--csv", str(data / "out" / "s.csv"))
    assert out.returncode == 0, out.stderr
    profile, header, means, stds, rule_mean, _, rule_max, _, guards = out.stdout.splitlines()
    assert profile.startswith("metric profile: suite")
    assert header.split() == ["method", "n", *METRICS]
    assert means.split()[:2] == ["mean", "3"]
    assert rule_mean.split()[:3] == ["rule:", "pixel-mean", "3"] and rule_max.split()[:3] == ["rule:", "pixel-max", "3"]
    assert rule_mean.split()[3:] == means.split()[2:]  # the 'mean' folder holds exactly the pixel-mean rule
    assert guards.startswith("guards: no fused image flagged")

    document = json.loads((data / "out" / "s.json").read_text())
    assert set(document) == {"profile", "missing", "reference_rules", "mean", "std", "per_image", "flags"}
    assert set(document["reference_rules"]) == {"pixel-mean", "pixel-max"} and document["flags"] == {}
    assert document["reference_rules"]["pixel-mean"]["per_image"] == document["per_image"]
    assert document["profile"] == "suite" and document["missing"] == []
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
              "--csv", str(data / "s.csv"), "--allow-missing")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert rows[0] == ["method", "n", "EN", "PSNR"]
    assert rows[1][:2] == ["avg", "3"] and rows[3][:2] == ["max", "2"]
    assert "1 problem(s):" in out.stderr
    assert "[max] 3: no fused image" in out.stderr

    document = json.loads((data / "s.json").read_text())
    assert set(document) == {"profile", "missing", "reference_rules", "avg", "max"}
    assert document["missing"] == ["[max] 3"]
    assert list(document["max"]["per_image"]) == ["1", "2"]
    rows = list(csv.DictReader((data / "s.csv").open()))
    assert [r["method"] + r["image"] for r in rows] == ["avg1", "avg2", "avg3", "max1", "max2"]
    assert list(rows[0]) == ["method", "image", "EN", "PSNR"]


def test_cli_reports_unpaired_sources_and_mismatched_size(data):
    save(data / "ir" / "4.png", texture(4))
    save(data / "mean" / "2.png", texture(2, (50, 56)))
    out = cli("--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
              "--metrics", "EN", "--allow-missing")
    assert out.returncode == 0, out.stderr
    assert "2 problem(s):" in out.stderr
    assert "4.png: no IR/VIS partner" in out.stderr
    assert "2.png: image sizes differ (fused 56x50, IR 56x48, VIS 56x48)" in out.stderr
    assert out.stdout.splitlines()[2].split()[:2] == ["mean", "2"]


def assert_one_line_error(out: Result, text: str) -> None:
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
        (["--ir", "{ir}", "--vi", "{vi}", "--fused", "{mean}", "--profile", "matlab"], "unknown metric profile"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(data, args, text):
    folders = {name: str(data / name) for name in ("ir", "vi", "mean", "max")}
    assert_one_line_error(cli(*(a.format(**folders) for a in args)), text)


# --- profiles and exports -------------------------------------------------------------------------


def test_evaluate_folder_uses_the_profile_reader_and_metrics(data):
    pairs = find_pairs(data / "ir", data / "vi").pairs
    cddfuse = get_profile("cddfuse")
    result = score_folder(data / "mean", pairs, ["PSNR", "MI"], profile=cddfuse)
    a, b = np.asarray(Image.open(data / "ir" / "1.png")), np.asarray(Image.open(data / "vi" / "1.png"))
    f = np.asarray(Image.open(data / "mean" / "1.png"))
    expected = score(cddfuse, *(x.astype(np.float32) for x in (f, a, b)), ["PSNR", "MI"])
    assert result["per_image"]["1"] == pytest.approx(expected)
    # this profile's MI is in nats, its PSNR peaks at max(F): neither is the suite's number
    suite = score_pair(f, a, b, ["PSNR", "MI"])
    assert result["per_image"]["1"]["MI"] == pytest.approx(suite["MI"] * math.log(2))
    assert result["per_image"]["1"]["PSNR"] != pytest.approx(suite["PSNR"])


def test_cli_profile_names_metrics_and_exports_latex_and_table_csv(data):
    out = cli("--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
              "--profile", "vifb", "--metrics", "Entropy,Spatial_frequency,Qcv",
              "--json", str(data / "v.json"), "--latex", str(data / "v.tex"), "--table-csv", str(data / "v.csv"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("metric profile: vifb (VIFB")
    assert lines[1].split() == ["method", "n", "Entropy", "Spatial_frequency", "Qcv"]
    document = json.loads((data / "v.json").read_text())
    assert document["profile"] == "vifb"

    tex = (data / "v.tex").read_text().splitlines()
    assert tex[0] == "\\begin{table}" and tex[-1] == "\\end{table}"
    assert "metric profile vifb" in next(line for line in tex if line.startswith("\\caption{"))
    assert [line for line in tex if line.endswith("rule")] == ["\\toprule", "\\midrule", "\\bottomrule"]
    assert "Method & $n$ & Entropy & Spatial\\_frequency & Qcv \\\\" in tex
    row = next(line for line in tex if line.startswith("mean & 3 & "))
    en = f"{document['mean']['Entropy']:#.4g} $\\pm$ {document['std']['Entropy']:#.4g}"
    assert row.split(" & ")[2] == en

    rows = list(csv.reader((data / "v.csv").open()))
    assert rows[0][:5] == ["profile", "method", "n", "Entropy mean", "Entropy std"]
    assert rows[1][:3] == ["vifb", "mean", "3"]
    assert float(rows[1][3]) == document["mean"]["Entropy"]


def test_missing_pairs_are_listed_recorded_and_exit_2_after_writing(data, capsys):
    save(data / "ir" / "4.png", texture(4))  # an IR image without VIS partner
    save(data / "max" / "stray.png", texture(5))  # a fused image without sources
    args = ["--fused", str(data / "max"), "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--metrics", "EN",
            "--json", str(data / "m.json"), "--csv", str(data / "m.csv")]
    assert evaluate.main(args) == 2
    out, err = capsys.readouterr()
    assert "error: 3 missing pair(s)" in err
    assert out.splitlines()[2].split()[:2] == ["max", "2"]
    document = json.loads((data / "m.json").read_text())
    missing = document["missing"]
    assert missing[0].endswith("4.png") and missing[1] == "[max] 3" and missing[2].endswith("stray.png")
    assert list(document["per_image"]) == ["1", "2"]
    assert (data / "m.csv").is_file()

    (data / "m.json").unlink()
    assert evaluate.main([*args, "--allow-missing"]) == 0
    assert json.loads((data / "m.json").read_text())["missing"] == missing


@pytest.mark.parametrize("option", ["--json", "--csv", "--latex", "--table-csv"])
def test_outputs_are_checked_writable_before_scoring(data, option, capsys):
    (data / "a_file").write_text("")
    sources = ["--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--metrics", "EN"]
    for target, text in ((data / "a_file" / "sub" / "out", "a_file is not a folder"), (data / "ir", "is a folder")):
        assert evaluate.main([*sources, option, str(target)]) == 2
        out, err = capsys.readouterr()
        assert out == ""  # no table: nothing was scored
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {target}: ") and text in lines[0]


def test_failed_write_keeps_previous_results(data, monkeypatch, capsys):
    previous = "method,image,EN\nold,1,1.0\n"
    (data / "s.csv").write_text(previous)
    real_write = Path.write_text

    def disk_full(path: Path, text: str, *args, **kwargs):
        """Writes half the text, then fails like a full disk."""
        real_write(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    code = evaluate.main(["--fused", str(data / "mean"), "--ir", str(data / "ir"), "--vi", str(data / "vi"),
                          "--metrics", "EN", "--csv", str(data / "s.csv")])
    assert code == 2
    assert "s.csv: cannot write (No space left on device)" in capsys.readouterr().err
    assert (data / "s.csv").read_text() == previous
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(".")) == []


# --- guards: reference rules and flagged images ---------------------------------------------------


def test_flat_and_dotted_fusions_are_flagged_and_listed(data):
    for i in (1, 2, 3):
        a = np.asarray(Image.open(data / "ir" / f"{i}.png"), dtype=float)
        b = np.asarray(Image.open(data / "vi" / f"{i}.png"), dtype=float)
        mean = np.rint((a + b) / 2)
        save(data / "flat" / f"{i}.png", np.full(SIZE, 120, np.uint8))
        dots = mean.copy()
        dots[::16, ::16] = 255  # a dot at every token (16 px), as the collapsed two-stage model drew
        dots[1::16, ::16] = dots[::16, 1::16] = dots[1::16, 1::16] = 255
        save(data / "dots" / f"{i}.png", dots.astype(np.uint8))
    out = cli("--fused", f"flat={data / 'flat'}", "--fused", f"dots={data / 'dots'}", "--fused",
              f"good={data / 'mean'}", "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--metrics", "EN,SD",
              "--json", str(data / "g.json"))
    assert out.returncode == 0, out.stderr
    assert "guards: 6 fused image(s) flagged" in out.stdout
    assert "[flat] 1: collapsed" in out.stdout and "[dots] 1: periodic" in out.stdout
    document = json.loads((data / "g.json").read_text())
    assert set(document["flat"]["flags"]) == set(document["dots"]["flags"]) == {"1", "2", "3"}
    assert document["good"]["flags"] == {}
    # the dot grid wins SD over the pixel-mean rule: the reason the flags sit beside the numbers
    assert document["dots"]["mean"]["SD"] > document["reference_rules"]["pixel-mean"]["mean"]["SD"]
