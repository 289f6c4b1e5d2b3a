"""End to end through the public entry point: recipe -> finetune -> every output -> pipeline."""
import csv
import json
from pathlib import Path
import numpy as np

import pytest

from hf_medtl.finetune import main, run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import assert_pipeline_serves, errors, saved_classifier, serve_with_remote_code, make_image_folder, tiny_recipe, write_recipe
from hf_medtl.inference import core
from hf_medtl.cli import main as cli_main


@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_timm"])
def test_finetune_writes_every_output_and_pipeline_predicts(tmp_path, image_folder, backbone, request):
    from transformers import pipeline

    model_dir = request.getfixturevalue(backbone)
    recipe = tiny_recipe(tmp_path, model_dir, image_folder, image_size=24 if backbone == "tiny_timm" else None)
    assert main([str(recipe), "--threshold", "0.5"]) == 0
    out = tmp_path / "run"
    for name in ("plots/training_curves.png", "plots/confusion_matrix_test.png", "plots/roc_reliability_test.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    config = json.loads((out / "config.json").read_text())
    names = config.get("label_names") or list(config["id2label"].values())  # TimmWrapper saves label_names
    assert sorted(names) == ["benign", "malignant", "normal"]
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert json.loads((out / "data_report.json").read_text())["split_counts"] == metrics["split_counts"]
    with open(out / "split_manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    with open(out / "predictions_test.csv") as f:
        predicted = list(csv.DictReader(f))
    assert len(manifest) == 36 and sorted(r["path"] for r in manifest if r["split"] == "test") == sorted(
        r["path"] for r in predicted)
    assert sum(r["label"] == r["predicted"] for r in predicted) / 3 == pytest.approx(metrics["test"]["accuracy"])
    assert f"{100 * metrics['test']['accuracy']:.2f}%" in (out / "README.md").read_text()
    assert "Confusion matrix" in (out / "report.md").read_text()
    test = metrics["test"]
    assert test["n"] == 3 and len(test["confusion_matrix"]) == 3 and set(test["label_names"]) == {"benign", "malignant", "normal"}
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= test[key] <= 1.0 and test["ci"][key][0] <= test[key] <= test["ci"][key][1]
    assert len(test["per_class"]["f1"]) == 3 and metrics["split_counts"] == {"train": 30, "validation": 3, "test": 3}
    history = json.loads((out / "history.json").read_text())
    assert 1 <= len(history) == metrics["epochs_run"] <= 3
    assert {"train_accuracy", "val_loss", "lr", "monitor", "reduced", "stop", "lr_scale"} <= set(history[0])
    assert json.loads((out / "recipe.json").read_text())["threshold"] == 0.5  # the override, resolved

    classifier = pipeline("image-classification", model=str(out))
    image = image_folder / "malignant" / "malignant_000.png"
    preds = classifier(str(image), top_k=3)
    assert {p["label"] for p in preds} == {"benign", "malignant", "normal"}
    assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)


def test_same_recipe_and_seed_give_same_split_and_metrics(tmp_path, image_folder, tiny_vit):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2)
    first = run(load_recipe(recipe))
    manifest = (tmp_path / "run" / "split_manifest.csv").read_text()
    second = run(load_recipe(recipe, ["--output_dir", str(tmp_path / "run2")]))
    assert (tmp_path / "run2" / "split_manifest.csv").read_text() == manifest
    assert first["test"] == second["test"] and first["validation"] == second["validation"]


def test_trained_model_learns_the_generated_task(tmp_path, image_folder, tiny_timm):
    # Seed 000's settings (8 steps at a constant lr 1e-2), under which this random-init tiny CNN has learnt the task
    # in every run; other schedules sometimes leave its BatchNorm running statistics flattening every evaluation
    # image to one output (seen with the default recipe's warm-up + cosine: a property of the toy, which the
    # pretrained backbones of the README's runs do not show).
    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=8, image_size=24,
                                          adaptive_lr=False, augment=False, learning_rate=1e-2, preset="paper")))
    assert metrics["validation"]["accuracy"] + metrics["test"]["accuracy"] >= 1.3  # chance is 0.33 each


