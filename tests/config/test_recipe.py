"""Recipe parsing: strict keys and types, overrides, defaults, the resolved copy."""
import json

import pytest

from hf_medtl.config.recipe import RecipeError, load_recipe, write_resolved
from tests.conftest import REPO, write_recipe

BASE = {"model_name_or_path": "some/model", "data_dir": "images"}


def load(tmp_path, argv=None, **values):
    return load_recipe(write_recipe(tmp_path / "r.json", **{**BASE, **values}), argv)


def test_groups_defaults_and_default_recipe(tmp_path):
    r = load(tmp_path)
    assert r.model.model_name_or_path == "some/model" and r.model.finetune_strategy == "full"
    assert (r.data.val_ratio, r.data.test_ratio) == (0.1, 0.1)
    assert (r.schedule.threshold, r.schedule.patience, r.schedule.stop_patience, r.schedule.factor) == (0.9, 2, 2, 0.5)
    t = r.training
    assert (t.learning_rate, t.per_device_train_batch_size, t.num_train_epochs) == (1e-3, 32, 10)
    assert str(t.lr_scheduler_type.value) == "cosine" and str(t.eval_strategy.value) == "epoch"
    # The toolkit's default recipe (docs/benchmarks.md 'Choosing the defaults'); the paper preset keeps seed 000's.
    assert (t.warmup_steps, t.weight_decay, t.label_smoothing_factor, r.schedule.theta_star) == (0.1, 0.05, 0.1, "val_accuracy")
    assert r.evaluation.tta == "hflip"  # served inside the saved model, so every loader serves what was scored
    assert t.output_dir == "outputs/r"


def test_unknown_key_names_it_and_suggests(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'lerning_rate'; did you mean 'learning_rate'"):
        load(tmp_path, lerning_rate=0.1)


@pytest.mark.parametrize("key,value,expected", [
    ("learning_rate", "1e-3", "float"), ("num_train_epochs", True, "float"), ("patience", 2.5, "int"),
    ("augment", "yes", "bool"), ("data_dir", 3, "str"), ("eval_strategy", 5, "epoch")])
def test_wrong_type_refused_with_key_and_expectation(tmp_path, key, value, expected):
    with pytest.raises(RecipeError) as e:
        load(tmp_path, **{key: value})
    assert f"'{key}' must be" in str(e.value) and expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("values,message", [
    ({"train_dir": "a", "test_dir": "b"}, "exactly one data source"),
    ({"finetune_strategy": "half"}, "finetune_strategy' must be one of"),
    ({"train_accuracy": "epoch"}, "train_accuracy' must be one of"),
    ({"val_ratio": 0.6, "test_ratio": 0.5}, "must be below 1"),
    ({"threshold": 2.0}, "threshold must lie in"),
    ({"lr_scheduler_type": "sideways"}, "r.json"),
])
def test_invalid_values_refused(tmp_path, values, message):
    with pytest.raises(RecipeError, match=message):
        load(tmp_path, **values)


def test_pre_split_needs_both_folders(tmp_path):
    path = write_recipe(tmp_path / "r.json", model_name_or_path="m", train_dir="tr")
    with pytest.raises(RecipeError, match="needs both 'train_dir' and 'test_dir'"):
        load_recipe(path)


def test_command_line_overrides_typed(tmp_path):
    r = load(tmp_path, ["--learning_rate", "1e-5", "--num_train_epochs=3", "--augment", "false",
                        "--output_dir", "123", "--threshold", "0.8"])
    assert r.training.learning_rate == 1e-5 and r.training.num_train_epochs == 3
    assert r.data.augment is False and r.training.output_dir == "123" and r.schedule.threshold == 0.8


@pytest.mark.parametrize("argv,message", [
    (["--patience", "two"], "command line: --patience must be int"), (["--nope", "1"], "unknown key 'nope'"),
    (["--seed"], "--seed needs a value"), (["stray"], "unexpected argument 'stray'")])
def test_bad_overrides_refused(tmp_path, argv, message):
    with pytest.raises(RecipeError, match=message):
        load(tmp_path, argv)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{'a': 1}")
    with pytest.raises(RecipeError, match=r"bad.json: not valid JSON .* line 1"):
        load_recipe(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(RecipeError, match="JSON object"):
        load_recipe(bad)


def test_resolved_recipe_round_trips_without_secrets(tmp_path):
    r = load(tmp_path, ["--seed", "7"], hub_token="hf_secret", learning_rate=0.01)
    out = write_resolved(r, tmp_path)
    resolved = json.loads(out.read_text())
    assert resolved["seed"] == 7 and resolved["learning_rate"] == 0.01 and resolved["threshold"] == 0.9
    assert "hf_secret" not in out.read_text()
    again = load_recipe(out)
    assert again.training.seed == 7 and again.data == r.data and again.schedule == r.schedule


def test_every_shipped_recipe_parses():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[2] / "recipes").glob("*.json"))
    assert len(recipes) >= 16
    benchmark_recipes = sorted((Path(__file__).parents[2] / "benchmarks" / "recipes").glob("*.json"))
    for path in recipes + benchmark_recipes:
        load_recipe(path)


