"""The args files as the seed and the reference have them, and the one table of what the suite knows
about each setting (training/settings.py)."""
import dataclasses

import pytest

import args_end_to_end
import args_two_stage
from args_end_to_end import EndToEnd
from args_two_stage import Stage1, Stage2
from cli.training_start import settings
from net.config import ModelConfig
from training.settings import SETTINGS, compared_between_arms, fixed_on_resume, set_by_study, upgrade
from training.stages import STAGES
from utils.args_base import Settings, defaults
from utils.errors import CrossFuseError

ARGS_CLASSES = (Stage1, Stage2, EndToEnd)
SEED_SETTINGS = {"epochs": 32, "lr": 0.001, "batch": 8, "train_num": 20000}  # the seed's README names these


def test_end_to_end_args_file_shows_the_seeds_settings_with_their_defaults():
    own = vars(EndToEnd)
    assert {k: own[k] for k in SEED_SETTINGS} == SEED_SETTINGS


@pytest.mark.parametrize("args_class", ARGS_CLASSES)
def test_each_args_class_is_complete_and_plain(args_class):
    """Every value is declared in the class itself (nothing inherited from another file), as a plain value."""
    assert args_class.__bases__ == (Settings,) and defaults(Settings) == {}
    for key, value in defaults(args_class).items():
        assert key in vars(args_class), key
        assert isinstance(value, bool | int | float | str), (key, value)


def test_the_args_files_import_nothing_but_the_settings_type():
    for module in (args_two_stage, args_end_to_end):
        names = {k for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, type)}
        assert names <= {"Settings", "Stage1", "Stage2", "EndToEnd"}, names


def test_editing_one_arm_leaves_the_other_alone(monkeypatch):
    monkeypatch.setattr(EndToEnd, "lr", 0.005)
    assert settings(EndToEnd, [], "").lr == 0.005
    assert settings(Stage2, [], "").lr == 0.001


def test_batch_is_the_setting_and_the_old_name_still_works(capsys):
    assert settings(EndToEnd, ["--batch=4"], "").batch == 4
    assert settings(Stage1, ["--batch_size=3"], "").batch == 3
    assert "--batch_size is an old name, use --batch" in capsys.readouterr().err
    assert settings(Stage2, ["--step=3"], "").log_every == 3
    with pytest.raises(CrossFuseError, match="--batchh: unknown setting; did you mean --batch"):
        settings(EndToEnd, ["--batchh=4"], "")


def test_old_records_are_read_under_the_new_names():
    assert upgrade({"batch_size": 8, "step": 10, "lr": 1e-3}) == {"batch": 8, "log_every": 10, "lr": 1e-3}


def test_workers_take_a_number_or_auto():
    assert settings(EndToEnd, ["--workers=2"], "").workers == 2
    assert settings(EndToEnd, ["--workers=auto"], "").workers == "auto"
    with pytest.raises(CrossFuseError, match="--workers=-1"):
        settings(EndToEnd, ["--workers=-1"], "")


def test_a_string_where_a_number_belongs_is_one_line(monkeypatch):
    monkeypatch.setattr(EndToEnd, "lr", "0.001")  # an args file edited with quotes
    with pytest.raises(CrossFuseError, match=r"--lr='0.001' \(expected a number > 0\)"):
        settings(EndToEnd, [], "")


def test_every_declared_setting_has_one_entry_and_every_entry_is_declared():
    declared = set().union(*(defaults(cls) for cls in ARGS_CLASSES))
    assert declared - SETTINGS.keys() == set(), "declared in an args file but missing from training.settings.SETTINGS"
    assert SETTINGS.keys() - declared == set(), "in training.settings.SETTINGS but declared by no args file"


def test_the_table_marks_what_the_model_and_the_data_order_depend_on():
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert model_fields <= fixed_on_resume()  # the saved weights mean something else without them
    assert {"dataset", "batch", "seed", "image_size", "train_num", "crop"} <= fixed_on_resume()
    assert {"lr", "epochs", "log_every"}.isdisjoint(fixed_on_resume())
    assert {"lr", "batch", "epochs", "weight_decay", "w_int", "cam_gate"} <= set(compared_between_arms())
    assert {"seed", "out_root", "log_every", "device"}.isdisjoint(compared_between_arms())
    assert {"out_root", "seed", "resume", "init_from", "ir_encoder"} <= set_by_study()


def test_one_table_of_stages_names_each_stage_once():
    assert list(STAGES) == ["stage1", "stage2", "end_to_end", "warm_start"]
    scripts = {s.script for s in STAGES.values()}
    assert scripts == {"train_autoencoder.py", "train_fusion.py", "train_end_to_end.py"}
    assert {s.args for s in STAGES.values()} == set(ARGS_CLASSES)