def test_missing_checkpoint_offline_is_one_clear_line(tmp_path, image_folder, capsys):
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="nobody/no-such-model", data_dir=str(image_folder))
    assert main([str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "nobody/no-such-model" in err[0] and "HF_HUB_OFFLINE=1" in err[0] and "download" in err[0]
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tmp_path / "nothing"), data_dir=str(image_folder))
    assert main([str(recipe)]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_bad_data_is_one_clear_line(tmp_path, tiny_vit, capsys):
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), data_dir=str(tmp_path / "absent"))
    assert main([str(recipe)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "absent" in err[0] and "folder not found" in err[0]


def test_linear_probe_trains_only_the_head(tmp_path, image_folder, tiny_timm):
    from transformers import AutoModelForImageClassification

    run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=1, finetune_strategy="linear_probe",
                                image_size=24)))
    before = AutoModelForImageClassification.from_pretrained(tiny_timm).state_dict()
    after = saved_classifier(tmp_path / "run").state_dict()
    changed = {k for k in after if "classifier" not in k and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
               and not after[k].equal(before[k])}
    assert changed == set()
    assert not after["timm_model.classifier.weight"].shape == before["timm_model.classifier.weight"].shape


def test_model_card_and_offline_push_lose_nothing(tmp_path, image_folder, tiny_vit, capsys, monkeypatch):
    from hf_medtl import hub

    monkeypatch.setattr(hub, "preflight", lambda args: None)  # as if the Hub answered, then went away
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, push_to_hub=True,
                         hub_model_id="someone/tiny-medtl", hub_token="hf_do_not_write_me")
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: push_to_hub to 'someone/tiny-medtl' failed") and "outputs are complete" in err
    out = tmp_path / "run"
    card = (out / "README.md").read_text()
    assert str(tiny_vit) not in card and "| Accuracy |" in card and "benign, malignant, normal" in card
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 3
    assert not any(b"hf_do_not_write_me" in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_failed_rerun_never_leaves_a_self_contradicting_run(tmp_path, image_folder, tiny_vit, capsys):
    from hf_medtl.cli import main as cli

    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1)
    assert main([str(recipe)]) == 0
    out = tmp_path / "run"
    finished = {name: (out / name).read_bytes() for name in ("metrics.json", "model.safetensors",
                                                             "split_manifest.csv", "data_report.json")}
    (image_folder / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # the data changed
    assert main([str(recipe)]) == 2
    assert len(errors(capsys)) == 1
    # The finished run is whole and agrees with itself; the failed attempt's data report is beside it, staged.
    assert {name: (out / name).read_bytes() for name in finished} == finished
    assert "broken.png" in (out / ".staging" / "data_report.json").read_text()
    assert cli(["check-data", str(recipe), "--on_bad_image", "skip"]) == 0
    assert {name: (out / name).read_bytes() for name in finished} == finished
    assert "broken.png" in (out / ".staging" / "split_manifest.csv").read_text()


def test_a_dropped_one_image_training_batch_never_drops_evaluation_images(tmp_path, tiny_timm, hf_medtl_log):
    """9 training images in batches of 8 leave a last batch of one (BatchNorm): it is dropped from training,
    while validation and test are scored on every image (the Trainer would drop their last batch too)."""
    import csv

    data = make_image_folder(tmp_path / "data", per_class=(5, 5, 5))
    recipe = tiny_recipe(tmp_path, tiny_timm, data, num_train_epochs=1, n_bootstrap=0, dedupe=False, val_ratio=0.2,
                         test_ratio=0.2)
    metrics = run(load_recipe(recipe))
    assert metrics["split_counts"]["train"] == 9
    assert "last training batch would hold one image" in hf_medtl_log.text
    assert metrics["test"]["n"] == metrics["split_counts"]["test"] == 3
    with open(tmp_path / "run" / "predictions_validation.csv") as f:
        assert len(list(csv.DictReader(f))) == metrics["split_counts"]["validation"] == 3


def test_tta_inside_is_an_opt_in_served_by_plain_pipeline_with_remote_code(tmp_path, image_folder, tiny_vit, capsys):
    """`tta_inside: true`: the views inside the saved model's forward (hf_medtl's class, trust_remote_code), so that
    pipeline() serves the flip-averaged probabilities the run scored; Grad-CAM of it equals the maps of the views
    applied around the bare model; fine-tuning from it starts from its one member."""
    from hf_medtl.data.decode import decode
    from hf_medtl.inference.explain import image_cams
    from hf_medtl.models import load_saved_model

    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=2, image_size=24,
                                          tta="hflip", tta_inside=True, n_bootstrap=0, augment=False)))
    out = tmp_path / "run"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hf_medtl_ensemble" and config["views"] == ["identity", "hflip"]
    assert config["auto_map"]["AutoModelForImageClassification"].endswith("MedtlEnsembleForImageClassification")
    assert metrics["model_class"].startswith("MedtlEnsemble") and "model_alone" not in metrics
    assert not (out / "predictions_test_no_tta.csv").exists()
    assert_pipeline_serves(out, image_folder, atol=1e-5, what="flip TTA inside the model")
    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    capsys.readouterr()
    assert cli_main(["predict", str(out), str(image_folder / rows[0]["path"]), "--format", "json"]) == 0
    [served] = json.loads(capsys.readouterr().out)
    assert served["tta"] == ["identity", "hflip"]
    assert all(abs(served["probabilities"][c] - float(rows[0][f"p_{c}"])) < 1e-5 for c in served["probabilities"])
    card = (out / "README.md").read_text()
    assert "trust_remote_code=True" in card and "computed inside the model's forward" in card
    model, processor, _ = load_saved_model(out)
    images = [decode(image_folder / r["path"]) for r in rows[:2]]
    inside = image_cams(model, processor, images, [0, 1])
    outside = image_cams(core.views_outside(load_saved_model(out)[0]), processor, images, [0, 1],
                         views=("identity", "hflip"))
    for a, b in zip(inside, outside):
        np.testing.assert_allclose(a, b, atol=1e-5)
    (tmp_path / "again").mkdir()
    again = run(load_recipe(tiny_recipe(tmp_path / "again", out, image_folder, num_train_epochs=1, image_size=24,
                                        n_bootstrap=0, tta="none")))
    assert again["model_class"] == "ViTForImageClassification"