def test_recipe_reference_documents_every_recipe_key():
    import dataclasses
    from pathlib import Path

    from hf_medtl.config.recipe import GROUPS

    reference = (Path(__file__).parents[2] / "docs" / "recipes.md").read_text()
    for group, cls in GROUPS.items():
        names = (dataclasses.fields(cls) if group != "training"
                 else [f for f in dataclasses.fields(cls) if f.name in cls.__dict__["__annotations__"]])
        for f in names:
            assert f"| `{f.name}` |" in reference, f.name


PAPER_KEYS = {"finetune_strategy": "full", "val_ratio": 0.1, "test_ratio": 0.1, "per_device_train_batch_size": 32,
              "threshold": 0.9, "patience": 2, "stop_patience": 2, "factor": 0.5, "seed": 42}


def test_table2_recipes_state_the_papers_settings_in_full():
    """Defaults may change; the paper's runs must not: each Table-2 recipe states every setting it fixes."""
    recipes = sorted(p for p in (REPO / "recipes").glob("*.json")
                     if p.stem.split("_")[0] in ("brain", "covid", "breakhis") and "lite0" not in p.stem
                     and not p.stem.endswith("_best"))
    assert len(recipes) == 15
    for path in recipes:
        values = json.loads(path.read_text())
        assert {k: values.get(k) for k in PAPER_KEYS} == PAPER_KEYS, path.name
        assert values["learning_rate"] == (1e-5 if path.stem.endswith("vit_lowlr") else 1e-3), path.name
        assert values["num_train_epochs"] == (30 if path.stem.startswith("covid") else 10), path.name
        assert values["preset"] == "paper", path.name  # every other setting as seed 000 ran it, whatever the defaults


def test_paper_preset_fills_what_the_recipe_leaves_out_and_the_recipe_wins(tmp_path):
    from hf_medtl.config.presets import PRESETS

    r = load(tmp_path, ["--weight_decay", "0.01"], preset="paper", theta_star="val_loss")
    resolved = r.resolved
    for key, value in PRESETS["paper"].items():
        if key not in ("theta_star", "weight_decay"):
            got = resolved.get(key)
            assert getattr(got, "value", got) == value, key
    assert r.schedule.theta_star == "val_loss" and r.training.weight_decay == 0.01  # given keys win
    assert r.evaluation.tta == "none" and r.training.label_smoothing_factor == 0.0
    assert str(r.training.lr_scheduler_type.value) == "constant" and r.training.warmup_steps == 0
    with pytest.raises(RecipeError, match="preset"):
        load(tmp_path, preset="modern")


def test_a_recipe_without_an_epoch_count_gets_the_step_budget(tmp_path):
    """No num_train_epochs: min_train_steps 1000 (written into recipe.json, so a rerun of it matches); an epoch count
    given in the recipe or on the command line, or the paper preset, keeps the epochs alone; an explicit
    min_train_steps (null included) wins."""
    from hf_medtl.config.arguments import DEFAULT_MIN_TRAIN_STEPS

    r = load(tmp_path)
    assert DEFAULT_MIN_TRAIN_STEPS == 1000 and r.schedule.min_train_steps == 1000
    assert json.loads(write_resolved(r, tmp_path).read_text())["min_train_steps"] == 1000
    assert load(tmp_path, num_train_epochs=5).schedule.min_train_steps is None
    assert load(tmp_path, ["--num_train_epochs", "5"]).schedule.min_train_steps is None
    assert load(tmp_path, preset="paper").schedule.min_train_steps is None
    assert load(tmp_path, min_train_steps=None).schedule.min_train_steps is None
    assert load(tmp_path, ["--min_train_steps", "200"]).schedule.min_train_steps == 200


def test_flip_tta_is_the_default_only_where_training_flips_images(tmp_path):
    """tta defaults to hflip when the training augmentation flips (the model knows the mirror), to none when flips
    are off (laterality) or with the paper preset; written into recipe.json; a given value always wins."""
    r = load(tmp_path)
    assert r.evaluation.tta == "hflip" and json.loads(write_resolved(r, tmp_path).read_text())["tta"] == "hflip"
    assert load(tmp_path, hflip_prob=0.0).evaluation.tta == "none"
    assert load(tmp_path, ["--augment", "false"]).evaluation.tta == "none"
    assert load(tmp_path, preset="paper").evaluation.tta == "none"
    assert load(tmp_path, hflip_prob=0.0, tta="hflip").evaluation.tta == "hflip"
    assert load(tmp_path, ["--tta", "none"]).evaluation.tta == "none"
    with pytest.raises(RecipeError, match="tta"):
        load(tmp_path, tta="vflip")
