"""Ensembles served as one model: `ensemble_seeds: N` and `hf-medtl cv --ensemble` save ONE model directory whose
forward averages the members' probabilities. Its predictions_test.csv is the mean of the members' own test
predictions; pipeline() (in process and, through remote code, where hf_medtl is not installed), `hf-medtl predict`,
`hf-medtl evaluate`, the app and the ONNX export give exactly those probabilities; the card and metrics name every
member with its own scores and the gain over the best one with a CI; a rerun trains nothing; bad input is one line."""
import csv
import io
import json

import numpy as np
import pytest
import torch

from hf_medtl.cli import main as cli
from tests.conftest import CLASSES, assert_pipeline_serves, errors, serve_with_remote_code, tiny_recipe
from tests.inference.test_serving import non_square_folder


def read_probs(path, classes=CLASSES) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        return {r["path"]: np.array([float(r[f"p_{c}"]) for c in classes]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def seed_ensemble(tmp_path_factory, tiny_vit):
    tmp = tmp_path_factory.mktemp("seed_ensemble")
    data = non_square_folder(tmp / "data", n=8)
    recipe = tiny_recipe(tmp, tiny_vit, data, num_train_epochs=2, image_size=24, n_bootstrap=100, dedupe=False,
                         ensemble_seeds=3, learning_rate=1e-2)
    assert cli(["finetune", str(recipe)]) == 0
    return tmp / "run", data, recipe


def test_the_saved_ensemble_averages_its_members_and_names_them(seed_ensemble):
    out, data, _ = seed_ensemble
    members = [out / "members" / f"seed-{s}" for s in (1, 2, 3)]
    assert all((m / "metrics.json").is_file() for m in members)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_medtl_ensemble" and len(config["members"]) == 3
    # Each member's run is a plain model with flip TTA served around it; the ensemble holds the 3 plain members
    # and serves the views inside its forward, over all of them (an ensemble needs hf_medtl's class anyway).
    assert config["views"] == ["identity", "hflip"] and {m["model_type"] for m in config["members"]} == {"vit"}
    assert json.loads((members[0] / "config.json").read_text())["tta_views"] == ["identity", "hflip"]
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("MedtlEnsembleForImageClassification")
    assert (out / "modeling_ensemble.py").is_file() and (out / "modeling_medtl.py").is_file()
    # the ensemble's test probabilities are the mean of its members' (each scored by its own run)
    ours = read_probs(out / "predictions_test.csv")
    theirs = [read_probs(m / "predictions_test.csv") for m in members]
    assert ours.keys() == theirs[0].keys() and len(ours) > 0
    for path, p in ours.items():
        assert np.abs(p - np.mean([t[path] for t in theirs], 0)).max() < 1e-5, path
    # its metrics and card: every member with its own test accuracy, and the gain over the best with a CI
    metrics = json.loads((out / "metrics.json").read_text())
    e = metrics["ensemble"]
    own = [json.loads((m / "metrics.json").read_text())["test"]["accuracy"] for m in members]
    assert [r["test"]["accuracy"] for r in e["members"]] == own and e["kind"] == "seeds"
    assert e["gain_over_best_member"]["b"] == max(own)
    assert e["gain_over_best_member"]["a"] == metrics["test"]["accuracy"]
    assert len(e["gain_over_best_member"]["ci"]) == 2 and e["mean_member_accuracy"] == pytest.approx(np.mean(own))
    card = (out / "README.md").read_text()
    assert "Ensemble of 3 models (seeds)" in card and all(f"| seed-{s} |" in card for s in (1, 2, 3))
    assert "Against its best member" in (out / "report.md").read_text()


def test_a_push_of_the_ensemble_sends_its_own_files_and_not_its_members_runs(seed_ensemble):
    from hf_medtl.hub.push import upload_files

    out, _, _ = seed_ensemble
    files = upload_files(out)
    assert {"config.json", "model.safetensors", "modeling_ensemble.py", "modeling_medtl.py", "README.md",
            "predictions_test.csv", "metrics.json"} <= set(files)
    assert not [f for f in files if f.startswith("members/")]


def test_every_way_of_serving_the_ensemble_gives_its_predictions(seed_ensemble, tmp_path, capsys):
    out, data, _ = seed_ensemble
    expected = read_probs(out / "predictions_test.csv")
    assert_pipeline_serves(out, data, atol=1e-5, what="ensemble")
    first = sorted(expected)[0]
    remote = serve_with_remote_code(out, data / first, tmp_path)  # a process without hf_medtl
    assert np.abs(np.array([remote[c] for c in CLASSES]) - expected[first]).max() < 1e-5

    files = [str(data / p) for p in sorted(expected)]
    assert cli(["predict", str(out), *files, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for row, path in zip(rows, sorted(expected)):
        assert np.abs(np.array([float(row[c]) for c in CLASSES]) - expected[path]).max() < 1e-5, path

    assert cli(["evaluate", str(out), str(data), "--output_dir", str(tmp_path / "ev"), "--n_bootstrap", "0"]) == 0
    with open(tmp_path / "ev" / "predictions.csv", newline="") as f:
        evaluated = {r["path"]: np.array([float(r[f"p_{c}"]) for c in CLASSES]) for r in csv.DictReader(f)}
    for path, p in expected.items():
        assert np.abs(evaluated[str(data / path)] - p).max() < 1e-5, path

    from hf_medtl.inference.app import build_app

    demo = build_app(out)
    classify = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "classify")
    shown, overlay = classify(str(data / first))
    assert np.abs(np.array([shown[c] for c in CLASSES]) - expected[first]).max() < 1e-5
    assert overlay.size[0] > 0 and np.asarray(overlay).std() > 0  # a Grad-CAM over every member's layer


def test_the_onnx_export_of_the_ensemble_gives_its_predictions(seed_ensemble, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.inference.core import probabilities
    from hf_medtl.models import load_saved_model

    out, data, _ = seed_ensemble
    expected = read_probs(out / "predictions_test.csv")
    onnx_path = tmp_path / "ensemble.onnx"
    assert cli(["export", str(out), "--onnx", str(onnx_path), "--check", str(data)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    _, processor, _ = load_saved_model(out)
    paths = sorted(expected)
    pixels = np.stack([eval_transform(processor)(decode(data / p)).numpy() for p in paths])
    served = probabilities(ort.InferenceSession(str(onnx_path)).run(["logits"], {"pixel_values": pixels})[0])
    assert np.abs(served - np.stack([expected[p] for p in paths])).max() < 1e-4


def test_a_rerun_trains_no_member_again(seed_ensemble, hf_medtl_log):
    out, _, recipe = seed_ensemble
    before = (out / "predictions_test.csv").read_text()
    hf_medtl_log.clear()
    assert cli(["finetune", str(recipe)]) == 0
    assert sum("finished earlier" in m for m in hf_medtl_log.messages) == 3
    assert not any("| " in m and m.strip()[:1].isdigit() for m in hf_medtl_log.messages)  # no epoch row
    assert (out / "predictions_test.csv").read_text() == before


def test_cv_ensemble_of_the_fold_models(tmp_path, tiny_timm, capsys):
    """Of TimmWrapper models (the converted EfficientNet-Lite's class), whose config saves its labels its own way."""
    data = non_square_folder(tmp_path / "data", n=8)
    recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=1, image_size=32, n_bootstrap=0, dedupe=False,
                         output_dir=str(tmp_path / "cv"))
    assert cli(["cv", str(recipe), "--folds", "2", "--ensemble"]) == 0
    assert "ensemble of 2: test accuracy" in capsys.readouterr().out
    out = tmp_path / "cv" / "ensemble"
    folds = [read_probs(tmp_path / "cv" / f"fold-{k}" / "predictions_test.csv") for k in (0, 1)]
    ours = read_probs(out / "predictions_test.csv")
    assert ours.keys() == folds[0].keys()
    for path, p in ours.items():
        assert np.abs(p - (folds[0][path] + folds[1][path]) / 2).max() < 1e-5
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["ensemble"]["test"]["accuracy"] == metrics["test"]["accuracy"] and "validation" not in metrics
    assert [r["name"] for r in metrics["ensemble"]["members"]] == ["s1/f0", "s1/f1"]
    assert "Ensemble of the 2 models" in (tmp_path / "cv" / "report.md").read_text()
    assert_pipeline_serves(out, data, atol=1e-5, what="cv ensemble")
    # compare sets it beside a member, paired on the shared test images
    assert cli(["compare", str(out), str(tmp_path / "cv" / "fold-0"), "--output_dir", str(tmp_path / "cmp")]) == 0
    assert "McNemar" in (tmp_path / "cmp" / "comparison.md").read_text()
    pytest.importorskip("onnxruntime")
    assert cli(["export", str(out), "--onnx", str(tmp_path / "cv.onnx"), "--check", str(data)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out


def test_members_that_serve_differently_cannot_be_joined(tmp_path, tiny_vit, tiny_resnet):
    from hf_medtl.models import ModelError
    from hf_medtl.models.ensemble import combine

    with pytest.raises(ModelError, match="image processor differs|classes differ"):
        combine([tiny_vit, tiny_resnet], ["a", "b"])
    with pytest.raises(ModelError, match="at least 2"):
        combine([tiny_vit], ["a"])


def test_average_logits_give_the_mean_probabilities_back():
    from hf_medtl.models.modeling_ensemble import average_logits

    members = [torch.randn(5, 3) * 30 for _ in range(4)]  # confident members: log-space keeps them finite
    mean = torch.stack([m.softmax(-1) for m in members]).mean(0)
    assert torch.allclose(average_logits(members, False).softmax(-1), mean, atol=1e-6)
    mean = torch.stack([m.sigmoid() for m in members]).mean(0)
    assert torch.allclose(average_logits(members, True).sigmoid(), mean, atol=1e-6)


@pytest.mark.parametrize("extra,message", [
    ({"ensemble_seeds": 0}, "'ensemble_seeds' must be at least 1"),
    ({"ensemble_seeds": 2, "cv_folds": 3}, "hf-medtl cv RECIPE --ensemble"),
    ({"ensemble_seeds": 2, "finetune_strategy": "knn", "augment": False}, "every member would be the same model"),
])
def test_bad_ensemble_keys_are_one_line_before_training(tmp_path, image_folder, tiny_vit, capsys, extra, message):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, **extra)
    assert cli(["finetune", str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_cv_ensemble_of_one_model_is_one_line(tmp_path, image_folder, tiny_vit, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder)
    assert cli(["cv", str(recipe), "--folds", "1", "--ensemble"]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "--ensemble needs at least 2 models" in err[0], err


def test_a_multi_label_seed_ensemble_averages_sigmoids_and_pipeline_serves_them(tmp_path, tiny_vit):
    from transformers import pipeline

    from tests.data.test_multilabel import FINDINGS, make_multilabel

    csv_file = make_multilabel(tmp_path / "cxr", n=40)
    recipe = tiny_recipe(tmp_path, tiny_vit, tmp_path, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         num_train_epochs=1, val_ratio=0.2, test_ratio=0.2, n_bootstrap=0, ensemble_seeds=2,
                         label_smoothing_factor=0.0)
    assert cli(["finetune", str(recipe)]) == 0
    out = tmp_path / "run"

    def probs(path):
        with open(path, newline="") as f:
            return {r["path"]: np.array([float(r[f"prob_{c}"]) for c in FINDINGS]) for r in csv.DictReader(f)}

    ours, members = probs(out / "predictions_test.csv"), [probs(out / "members" / f"seed-{s}" / "predictions_test.csv")
                                                          for s in (1, 2)]
    assert ours and all(np.abs(p - (members[0][k] + members[1][k]) / 2).max() < 1e-5 for k, p in ours.items())
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    classifier = pipeline("image-classification", model=str(out), function_to_apply="sigmoid", top_k=None)
    for path, p in ours.items():
        served = {x["label"]: x["score"] for x in classifier(str(csv_file.parent / path))}
        assert np.abs(np.array([served[c] for c in FINDINGS]) - p).max() < 1e-5, path


@pytest.mark.slow
def test_a_seed_ensemble_killed_in_its_second_member_and_resumed_equals_an_uninterrupted_one(tmp_path, image_folder,
                                                                                              tiny_timm, hf_medtl_log):
    """SIGKILL after the second member's first checkpoint; `resume_from_checkpoint last` reuses the finished member,
    resumes the killed one, and saves the ensemble an uninterrupted run saves."""
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.finetune import run
    from tests.training.test_resume import launch_and_kill_after_first_checkpoint

    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=3, image_size=24, save_strategy="epoch",
                         learning_rate=1e-2, n_bootstrap=0, ensemble_seeds=2)
    straight = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "straight")]))
    killed = tmp_path / "run"
    assert launch_and_kill_after_first_checkpoint(recipe, killed / "members" / "seed-2") == -9
    assert (killed / "members" / "seed-1" / "metrics.json").is_file() and not (killed / "metrics.json").exists()
    hf_medtl_log.clear()
    resumed = run(load_recipe(recipe, ["--resume_from_checkpoint", "last"]))
    assert sum("finished earlier" in m for m in hf_medtl_log.messages) == 1
    assert resumed["test"]["accuracy"] == straight["test"]["accuracy"]
    ours, theirs = read_probs(killed / "predictions_test.csv"), read_probs(tmp_path / "straight" / "predictions_test.csv")
    assert ours.keys() == theirs.keys() and all(np.abs(ours[k] - theirs[k]).max() < 1e-6 for k in ours)


def test_an_ensemble_is_no_backbone_to_fine_tune_from(seed_ensemble, tmp_path, capsys):
    out, data, _ = seed_ensemble
    recipe = tiny_recipe(tmp_path, out, data, num_train_epochs=1, image_size=24, n_bootstrap=0, dedupe=False)
    assert cli(["finetune", str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "an ensemble of 3 models" in lines[0] and "members/" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
