"""The bad-input corpus: each class of bad input a careless or hostile user tries, through the CLI. For each:
exit code 2, one 'error:' line on stderr naming the culprit, no traceback, nothing that looks complete left
behind, and nothing outside the data root read or echoed."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from hf_medtl.cli import main
from tests.conftest import make_image_folder, write_recipe

SECRET = "SECRET-CONTENT-7f3a"


def recipe(tmp_path, **values):
    values = {"model_name_or_path": "unused", "output_dir": str(tmp_path / "out"), **values}
    return str(write_recipe(tmp_path / "r.json", **values))


def npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def images(n, size=8):
    return np.random.default_rng(0).integers(0, 255, (n, size, size), dtype=np.uint8)


def csv_case(tmp_path, text):
    make_image_folder(tmp_path / "data" / "imgs", per_class=(4, 4, 4))
    (tmp_path / "data" / "labels.csv").write_text(text)
    return ["check-data", recipe(tmp_path, csv_file=str(tmp_path / "data" / "labels.csv"))]


def outside_file(tmp_path):
    """A non-image file outside the data root whose content must never be read into any output."""
    (tmp_path / "secret.txt").write_text(SECRET * 20)
    return tmp_path / "secret.txt"


CASES = {
    # .npz structure
    "npz lengths differ": (lambda t: ["check-data", recipe(t, npz_file=str(npz(
        t, train_images=images(10), train_labels=np.arange(9) % 2)))], "train_images has 10 images but train_labels has 9"),
    "npz label -1": (lambda t: ["check-data", recipe(t, npz_file=str(npz(
        t, train_images=images(4), train_labels=np.array([0, 1, -1, 0]))))], "class ids must be 0..K-1"),
    "npz object array": (lambda t: ["check-data", recipe(t, npz_file=str(npz(
        t, train_images=np.array([None] * 3, dtype=object), train_labels=np.zeros(3))))], "object arrays"),
    "npz not an archive": (lambda t: ((t / "x.npz").write_text("not a zip"),
                                      ["check-data", recipe(t, npz_file=str(t / "x.npz"))])[1], "not a readable .npz"),
    "npz label beyond class_names": (lambda t: ["check-data", recipe(t, class_names=["a", "b"], npz_file=str(npz(
        t, train_images=images(3), train_labels=np.array([0, 1, 2]))))], "holds 2 but class_names has 2 names"),
    # CSV structure
    "csv empty label": (lambda t: csv_case(t, "path,label\nimgs/benign/benign_000.png,benign\n"
                                              "imgs/benign/benign_001.jpg,\n"), "line 3: empty label"),
    "csv missing field": (lambda t: csv_case(t, "path,label,group\nimgs/benign/benign_000.png,benign,p1\n"
                                                "imgs/normal/normal_000.png\n"), "line 3: wrong number of fields"),
    "csv absolute path outside": (lambda t: csv_case(t, f"path,label\n{outside_file(t)},benign\n"
                                                        "imgs/normal/normal_000.png,normal\n"), "lies outside"),
    "csv dotdot path": (lambda t: (os.makedirs(t / "sub"), (t / "sub" / "labels.csv").write_text(
        "path,label\n../secret.txt,a\n../secret.txt,b\n"), outside_file(t),
        ["check-data", recipe(t, csv_file=str(t / "sub" / "labels.csv"))])[-1], "lies outside"),
    # folders and patterns
    "file_pattern climbs out": (lambda t: ["check-data", recipe(t, data_dir=str(make_image_folder(t / "d")),
                                                                  file_pattern="../../*")], "must stay inside"),
    "symlink out of class folder": (lambda t: (make_image_folder(t / "d"), outside_file(t),
                                               os.symlink(t / "secret.txt", t / "d" / "benign" / "link.png"),
                                               ["check-data", recipe(t, data_dir=str(t / "d"))])[-1], "lies outside"),
    "every class copies of one image": (lambda t: (
        [Image.new("L", (16, 16), 40 * c).save(t / "d" / n / f"{i}.png") for c, n in enumerate("abc")
         if not (t / "d" / n).mkdir(parents=True) for i in range(5)],
        ["check-data", recipe(t, data_dir=str(t / "d"), max_group_share=1)])[1], "split is empty after the data check"),
    # (flat pictures are copies of each other whatever their grey: one group of two classes, 10 of 15 images)
    "one group swallows the data": (lambda t: (
        [Image.new("L", (16, 16), 40 * c).save(t / "d" / n / f"{i}.png") for c, n in enumerate("abc")
         if not (t / "d" / n).mkdir(parents=True) for i in range(5)],
        ["check-data", recipe(t, data_dir=str(t / "d"))])[1], r"one leakage group holds 10 of the 15 images \(67%"),
    "max_group_share 0": (lambda t: ["check-data", recipe(t, data_dir=str(make_image_folder(t / "d")),
                                                            max_group_share=0)], r"max_group_share 0: must lie in"),
    "labels differ only in case": (lambda t: csv_case(t, "path,label\n" + "".join(
        f"imgs/{c}/{c}_{i:03d}.{'jpg' if i == 1 else 'png'},{c.capitalize() if c == 'normal' and i < 2 else c}\n"
        for c in ("benign", "malignant", "normal") for i in range(4))),
        "labels that differ only in case or surrounding spaces: 'Normal' \\(2 images\\) vs 'normal' \\(2 images\\)"),
    "unused ptid column": (lambda t: csv_case(t, "path,label,ptid\n" + "".join(
        f"imgs/{c}/{c}_{i:03d}.{'jpg' if i == 1 else 'png'},{c},pt{k * 2 + i // 2}\n"
        for k, c in enumerate(("benign", "malignant", "normal")) for i in range(4))),
        "column 'ptid' looks like a patient id .*set group_column 'ptid'.*or group_column null"),
    # the recipe itself
    "recipe is a folder": (lambda t: ["finetune", str(t)], "is a folder"),
    "recipe not UTF-8": (lambda t: ((t / "bad.json").write_bytes(b'{"seed": "\xff\xfe"}'),
                                    ["finetune", str(t / "bad.json")])[1], "not UTF-8"),
    "batch size 0": (lambda t: ["finetune", recipe(t, data_dir="d"), "--per_device_train_batch_size", "0"],
                     "'per_device_train_batch_size' must be at least 1"),
    "learning rate abc": (lambda t: ["finetune", recipe(t, data_dir="d"), "--learning_rate", "abc"],
                          "command line: --learning_rate must be float"),
    "hub token of the wrong type": (lambda t: ["finetune", recipe(t, data_dir="d", hub_token=12345678)],
                                    "'hub_token' must be str or null, got <hidden>"),
    "output_dir is a file": (lambda t: ((t / "f").write_text("x"), ["check-data", recipe(
        t, data_dir=str(make_image_folder(t / "d")), output_dir=str(t / "f"))])[1], "is a file"),
    "output_dir not writable": (lambda t: ((t / "f").write_text("x"), ["finetune", recipe(
        t, data_dir=str(make_image_folder(t / "d")), output_dir=str(t / "f" / "sub"))])[1], "not writable"),
    "no backbone for finetune": (lambda t: ["finetune", recipe(t, model_name_or_path=None, data_dir="d")],
                                 "'model_name_or_path' is required"),
    # non-finite numbers: JSON's NaN / Infinity tokens and command-line values, in any key (range checks miss them)
    **{f"non-finite {key} {raw}": (lambda t, key=key, raw=raw: ["finetune", recipe(t, data_dir="d"), f"--{key}", raw],
                                   f"--{key} must be a finite number, got")
       for key, raw in (("num_train_epochs", "Infinity"), ("l1_feature_reg", "NaN"), ("focal_gamma", "NaN"),
                        ("head_dropout", "NaN"), ("backbone_lr_multiplier", "-Infinity"), ("layer_decay", "NaN"),
                        ("class_weights", "[1, NaN, 2]"), ("learning_rate", "Infinity"))},
    "non-finite value in the recipe file": (lambda t: ((t / "nan.json").write_text(
        '{"model_name_or_path": "m", "data_dir": "d", "l2_feature_reg": NaN}'), ["finetune", str(t / "nan.json")])[1],
        "'l2_feature_reg' must be a finite number, got NaN"),
    "image_size beyond any scan": (lambda t: ["finetune", recipe(t, data_dir="d"), "--image_size", "100000"],
                                   "'image_size' must be at most 2048 px, got 100000"),
    "search log range from 0": (lambda t: ["study", "search", recipe(t, data_dir=str(make_image_folder(t / "d")),
                                           search_space={"learning_rate": {"low": 0, "high": 0.1, "log": True}})],
                                "'learning_rate' is searched on a log scale, so 'low' must be above 0"),
    "search negative choice": (lambda t: ["study", "search", recipe(t, data_dir=str(make_image_folder(t / "d")),
                                          search_space={"factor": {"choices": [0.5, -0.3]}})],
                               "search_space: 'factor' value -0.3 is not a valid recipe value"),
    "predict output is a folder": (lambda t: (_saved_model(t), (t / "outdir").mkdir(), ["predict", str(t / "m"), str(
        make_image_folder(t / "d", classes=("a", "b", "c"))), "--output", str(t / "outdir")])[-1],
        "--output '.*outdir': is a folder"),
    # unwritable destinations, refused before the model is loaded (a read-only filesystem: /sys, even for root)
    **{f"predict {flag} {where}": (lambda t, flag=flag, where=where: (_saved_model(t), (t / "file").write_text("x"), [
        "predict", str(t / "m"), str(make_image_folder(t / "d", classes=("a", "b", "c"))), flag,
        str(t / "file" / "p.csv") if where == "under a file" else "/sys/hf_medtl_test/p.csv"])[-1],
        f"{flag} .*(cannot be created \\(.*file is a file|cannot be written there|not writable)")
       for flag in ("--output", "--cam") for where in ("under a file", "on a read-only filesystem")},
    "export onto a read-only filesystem": (lambda t: (_saved_model(t), ["export", str(t / "m"), "--onnx",
                                                                        "/sys/hf_medtl_test.onnx", "--check", str(
        make_image_folder(t / "d", classes=("a", "b", "c")))])[-1], "--onnx /sys/hf_medtl_test.onnx: cannot be written there"),
    # an edited or deleted preprocessor_config.json: one line naming the key, for every command that serves
    **{f"{command} with {what}": (lambda t, command=command, edit=edit: (_saved_model(t), edit(t / "m"), [
        command, str(t / "m"), *({"predict": [], "evaluate": ["--output_dir", str(t / "ev")],
                                  "export": ["--onnx", str(t / "m.onnx"), "--check"]}[command]),
        str(make_image_folder(t / "d", classes=("a", "b", "c")))])[-1], message)
       for command in ("predict", "evaluate", "export")
       for what, edit, message in (
           ("do_resize false", lambda m: _edit_processor(m, do_resize=False), "'do_resize' is false"),
           ("a size the ViT cannot take", lambda m: _edit_processor(m, size={"height": 40, "width": 40}),
            "'size' .*40.* but the model takes 24 × 24 px"),
           ("a 2-value image_mean", lambda m: _edit_processor(m, image_mean=[0.5, 0.5]),
            "'image_mean' must hold 3 values"),
           ("it deleted", lambda m: (m / "preprocessor_config.json").unlink(),
            "preprocessor_config.json is missing .*restore it"))},
    # evaluate
    "evaluate pickle-only model": (lambda t: (_pickle_model(t), ["evaluate", str(t / "m"), str(
        make_image_folder(t / "d", classes=("a", "b", "c")))])[1], "only pickle weights"),
    "evaluate unreadable image": (lambda t: (_saved_model(t), make_image_folder(t / "d", classes=("a", "b", "c")),
                                             (t / "d" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n" + b"0" * 50),
                                             ["evaluate", str(t / "m"), str(t / "d")])[-1], "'.*bad.png' \\(not an image|corrupt"),
    "evaluate output_dir is a file": (lambda t: (_saved_model(t), (t / "f").write_text("x"), ["evaluate", str(t / "m"), str(
        make_image_folder(t / "d", classes=("a", "b", "c"))), "--output_dir", str(t / "f")])[-1], "is a file"),
    "image cache folder is a file": (lambda t: (_saved_model(t), (t / "f").write_text("x"), ["evaluate", str(t / "m"), str(
        make_image_folder(t / "d", classes=("a", "b", "c"))), "--data_cache_dir", str(t / "f")])[-1],
        "image cache '.*f': cannot write there .*data_cache false"),
    # a saved run's recipe.json (it says which TTA the run's metrics used, so predict / evaluate serve the same)
    "saved recipe.json malformed": (lambda t: (_saved_model(t), (t / "m" / "recipe.json").write_text("{not json"),
                                               make_image_folder(t / "d", classes=("a", "b", "c")),
                                               ["predict", str(t / "m"), str(t / "d")])[-1], "recipe.json: unreadable"),
    "saved recipe.json unknown tta": (lambda t: (_saved_model(t), (t / "m" / "recipe.json").write_text('{"tta": "vflip"}'),
                                                 make_image_folder(t / "d", classes=("a", "b", "c")),
                                                 ["evaluate", str(t / "m"), str(t / "d"), "--output_dir", str(t / "out")])[-1],
                                      "recipe.json: tta 'vflip' unknown; use one of none, hflip"),
    # (a damaged image-cache chunk is no longer an error: it is rebuilt; tests/data/test_cache_damage.py)
}


def _saved_model(t):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    ViTForImageClassification(config).save_pretrained(t / "m")
    ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(t / "m")
    return t / "m"


def _edit_processor(model_dir, **changes):
    path = model_dir / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _pickle_model(t):
    import torch
    from safetensors.torch import load_file

    m = _saved_model(t)
    torch.save(load_file(m / "model.safetensors"), m / "pytorch_model.bin")  # transformers 5 writes safetensors only
    (m / "model.safetensors").unlink()
    return m


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(tmp_path, capsys, name):
    import re

    make_argv, expected = CASES[name]
    argv = make_argv(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2, name
    printed = capsys.readouterr()
    capsys_err = printed.err
    lines = [line for line in capsys_err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in capsys_err and len(lines) == 1, capsys_err[-2000:]
    assert re.search(expected, lines[0]), lines[0]
    assert SECRET not in printed.out + capsys_err
    assert not (tmp_path / "out" / "metrics.json").exists() and not (tmp_path / "out" / "model.safetensors").exists()
    for report in tmp_path.rglob("data_report.json"):
        assert SECRET not in report.read_text()


def test_text_file_named_png_is_reported_without_its_content(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d")
    (root / "benign" / "notes.png").write_text(SECRET * 50)
    assert main(["check-data", recipe(tmp_path, data_dir=str(root), on_bad_image="skip")]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["bad_images"] == [{"path": "benign/notes.png", "reason": "not an image"}]
    assert SECRET not in capsys.readouterr().err


def test_group_spanning_labels_is_reported(tmp_path):
    root = make_image_folder(tmp_path / "d")
    Image.open(root / "benign" / "benign_000.png").save(root / "malignant" / "copy_of_benign.png")
    assert main(["check-data", recipe(tmp_path, data_dir=str(root))]) == 0
    spanning = json.loads((tmp_path / "out" / "data_report.json").read_text())["leakage_groups"]["spanning_labels"]
    assert len(spanning) == 1 and spanning[0]["labels"] == ["benign", "malignant"]
    assert sorted(spanning[0]["images"]) == ["benign/benign_000.png", "malignant/copy_of_benign.png"]


def test_npz_holding_only_a_test_split_is_evaluated(tmp_path):
    _saved_model(tmp_path)
    np.savez(tmp_path / "released_test.npz", test_images=images(9, 24), test_labels=np.arange(9) % 3)
    assert main(["evaluate", str(tmp_path / "m"), str(tmp_path / "released_test.npz"), "--split", "test",
                 "--n_bootstrap", "0", "--output_dir", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["metrics"]["released_test"]["n"] == 9


def test_evaluate_loads_pickle_weights_only_when_allowed(tmp_path):
    _pickle_model(tmp_path)
    make_image_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=(2, 2, 2))
    assert main(["evaluate", str(tmp_path / "m"), str(tmp_path / "d"), "--allow_pickle_weights", "--n_bootstrap",
                 "0", "--output_dir", str(tmp_path / "ev")]) == 0
    assert len((tmp_path / "ev" / "predictions.csv").read_text().splitlines()) == 7


def test_a_full_disk_is_one_line_and_leaves_no_complete_run(tmp_path, capsys, monkeypatch):
    """ENOSPC while the run writes its outputs (here: the model card): one line naming the file, exit 2, no metrics.json."""
    import errno
    import pathlib

    from tests.conftest import tiny_recipe

    real_write = pathlib.Path.write_text

    def full(self, *a, **k):
        if self.name == "README.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *a, **k)

    root = make_image_folder(tmp_path / "d", per_class=(6, 6, 6))
    _saved_model(tmp_path)  # a ViT checkpoint to fine-tune
    argv = ["finetune", str(tiny_recipe(tmp_path, tmp_path / "m", root, num_train_epochs=1, n_bootstrap=0,
                                        image_size=24))]
    monkeypatch.setattr(pathlib.Path, "write_text", full)
    assert main(argv) == 2
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "Traceback" not in err and "README.md: no space left on the device" in line
    assert not (tmp_path / "run" / "metrics.json").exists()
