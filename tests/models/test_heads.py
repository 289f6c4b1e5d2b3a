"""hf_medtl's heads: the bottleneck loss, head initialisations, and saved models of every strategy and head
loading back (hf_medtl.load_model, `hf-medtl evaluate`, pipeline with and without hf_medtl imported)."""
import json
import math

import pytest
import torch

from hf_medtl.cli import main as cli
from hf_medtl.finetune import run
from hf_medtl.training.losses import ClassificationLoss
from hf_medtl.models import MedtlForImageClassification, load_backbone
from hf_medtl.config.recipe import ModelArguments, load_recipe
from tests.conftest import serve_with_remote_code, tiny_recipe


def bottleneck_model(path, **extra):
    args = ModelArguments(model_name_or_path=str(path), head="bottleneck", bottleneck_dim=8, **extra)
    model, processor = load_backbone(args, ["a", "b", "c"])
    return model.eval(), processor


def test_bottleneck_loss_is_cross_entropy_plus_both_penalties(tiny_timm):
    model, _ = bottleneck_model(tiny_timm, l1_feature_reg=0.01, l2_feature_reg=0.1)
    assert isinstance(model, MedtlForImageClassification) and model.bottleneck.weight.shape == (8, 256) and model.classifier.in_features == 8
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(pixel_values=x)
    h = model.bottleneck(model.backbone(pixel_values=x).logits)  # h = W'z
    assert torch.allclose(out.features, h)
    expected = (torch.nn.functional.cross_entropy(out.logits, y) + 0.01 * h.abs().sum(1).mean()
                + 0.1 * (h ** 2).sum(1).mean())
    loss = ClassificationLoss(l1=0.01, l2=0.1)
    with torch.no_grad():
        assert loss(out, y).item() == pytest.approx(expected.item(), rel=1e-5)
        # The Trainer's normalisation: a sum over the batch divided by the step's item count.
        assert loss(out, y, num_items_in_batch=torch.tensor(6)).item() == pytest.approx(expected.item(), rel=1e-5)
        assert model(pixel_values=x, labels=y).loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("how,check", [
    ("xavier_uniform", lambda w, fi, fo: (w.abs().max() <= math.sqrt(6 / (fi + fo)) and
                                          abs(w.std() - math.sqrt(2 / (fi + fo))) < 0.03 * math.sqrt(2 / (fi + fo)))),
    ("kaiming_normal", lambda w, fi, fo: abs(w.std() - math.sqrt(2 / fi)) < 0.03 * math.sqrt(2 / fi)),
    ("he", lambda w, fi, fo: abs(w.std() - math.sqrt(2 / fi)) < 0.03 * math.sqrt(2 / fi)),
    ("lecun_normal", lambda w, fi, fo: abs(w.std() - math.sqrt(1 / fi)) < 0.03 * math.sqrt(1 / fi)),
    ("orthogonal", lambda w, fi, fo: torch.allclose(w.T @ w, torch.eye(fi), atol=1e-4)),
    ("trunc_normal", lambda w, fi, fo: w.abs().max() <= 0.04 and abs(w.std() - 0.02 * 0.8796) < 0.001),
])
def test_head_init_statistics(tiny_timm, how, check):
    bigger, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_timm), head="bottleneck",
                                             bottleneck_dim=1024, head_init=how), ["a", "b"])
    w = bigger.bottleneck.weight.detach()
    fan_out, fan_in = w.shape
    assert abs(w.mean()) < 0.05 * w.std() + 1e-6
    assert check(w, fan_in, fan_out)
    assert torch.count_nonzero(bigger.classifier.bias) == 0


def test_default_init_keeps_the_family_initialisation(tiny_vit):
    torch.manual_seed(0)
    model, _ = load_backbone(ModelArguments(model_name_or_path=str(tiny_vit)), ["a", "b"])
    std = model.classifier.weight.std().item()  # ViT: trunc_normal(initializer_range 0.02)
    assert 0.01 < std < 0.03


STRATEGIES = {
    "partial": dict(finetune_strategy="partial", trainable_stages=2),
    "gradual": dict(finetune_strategy="gradual", unfreeze_at_epochs=[2], backbone_lr_multiplier=0.1),
    "bottleneck": dict(head="bottleneck", bottleneck_dim=8, l1_feature_reg=1e-3, l2_feature_reg=1e-3,
                       finetune_strategy="linear_probe", head_dropout=0.2, head_init="xavier_uniform"),
    "dropout_head": dict(head_dropout=0.3, class_weights="balanced", loss="focal"),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_saves_a_model_that_loads_and_is_scored(tmp_path, image_folder, tiny_resnet, strategy):
    import hf_medtl
    from transformers import pipeline

    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_resnet, image_folder, num_train_epochs=2, image_size=32,
                                          n_bootstrap=0, **STRATEGIES[strategy])))
    out = tmp_path / "run"
    model, processor, classes = hf_medtl.load_model(out)
    assert classes == ["benign", "malignant", "normal"] and not model.training
    assert cli(["evaluate", str(out), str(image_folder), "--output_dir", str(tmp_path / "ev"), "--n_bootstrap", "0"]) == 0
    scored = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert scored["metrics"]["images"]["n"] == 36 and len(scored["metrics"]["images"]["confusion_matrix"]) == 3
    preds = pipeline("image-classification", model=str(out))(str(image_folder / "benign" / "benign_000.png"), top_k=3)
    assert {p["label"] for p in preds} == set(classes)
    assert metrics["trainable_parameters"][0]["trainable_params"] < metrics["total_parameters"] or strategy == "dropout_head"


def test_custom_head_loads_in_plain_transformers_with_remote_code(tmp_path, image_folder, tiny_timm):
    run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=1, image_size=24, n_bootstrap=0,
                                tta="none", **STRATEGIES["bottleneck"])))  # the head's own class, not TTA's
    out = tmp_path / "run"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_medtl_classifier" and (out / "modeling_medtl.py").is_file()
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_medtl.MedtlForImageClassification"
    assert "trust_remote_code=True" in (out / "README.md").read_text()
    served = serve_with_remote_code(out, image_folder / "normal" / "normal_000.png", tmp_path)
    assert sorted(served) == ["benign", "malignant", "normal"]
