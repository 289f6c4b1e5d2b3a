"""Defaults in one place: every flag of a command that is not a recipe command is a field of its options dataclass
(hf_medtl.config.commands) with that field's default, the library functions behind the commands default to the same
values, and the effective defaults of the recipe keys are the ones --help and docs/recipes.md show."""
import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from hf_medtl.cli import build_parser, main
from hf_medtl.config import commands as options
from hf_medtl.config.arguments import DEFAULT_MIN_TRAIN_STEPS, DataArguments
from hf_medtl.config.saved import DATA_KEYS
from tests.conftest import write_recipe

REPO = Path(__file__).parents[2]


def _parsers() -> dict:
    """command ('study robustness' for a study) -> (its parser, its options dataclass)."""
    from hf_medtl.cli import COMMANDS

    commands = build_parser()._subparsers._group_actions[0].choices
    out = {}
    for module in COMMANDS:
        opts = getattr(module, "OPTIONS", None)
        command = module.__name__.rsplit(".", 1)[1].replace("_", "-")
        for name, cls in (opts.items() if isinstance(opts, dict) else [(None, opts)] if opts else []):
            parser = commands[command]
            if name is not None:
                parser = parser._subparsers._group_actions[0].choices[name]
            out[f"{command} {name}" if name else command] = (parser, cls)
    return out


def test_every_command_flag_is_its_options_field_with_the_fields_default():
    """A flag added by hand with its own default (a literal that drifts from the library's) fails here."""
    parsers = _parsers()
    assert set(parsers) == {"evaluate", "predict", "export", "app", "compare", "cv", "study imbalance",
                            "study robustness", "study search", "study strategies"}
    data_fields = {f.name: f for f in dataclasses.fields(DataArguments)}
    checked = 0
    for command, (parser, cls) in parsers.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            if action.dest in fields:
                f = fields[action.dest]
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                assert action.default == default and type(action.default) is type(default), (command, action.dest)
                first_words = f.metadata["help"].split(";")[0].replace("%", "%%")
                if getattr(action, "const", None) is not False:  # (--no_tta: the off twin of a tri-state --tta)
                    assert first_words in action.help, (command, action.dest)
                checked += 1
            else:  # the data flags of a saved run: DataArguments' keys, defaulting to the run's own (None here)
                assert action.dest in DATA_KEYS and action.dest in data_fields and action.default is None, \
                    (command, action.option_strings)
    assert checked >= 45


def test_option_dataclasses_share_the_recipe_keys_they_repeat():
    """n_bootstrap, ci_method, on_bad_image and the pickle / remote-code opt-ins are the recipe keys themselves."""
    from hf_medtl.config.arguments import EvaluationArguments, ModelArguments

    e = options.EvaluateOptions()
    assert (e.n_bootstrap, e.ci_method) == (EvaluationArguments.n_bootstrap, EvaluationArguments.ci_method)
    assert e.on_bad_image == DataArguments.on_bad_image and e.trust_remote_code is ModelArguments.trust_remote_code
    assert options.CompareOptions().n_bootstrap == EvaluationArguments.n_bootstrap
    assert options.RobustnessOptions().n_bootstrap == 200  # one interval per condition: fewer resamples
    assert options.StrategiesOptions().strategies.split(",") == list(options.STRATEGIES)
    assert options.RobustnessOptions().severities == ",".join(map(str, options.SEVERITIES))


def _library_defaults():
    """(function, parameter, options class, field) for each library entry point behind a command."""
    from hf_medtl.evaluation import compare
    from hf_medtl.inference import app, export, predict
    from hf_medtl.studies import cv, imbalance, robustness, search, strategies

    o = options
    return [(export.export_onnx, "opset", o.ExportOptions, "opset"),
            (predict.predict, "batch_size", o.PredictOptions, "batch_size"),
            (predict.format_predictions, "fmt", o.PredictOptions, "format"),
            (predict.format_predictions, "top_k", o.PredictOptions, "top_k"),
            (app.launch, "host", o.AppOptions, "host"),
            (compare.compare, "output_dir", o.CompareOptions, "output_dir"),
            (compare.compare, "n_bootstrap", o.CompareOptions, "n_bootstrap"),
            (compare.compare, "seed", o.CompareOptions, "seed"),
            (cv.run_cv, "folds", o.CvOptions, "folds"), (cv.run_cv, "seeds", o.CvOptions, "seeds"),
            (cv.collect, "folds", o.CvOptions, "folds"), (cv.collect, "seeds", o.CvOptions, "seeds"),
            (imbalance.run_imbalance, "levels", o.ImbalanceOptions, "levels"),
            *[(robustness.run_robustness, name, o.RobustnessOptions, name)
              for name in ("split", "perturbations", "severities", "batch_size", "n_bootstrap", "seed")],
            (search.run_search, "n_trials", o.SearchOptions, "trials"),
            (search.run_search, "study_name", o.SearchOptions, "study_name"),
            (strategies.run_strategies, "strategies", o.StrategiesOptions, "strategies"),
            (strategies.run_strategies, "folds", o.StrategiesOptions, "folds")]


