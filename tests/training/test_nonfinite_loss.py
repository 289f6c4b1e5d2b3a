"""A diverging run (issue 24, defect 3, training half): once an epoch's training or validation loss is NaN or
infinite, the run stops there in one line naming the epoch and learning_rate, and leaves nothing that looks like a
finished run (no metrics.json, no model, no checkpoint of the NaN epoch)."""
import json
import math
import shutil

import pytest
import torch

from hf_medtl.cli import main
from hf_medtl.errors import HfMedtlError
from hf_medtl.outputs import LOCK
from hf_medtl.training.callbacks import require_finite
from tests.conftest import errors, tiny_recipe
from tests.data.test_multilabel import make_multilabel


def nan_weights(source, target):
    """A copy of a saved checkpoint with one backbone weight NaN (a corrupt or badly converted checkpoint)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(str(target / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.ndim == 4)  # a conv kernel
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def assert_diverged(out, capsys, epoch=1):
    err = errors(capsys)
    assert len(err) == 1, err
    assert f"epoch {epoch}:" in err[0] and "learning_rate" in err[0] and "nan" in err[0].lower(), err[0]
    for complete_looking in ("metrics.json", "model.safetensors", "config.json", "history.json", LOCK):
        assert not (out / complete_looking).exists(), complete_looking
    assert not list(out.glob("checkpoint-*"))  # the diverged epoch's checkpoint was never written


@pytest.mark.parametrize("backbone, extra", [
    ("tiny_timm", []),  # the whole model trains
    ("tiny_vit", ["--save_strategy", "epoch"]),  # another family, with per-epoch checkpoints
    ("tiny_timm", ["--finetune_strategy", "linear_probe", "--augment", "false"]),  # the head on cached features
])
def test_a_diverging_learning_rate_stops_the_run_in_one_line(tmp_path, image_folder, backbone, extra, request, capsys):
    model = request.getfixturevalue(backbone)
    recipe = tiny_recipe(tmp_path, model, image_folder, image_size=24 if backbone == "tiny_timm" else None)
    assert main(["finetune", str(recipe), "--learning_rate", "1e30", *extra]) == 2
    assert_diverged(tmp_path / "run", capsys)


def test_nan_weights_stop_the_run_in_one_line(tmp_path, image_folder, tiny_timm, capsys):
    model = nan_weights(tiny_timm, tmp_path / "nan_model")
    recipe = tiny_recipe(tmp_path, model, image_folder, image_size=24)  # a sane learning rate
    assert main(["finetune", str(recipe)]) == 2
    assert_diverged(tmp_path / "run", capsys)


def test_a_diverging_multilabel_run_stops_in_one_line(tmp_path, tiny_timm, capsys):
    csv_file = make_multilabel(tmp_path / "cxr", n=40)
    recipe = tiny_recipe(tmp_path, tiny_timm, tmp_path, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         val_ratio=0.2, test_ratio=0.2, augment=False, label_smoothing_factor=0)
    assert main(["finetune", str(recipe), "--learning_rate", "1e30"]) == 2
    assert_diverged(tmp_path / "run", capsys)


def test_a_finished_run_in_the_folder_stays_whole_when_the_next_one_diverges(tmp_path, image_folder, tiny_vit, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1)
    out = tmp_path / "run"
    assert main(["finetune", str(recipe)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["finetune", str(recipe), "--learning_rate", "1e30"]) == 2
    assert len(errors(capsys)) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert all(math.isfinite(v) for v in json.loads((out / "metrics.json").read_text())["test"]["per_class"]["f1"])


@pytest.mark.parametrize("train_loss, val_loss, named", [
    (float("nan"), 0.5, "training loss nan"), (0.5, float("inf"), "validation loss inf"),
    (torch.tensor(float("-inf")).item(), 1.0, "training loss -inf")])
def test_require_finite_names_the_epoch_and_the_loss(train_loss, val_loss, named):
    with pytest.raises(HfMedtlError, match=f"epoch 4: {named}.*learning_rate \\(this run: 0.001\\)"):
        require_finite(4, train_loss, val_loss, 1e-3)
    require_finite(4, 0.5, 0.7, 1e-3)  # finite: nothing raised
