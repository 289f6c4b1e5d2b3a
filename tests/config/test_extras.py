"""Optional packages a recipe names: a tracker in report_to that is not installed is one line with the pip command,
before any data is read; tensorboard, when installed, receives the schedule's scalars."""
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

import pytest

from hf_medtl.cli import main
from tests.conftest import REPO, errors, tiny_recipe


def _missing(monkeypatch, *modules):
    """Make ``modules`` look uninstalled: find_spec answers None for a name set to None in sys.modules."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
        assert importlib.util.find_spec(name) is None


def _nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "run" / "data_report.json").exists() and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("tracker,command", [
    ("tensorboard", 'pip install -e ".[tensorboard]"'),
    ("trackio", 'pip install -e ".[trackio]"'),
    ("wandb", "pip install wandb"),
    ("mlflow", "pip install mlflow"),
    ("comet_ml", "pip install comet_ml"),
])
def test_a_tracker_that_is_not_installed_is_one_line_before_the_data_check(tmp_path, image_folder, tiny_vit, capsys,
                                                                           monkeypatch, tracker, command):
    _missing(monkeypatch, tracker, "tensorboardX")
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1)
    assert main(["finetune", str(recipe), "--report_to", tracker]) == 2
    [line] = errors(capsys)
    assert line.startswith("error: command line: 'report_to' names ") and tracker in line and command in line, line
    assert _nothing_written(tmp_path)


def test_a_list_in_the_recipe_file_names_the_missing_one_and_the_file(tmp_path, image_folder, tiny_vit, capsys,
                                                                      monkeypatch):
    _missing(monkeypatch, "trackio")
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, report_to=["tensorboard", "trackio"])
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert line.startswith(f"error: {recipe}: 'report_to' names trackio") and 'pip install -e ".[trackio]"' in line
    assert _nothing_written(tmp_path)


def test_an_unknown_tracker_is_one_line_listing_the_known_ones(tmp_path, image_folder, tiny_vit, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder)
    assert main(["finetune", str(recipe), "--report_to", "tensorbord"]) == 2
    [line] = errors(capsys)
    assert "'tensorbord', which is not a tracker transformers knows" in line and "tensorboard, trackio" in line
    assert _nothing_written(tmp_path)


def test_none_and_all_need_nothing(tmp_path, image_folder, tiny_vit, monkeypatch):
    from hf_medtl.config.recipe import load_recipe

    _missing(monkeypatch, "tensorboard", "tensorboardX", "wandb")
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder)
    for value in ("none", "all"):  # parsed without importing a tracker; "all": the installed ones, none here
        assert load_recipe(recipe, ["--report_to", value]).training.report_to == []


def test_the_extras_are_declared():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("tensorboard") for r in extras["tensorboard"]) and extras["trackio"] == ["trackio"]


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in run_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] = [e.value for e in acc.Scalars(tag)]
    return out


# The [test] extra installs tensorboard, so under CI a missing one is a failure, not a skip.
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None and os.environ.get("CI") != "true",
                    reason="tensorboard is not installed")
def test_report_to_tensorboard_writes_the_schedule_scalars(tmp_path, image_folder, tiny_vit):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, n_bootstrap=0)
    assert main(["finetune", str(recipe), "--report_to", "tensorboard"]) == 0
    assert list((tmp_path / "run" / "runs").glob("*/events.out.tfevents.*"))  # the Trainer's logging_dir
    # transformers files what Trainer.log gets during training under train/: train/schedule/<key>.
    scalars = {tag.removeprefix("train/"): v for tag, v in _scalars(tmp_path / "run").items()}
    for tag in ("schedule/train_accuracy", "schedule/lr_scale", "schedule/trainable_params", "schedule/save_best"):
        assert len(scalars.get(tag, [])) == 2, (tag, sorted(scalars))  # one per epoch
    assert all(0 <= a <= 1 for a in scalars["schedule/train_accuracy"]) and scalars["schedule/lr_scale"][0] == 1
