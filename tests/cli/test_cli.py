"""The hf-medtl command line: sub-commands listed, argument errors in one line, check-data's output."""
import json
import subprocess
import sys
import typing

import pytest

from hf_medtl.cli import build_parser, main
from tests.conftest import make_image_folder, write_recipe


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("finetune", "check-data", "convert", "evaluate", "compare"):
        assert command in out
    assert set(build_parser()._subparsers._group_actions[0].choices) >= {"finetune", "evaluate"}


def test_bad_option_values_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "m", "d", "--batch_size", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "must be a whole number of at least 1, got '0'" in err and "Traceback" not in err


def test_check_data_writes_report_and_manifest(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", per_class=(10, 10, 10))
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(root), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe), "--val_ratio", "0.2", "--test_ratio", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "30 images" in printed and "train 18, validation 6, test 6" in printed
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["split_counts"] == {"train": 18, "validation": 6, "test": 6}
    assert report["split_settings"]["val_ratio"] == 0.2 and report["manifest"] == "new"
    manifest = (tmp_path / "out" / "split_manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,label,split,group,sha1,note" and len(manifest) == 31


def test_version_prints_the_package_version(capsys):
    import hf_medtl

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"hf-medtl {hf_medtl.__version__}\n"


@pytest.mark.parametrize("command", [["finetune"], ["check-data"], ["cv"]])
def test_recipe_command_help_lists_every_recipe_key_with_its_default(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "path of a JSON recipe" in out
    for line in ("  learning_rate = 0.001", "  threshold = 0.9", '  finetune_strategy = "full"', "  n_bootstrap = 1000",
                 '  lr_scheduler_type = "cosine"', "  data_dir = null"):
        assert line in out, line
    assert "ScheduleArguments:" in out and "Initial learning rate" in out
    assert "any field of transformers.TrainingArguments is accepted" in out
    assert "  seed = " not in out  # transformers' own fields are not listed one by one


def test_finetune_script_help_is_the_commands_help(capsys):
    from hf_medtl.finetune import main as script

    assert script(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: finetune.py") and "  threshold = 0.9" in out
    assert script([]) == 2 and "required: recipe" in capsys.readouterr().err


def test_evaluation_flags_come_from_the_dataclass():
    import dataclasses

    from hf_medtl.config.arguments import EvaluationArguments

    fields = {f.name: f for f in dataclasses.fields(EvaluationArguments)}
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    actions = {a.dest: a for a in evaluate._actions}
    assert actions["n_bootstrap"].default == fields["n_bootstrap"].default == 1000
    assert actions["ci_method"].default == fields["ci_method"].default
    assert actions["ci_method"].choices == list(typing.get_args(typing.get_type_hints(EvaluationArguments)["ci_method"]))
    ns = build_parser().parse_args(["evaluate", "m", "d"])
    assert (ns.n_bootstrap, ns.ci_method, ns.on_bad_image, ns.seed) == (1000, "bca", "error", 0)
    ns = build_parser().parse_args(["study", "robustness", "m", "d"])
    assert ns.n_bootstrap == 200 and ns.allow_pickle_weights is False  # robustness keeps its own, smaller default


def test_importing_the_cli_loads_neither_torch_nor_transformers():
    code = ("import sys, hf_medtl.cli; hf_medtl.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recipe_commands_take_no_abbreviations():
    """`hf-medtl cv RECIPE --seed 3` once ran as `--seeds 3` (argparse abbreviation): every parser that passes
    `--key value` overrides through must match its own flags exactly and pass everything else to the recipe."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    study = commands["study"]._subparsers._group_actions[0].choices
    passing = [p for p in [*commands.values(), *study.values()] if p.get_default("passthrough")]
    assert {p.prog.split(" ", 1)[1] for p in passing} >= {"finetune", "check-data", "cv", "study search",
                                                        "study imbalance", "study strategies"}
    assert all(p.allow_abbrev is False for p in passing)
    ns, rest = parser.parse_known_args(["cv", "r.json", "--seed", "3", "--fol", "2", "--ensem"])
    assert (ns.seed, ns.seeds, ns.fold, ns.folds, ns.ensemble) == (3, 1, None, 5, False)
    assert rest == ["--fol", "2", "--ensem"]  # left to the recipe, which names an unknown key in one line
    ns, rest = parser.parse_known_args(["study", "search", "r.json", "--trial", "3"])
    assert ns.trials == 10 and rest == ["--trial", "3"]
    ns, rest = parser.parse_known_args(["study", "strategies", "r.json", "--fold", "3"])
    assert ns.folds == 1 and rest == ["--fold", "3"]


def test_cv_seed_is_the_first_seed_of_a_one_process_study(tmp_path, capsys):
    """Without --fold, cv's --seed is the recipe's seed (the study's first): the plan's jobs and folders follow it."""
    root = make_image_folder(tmp_path / "d", per_class=(4, 4, 4))
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="m", data_dir=str(root), seed=1,
                          output_dir=str(tmp_path / "out"))
    assert main(["cv", str(recipe), "--folds", "2", "--seed", "3", "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" --seed ", 1)[1].split()[0] for line in lines[:2]] == ["3", "3"]
    assert lines[3].endswith("--seed 3 --collect")
