"""The hf-medtl command line: sub-commands listed, argument errors in one line, check-data's output."""
import json

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