def test_theta_star_tta_and_label_smoothing_through_finetune(tmp_path, image_folder, tiny_vit, capsys):
    from hf_medtl.models import load_saved_model

    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=3, image_size=24,
                                          theta_star="val_accuracy", tta="hflip", label_smoothing_factor=0.1,
                                          learning_rate=1e-2, augment=False, preset="paper")))
    out = tmp_path / "run"
    history = json.loads((out / "history.json").read_text())
    best = min(history, key=lambda h: (-h["val_accuracy"], h["val_loss"]))
    assert metrics["best_epoch"] == best["epoch"] and [h["epoch"] for h in history if h["save_best"]][-1] == best["epoch"]
    assert all(h["train_accuracy"] is not None for h in history)  # counted although the labels skip the forward
    recipe = json.loads((out / "recipe.json").read_text())
    assert (recipe["theta_star"], recipe["tta"], recipe["label_smoothing_factor"]) == ("val_accuracy", "hflip", 0.1)
    # The test predictions are the flip-TTA ones: the saved model, predicted with and without the mirror.
    with open(out / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    model, processor, classes = load_saved_model(out)
    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform

    transform = eval_transform(processor)
    items = [{"pixel_values": transform(decode(image_folder / r["path"])), "labels": 0} for r in rows]
    trainer = core.inference_trainer(model)
    import numpy as np

    # The model is saved as its backbone's own class (no remote code); config.json records the views that
    # hf_medtl's serving averages over around it.
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["tta_views"] == ["identity", "hflip"] and "auto_map" not in config
    tta, _ = core.dataset_probabilities(trainer, items, tta="hflip")
    plain, _ = core.dataset_probabilities(trainer, items)
    saved = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    with open(out / "predictions_test_no_tta.csv") as f:
        alone = np.array([[float(r[f"p_{c}"]) for c in classes] for r in csv.DictReader(f)])
    assert np.allclose(tta, saved, atol=2e-6) and np.allclose(plain, alone, atol=2e-6)
    assert not np.allclose(plain, saved, atol=2e-6)
    # Both scores reported: the headline with TTA, the model alone under "model_alone" (what pipeline() serves).
    assert metrics["model_alone"]["test"]["n"] == metrics["test"]["n"] and "accuracy" in metrics["model_alone"]["test"]
    assert json.loads((out / "metrics.json").read_text())["model_alone"] == metrics["model_alone"]
    # Plain pipeline(), in a process that never imports hf_medtl and trusts no remote code, serves the model alone:
    # exactly `hf-medtl predict --no_tta`; `hf-medtl predict` (the views around the model) serves what was scored.
    assert_pipeline_serves(out, image_folder, atol=1e-5, what="the model alone")
    from hf_medtl.cli import main as cli

    files = [str(image_folder / r["path"]) for r in rows]
    for flag, expected in (([], saved), (["--no_tta"], plain)):
        capsys.readouterr()
        assert cli(["predict", str(out), *files, "--format", "json", *flag]) == 0
        served = json.loads(capsys.readouterr().out)
        assert [p["tta"] for p in served] == [["identity", "hflip"] if not flag else ["identity"]] * len(rows)
        probs = np.array([[p["probabilities"][c] for c in classes] for p in served])
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        if flag:
            fresh = serve_with_remote_code(out, Path(files[0]), tmp_path, trust_remote_code=False)
            np.testing.assert_allclose([fresh[c] for c in classes], probs[0], atol=1e-4)
    import onnxruntime as ort

    # The ONNX export bakes the run's views into the graph: it serves the TTA probabilities, and says so.
    assert cli(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--check", str(image_folder)]) == 0
    pixels = np.stack([it["pixel_values"].numpy() for it in items])
    onnx = core.probabilities(ort.InferenceSession(str(tmp_path / "m.onnx")).run(["logits"], {"pixel_values": pixels})[0])
    np.testing.assert_allclose(onnx, saved, atol=1e-4)
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["hf_medtl.preprocessing"])["views_inside"] == ["identity", "hflip"]  # callers add no flip
    # `hf-medtl evaluate` on the images scores them as the run did (with the mirror): its probabilities for the
    # test images are the run's own.
    assert cli(["evaluate", str(out), str(image_folder), "--output_dir", str(tmp_path / "ev"), "--n_bootstrap", "0"]) == 0
    with open(tmp_path / "ev" / "predictions.csv") as f:
        scored = {Path(r["path"]).name: [float(r[f"p_{c}"]) for c in classes] for r in csv.DictReader(f)}
    np.testing.assert_allclose([scored[Path(r["path"]).name] for r in rows], saved, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "mean of the probabilities of the image and of its horizontal mirror" in card
    assert "The model alone" in card and "hf_medtl.predict(" in card and "trust_remote_code" not in card
    assert metrics["model_class"] == "ViTForImageClassification"
    # A run saved this way is a backbone to fine-tune from; its tta_views do not follow into the new run.
    (tmp_path / "again").mkdir()
    again = run(load_recipe(tiny_recipe(tmp_path / "again", out, image_folder, num_train_epochs=1, image_size=24,
                                        n_bootstrap=0, tta="none")))
    assert again["test"]["n"] == metrics["test"]["n"]
    assert json.loads((tmp_path / "again" / "run" / "config.json").read_text())["model_type"] == "vit"
    assert "tta_views" not in json.loads((tmp_path / "again" / "run" / "config.json").read_text())  # its own: none
    assert again["model_class"] == "ViTForImageClassification" and "model_alone" not in again
    # A plain transformers class is served by plain pipeline(): the card says no trust_remote_code for it.
    assert "trust_remote_code" not in (tmp_path / "again" / "run" / "README.md").read_text()


PHASES = ("startup", "data", "image_cache", "model_load", "train_setup", "first_epoch", "later_epochs", "scoring",
          "report", "card", "save")


def test_timings_account_for_the_whole_wall_of_a_cli_run(tmp_path, image_folder, tiny_timm):
    """`hf-medtl finetune` as its own process: metrics.json's timings name every phase, add up to their total, leave
    at most 10% unclaimed, and that total is the process's wall (from its start, imports included) to within 10%;
    the console's last line is the same phases in one row."""
    import sys
    import time

    from tests.conftest import run_cmd

    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=2, image_size=24, n_bootstrap=50)
    start = time.time()
    proc = run_cmd([sys.executable, "-m", "hf_medtl.cli", "finetune", str(recipe)])
    wall = time.time() - start
    timings = json.loads((tmp_path / "run" / "metrics.json").read_text())["timings"]
    assert set(PHASES) <= set(timings) and all(timings[k] > 0 for k in PHASES), timings
    assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(timings["total"], abs=0.02 * len(timings))
    assert timings["other"] <= 0.1 * timings["total"], timings
    # The process's wall beyond metrics.json's total: committing the outputs, the last lines and the interpreter's
    # exit (a second or two on busy shared cores, a fixed cost that a 15-s test run feels more than a real one).
    assert timings["total"] <= wall and wall - timings["total"] <= max(0.1 * wall, 3.0), (timings["total"], wall)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("timings: start-up ") and " | first epoch " in last and " | later epochs " in last, last
    assert "| total " in last


def test_timings_of_a_run_inside_a_program_start_from_the_run(tmp_path, image_folder, tiny_timm):
    """run() called by a program (a study, a notebook): no start-up of the host process, the epochs split as the
    Trainer reached them (one epoch: no later_epochs), the phases still account for the run's wall."""
    import time

    from hf_medtl import timings

    start = time.perf_counter()
    metrics = run(load_recipe(tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=1, image_size=24,
                                          n_bootstrap=0)))
    wall = time.perf_counter() - start
    t = metrics["timings"]
    assert "startup" in t and t["startup"] < 0.5 * wall and "later_epochs" not in t and t["first_epoch"] > 0, t
    assert t["other"] <= 0.1 * t["total"] and t["total"] <= wall, (t, wall)
    assert timings.active() is None  # the run's clock is gone with the run
