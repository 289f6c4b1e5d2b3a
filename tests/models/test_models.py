"""Backbone loading: new head with our labels, safe weights only by default, random-init baseline."""
import json

import pytest
import torch

from hf_medtl.models import ModelError, load_backbone
from hf_medtl.config.recipe import ModelArguments


def test_head_labels_and_timm_label_names(tiny_timm):
    model, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_timm)), ["cyst", "tumour"])
    assert model.config.id2label == {0: "cyst", 1: "tumour"} and model.config.label_names == ["cyst", "tumour"]
    assert model.timm_model.get_classifier().out_features == 2


def test_pickle_weights_refused_unless_allowed(tmp_path, tiny_vit):
    from transformers import AutoModelForImageClassification, ViTImageProcessor

    model = AutoModelForImageClassification.from_pretrained(tiny_vit)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    ViTImageProcessor.from_pretrained(tiny_vit).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="only pickle weights .* allow_pickle_weights true"):
        load_backbone(ModelArguments(model_name_or_path=str(tmp_path)), ["a", "b"])
    loaded, _ = load_backbone(ModelArguments(model_name_or_path=str(tmp_path), allow_pickle_weights=True), ["a", "b"])
    key = "vit.embeddings.patch_embeddings.projection.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])


def test_random_init_baseline_differs_from_pretrained(tiny_vit):
    pre, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_vit)), ["a", "b"])
    scratch, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_vit), pretrained=False), ["a", "b"])
    key = "vit.embeddings.patch_embeddings.projection.weight"
    assert not torch.equal(pre.state_dict()[key], scratch.state_dict()[key])
    assert scratch.config.id2label == {0: "a", 1: "b"}


@pytest.mark.parametrize("change", ["fewer_names", "more_names_and_outputs", "names_and_outputs_shrunk"])
def test_a_model_whose_labels_disagree_with_its_classifier_is_one_line(trained_run, tmp_path, capsys, change):
    """config.json's labels edited away from the weights: never served under LABEL_i names, never a traceback."""
    import json
    import shutil

    from hf_medtl.cli import main
    from tests.conftest import errors

    model = tmp_path / "model"
    shutil.copytree(trained_run, model)
    config = json.loads((model / "config.json").read_text())
    config["label_names"] = {"fewer_names": ["benign", "malignant"], "more_names_and_outputs": ["a", "b", "c", "d"],
                             "names_and_outputs_shrunk": ["a", "b"]}[change]
    if change != "fewer_names":
        config["num_classes"] = len(config["label_names"])
    (model / "config.json").write_text(json.dumps(config))
    image = trained_run.parent / "images" / "benign" / "benign_000.png"
    assert main(["predict", str(model), str(image)]) == 2
    [line] = errors(capsys)
    assert str(model) in line and "config.json" in line


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_a_vit_trained_at_another_image_size_serves_that_size(tmp_path, image_folder, tiny_vit, strategy, capsys):
    """The tiny ViT's config says 24 px; at image_size 48 its position embeddings are resized once (the model's own
    interpolation), config.json says 48, and pipeline() serves the run's own test probabilities at 48 px."""
    from hf_medtl.cli import main as cli
    from tests.conftest import assert_pipeline_serves, tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=48, n_bootstrap=0,
                         finetune_strategy=strategy)
    assert cli(["finetune", str(recipe)]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["image_size"] == 48 and json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())[
        "size"] == {"height": 48, "width": 48}
    assert_pipeline_serves(tmp_path / "run", image_folder, atol=1e-5, what=f"ViT at 48 px ({strategy})")


def test_a_patch_size_that_does_not_divide_the_image_size_is_one_line(tmp_path, image_folder, tiny_vit, capsys):
    from hf_medtl.cli import main as cli
    from tests.conftest import errors, tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=50)
    assert cli(["finetune", str(recipe)]) == 2
    assert errors(capsys) == [f"error: image_size 50: '{tiny_vit}' splits images into 8-px patches; use a multiple "
                              "of 8 (e.g. 48 or 56)"]
    assert not (tmp_path / "run" / "metrics.json").exists()
