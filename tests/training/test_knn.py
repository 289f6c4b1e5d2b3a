"""finetune_strategy knn: no training; k chosen on validation and recorded; the saved model (hf_medtl's knn head,
the training features as buffers) serves through pipeline() and `hf-medtl predict` with predictions_test.csv's
probabilities; those equal scikit-learn's KNeighborsClassifier on the L2-normalised training features. Bad knn
inputs: one line, exit 2, nothing run."""
import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_medtl.cli import main as cli
from tests.conftest import CLASSES, errors, tiny_recipe
from tests.inference.test_serving import non_square_folder


def features(model, processor, files) -> np.ndarray:
    """The saved model's pooled backbone features of ``files``, L2-normalised here (numpy)."""
    from PIL import Image

    with torch.no_grad():
        pixels = processor(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
        z = model.backbone(pixel_values=pixels).logits.numpy().astype(np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def manifest(out: Path, split: str) -> list[dict]:
    with open(out / "split_manifest.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_timm"])
def test_knn_chooses_k_and_serves_the_probabilities_of_an_independent_knn(tmp_path, backbone, request, capsys):
    from sklearn.neighbors import KNeighborsClassifier
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    from hf_medtl.models import register_auto_classes

    register_auto_classes()
    data = non_square_folder(tmp_path / "data", n=20)
    recipe = tiny_recipe(tmp_path, request.getfixturevalue(backbone), data, image_size=24, n_bootstrap=0,
                         dedupe=False, augment=False, finetune_strategy="knn")
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    knn = metrics["knn"]
    assert knn["metric"] == "cosine" and knn["k"] in (1, 3, 5, 7, 11, 15, 21)
    assert knn["validation_accuracy"] == max(knn["candidates"]["cosine"].values())
    assert metrics["validation"]["accuracy"] == pytest.approx(knn["validation_accuracy"])
    assert metrics["epochs_run"] == 0 and metrics["trainable_parameters"] == []

    with open(out / "predictions_test.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    expected = {p: {c: float(r[f"p_{c}"]) for c in CLASSES} for p, r in rows.items()}

    # pipeline() and `hf-medtl predict` on the non-square test images
    classifier = pipeline("image-classification", model=str(out))
    paths = list(rows)
    for path in paths:
        served = {p["label"]: p["score"] for p in classifier(str(data / path), top_k=len(CLASSES))}
        assert served == pytest.approx(expected[path], abs=1e-5), path
    capsys.readouterr()
    assert cli(["predict", str(out), *(str(data / p) for p in paths), "--format", "csv"]) == 0
    for r in csv.DictReader(io.StringIO(capsys.readouterr().out)):
        path = str(Path(r["path"]).relative_to(data))
        assert {c: float(r[c]) for c in CLASSES} == pytest.approx(expected[path], abs=1e-5)
    # ONNX: the export's own check runs onnxruntime against PyTorch on real images (the bank travels as constants)
    if importlib.util.find_spec("onnxruntime"):
        assert cli(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--check", str(data / "benign")]) == 0
        assert "onnxruntime matches PyTorch" in capsys.readouterr().out

    # scikit-learn on the training images' normalised features (computed here by the saved backbone)
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert model.config.head == "knn" and model.config.knn_k == knn["k"]
    train = manifest(out, "train")
    bank = features(model, processor, [data / r["path"] for r in train])
    saved = model.knn_bank.numpy()
    gap = np.abs(saved[:, None] - bank[None]).max(-1)
    assert gap.min(1).max() < 1e-5 and len(saved) == len(bank)  # the saved bank: the training features
    y = np.array([CLASSES.index(r["label"]) for r in train])
    sk = KNeighborsClassifier(n_neighbors=knn["k"], metric="cosine", algorithm="brute").fit(bank, y)
    paths = list(rows)
    probs = sk.predict_proba(features(model, processor, [data / p for p in paths]))
    for path, p in zip(paths, probs):
        assert expected[path] == pytest.approx(dict(zip(CLASSES, p)), abs=1e-6), path


def test_knn_fixed_k_euclidean_distance_vote_equals_scikit_learn(tmp_path, tiny_vit):
    from sklearn.neighbors import KNeighborsClassifier
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_medtl.models import register_auto_classes

    register_auto_classes()
    data = non_square_folder(tmp_path / "data", n=20)
    recipe = tiny_recipe(tmp_path, tiny_vit, data, image_size=24, n_bootstrap=0, dedupe=False, augment=False,
                         finetune_strategy="knn", knn_k=3, knn_metric="euclidean", knn_weights="distance")
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"
    knn = json.loads((out / "metrics.json").read_text())["knn"]
    assert (knn["k"], knn["metric"], knn["weights"]) == (3, "euclidean", "distance")
    assert list(knn["candidates"]) == ["euclidean"] and list(knn["candidates"]["euclidean"]) == ["3"]
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    train = manifest(out, "train")
    y = np.array([CLASSES.index(r["label"]) for r in train])
    sk = KNeighborsClassifier(n_neighbors=3, metric="euclidean", weights="distance", algorithm="brute")
    sk.fit(features(model, processor, [data / r["path"] for r in train]), y)
    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    probs = sk.predict_proba(features(model, processor, [data / r["path"] for r in rows]))
    for r, p in zip(rows, probs):
        assert {c: float(r[f"p_{c}"]) for c in CLASSES} == pytest.approx(dict(zip(CLASSES, p)), abs=1e-5), r["path"]


def test_knn_metric_null_chooses_among_both(tmp_path, tiny_vit, image_folder):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, image_size=24, n_bootstrap=0, augment=False,
                         finetune_strategy="knn", knn_metric=None)
    assert cli(["finetune", str(recipe)]) == 0
    knn = json.loads((tmp_path / "run" / "metrics.json").read_text())["knn"]
    assert set(knn["candidates"]) == {"cosine", "euclidean"}
    assert knn["validation_accuracy"] == max(v for m in knn["candidates"].values() for v in m.values())


@pytest.mark.parametrize("values, message", [
    ({"finetune_strategy": "knn", "augment": True}, "'augment' must be false with finetune_strategy 'knn'"),
    ({"finetune_strategy": "knn", "augment": False, "knn_k": 0}, "'knn_k' must be at least 1"),
    ({"finetune_strategy": "linear_probe", "knn_k": 5}, "'knn_k' applies to finetune_strategy 'knn'"),
    ({"finetune_strategy": "full", "knn_metric": "euclidean"}, "'knn_metric' applies to finetune_strategy 'knn'"),
    ({"finetune_strategy": "knn", "augment": False, "data_dir": None, "multilabel_csv": "labels.csv"},
     "'multilabel_csv': finetune_strategy 'knn' needs one class per image"),
    *[({"finetune_strategy": "knn", "augment": False, key: value},
       f"'{key}' does nothing with finetune_strategy 'knn'")
      for key, value in (("ema_decay", 0.99), ("swa_epochs", 3), ("time_budget_minutes", 5))],
    ({"finetune_strategy": "full", "min_train_steps": 10**12}, "'min_train_steps' must be 1..1,000,000"),
])
def test_bad_knn_inputs_are_one_line_before_any_work(tmp_path, image_folder, tiny_vit, capsys, values, message):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, image_size=24, **values)
    assert cli(["finetune", str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_knn_without_the_feature_cache_gives_the_same_run(tmp_path, tiny_vit, image_folder):
    """cache_features false: the features are computed in the run, not stored; the choice and scores are the same."""
    got = {}
    for cache in (True, False):
        recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, image_size=24, n_bootstrap=0, augment=False,
                             finetune_strategy="knn", cache_features=cache, output_dir=str(tmp_path / f"run{cache}"))
        assert cli(["finetune", str(recipe)]) == 0
        m = json.loads((tmp_path / f"run{cache}" / "metrics.json").read_text())
        got[cache] = (m["knn"], m["test"]["accuracy"], m["cached_features"])
    assert got[True][:2] == got[False][:2] and (got[True][2], got[False][2]) == (True, False)


def test_a_config_saved_before_the_knn_keys_builds_its_linear_head():
    from transformers import ViTConfig

    from hf_medtl.models import MedtlClassifierConfig, MedtlForImageClassification

    backbone = ViTConfig(image_size=24, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64).to_dict()
    old = {"backbone_config": backbone, "head": "linear", "num_labels": 3}  # no knn_* keys, as saved before them
    model = MedtlForImageClassification(MedtlClassifierConfig(**old))
    assert model.classifier.out_features == 3 and not hasattr(model, "knn_bank")
    assert model(pixel_values=torch.zeros(1, 3, 24, 24)).logits.shape == (1, 3)


def test_knn_on_a_backbone_with_a_nan_buffer_is_one_line(tmp_path, image_folder, tiny_timm, capsys):
    """k-NN has no loss for the divergence guard to watch: one NaN BatchNorm buffer made every feature NaN and every
    image one class at 1.000000 (exit 0). Now: one line naming the backbone, nothing saved."""
    import torch
    from transformers import AutoModelForImageClassification

    broken = tmp_path / "broken"
    model = AutoModelForImageClassification.from_pretrained(tiny_timm)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("nan")
    model.save_pretrained(broken)
    recipe = tiny_recipe(tmp_path, broken, image_folder, image_size=32, finetune_strategy="knn", augment=False)
    assert cli(["finetune", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "non-finite features (NaN/Inf)" in line and str(broken) in line
    assert not (tmp_path / "run" / "metrics.json").exists()