def test_the_library_functions_default_to_the_commands_options():
    for function, parameter, cls, name in _library_defaults():
        default = inspect.signature(function).parameters[parameter].default
        assert default == getattr(cls(), name), f"{function.__module__}.{function.__name__}({parameter}=...)"
    from hf_medtl.inference.evaluate import evaluate_model
    from hf_medtl.studies.perturbations import SEVERITIES
    from hf_medtl.studies.strategies import STRATEGIES

    assert SEVERITIES == options.SEVERITIES and STRATEGIES == options.STRATEGIES
    assert list(inspect.signature(evaluate_model).parameters) == ["model_dir", "data", "options", "overrides"]


def test_evaluate_model_refuses_an_unknown_option_before_any_work(tmp_path):
    from hf_medtl.inference.evaluate import evaluate_model

    with pytest.raises(TypeError, match="n_bootstraps"):
        evaluate_model(tmp_path / "no-model", tmp_path / "no-data", n_bootstraps=10)
    assert list(tmp_path.iterdir()) == []


def _reference(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    return capsys.readouterr().out


def test_the_auto_defaults_help_shows_are_what_a_recipe_resolves_to(tmp_path, capsys):
    """tta and min_train_steps depend on other keys: their default is "auto" in the dataclass, --help and
    docs/recipes.md, with the rule in the help; the rule there is what load_recipe resolves."""
    from hf_medtl.config.recipe import load_recipe

    help_text = " ".join(_reference(capsys).split())  # unwrapped
    assert 'tta = "auto"' in help_text and 'min_train_steps = "auto"' in help_text
    assert "auto: hflip when training flips images (augment true and hflip_prob > 0" in help_text
    assert (f"auto: {DEFAULT_MIN_TRAIN_STEPS} when the recipe (and its preset) gives no num_train_epochs, else null"
            in help_text)
    docs = (REPO / "docs" / "recipes.md").read_text()
    assert "| `tta` | `\"auto\"` |" in docs and "| `min_train_steps` | `\"auto\"` |" in docs

    def load(argv=(), **keys):
        path = write_recipe(tmp_path / "r.json", model_name_or_path="some/model", data_dir="images", **keys)
        return load_recipe(path, list(argv))

    r = load()
    assert (r.evaluation.tta, r.schedule.min_train_steps) == ("hflip", DEFAULT_MIN_TRAIN_STEPS)
    assert load(hflip_prob=0.0).evaluation.tta == "none" and load(["--augment", "false"]).evaluation.tta == "none"
    assert load(num_train_epochs=3).schedule.min_train_steps is None
    assert load(tta="auto", min_train_steps="auto", augment=False).resolved["tta"] == "none"  # "auto" given = left out
    assert load(["--min_train_steps", "auto"]).schedule.min_train_steps == DEFAULT_MIN_TRAIN_STEPS


def test_every_other_default_help_shows_is_what_a_recipe_resolves_to(tmp_path):
    """No default is injected behind the dataclasses' back: a minimal recipe resolves every key of hf_medtl's
    groups to the default the reference shows, but the "auto" ones (above) and output_dir (its help: outputs/<name>)."""
    from hf_medtl.config.recipe import load_recipe, write_resolved
    from hf_medtl.config.reference import rows

    given = {"model_name_or_path": "some/model", "data_dir": "images"}
    r = load_recipe(write_recipe(tmp_path / "minimal.json", **given))
    resolved = json.loads(write_resolved(r, tmp_path).read_text())
    for group, _, keys in rows():
        for name, shown, help_text in keys:
            if group == "training":
                if name == "output_dir":
                    assert "outputs/<recipe name>" in help_text and resolved[name] == "outputs/minimal"
                else:  # the training keys recipe.json holds are the ones given
                    assert name not in resolved, name
            elif json.loads(shown) == "auto":
                assert "auto:" in help_text and resolved[name] != "auto", name
            elif name not in given:
                assert resolved[name] == json.loads(shown), name
