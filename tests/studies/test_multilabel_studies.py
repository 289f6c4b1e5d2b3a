"""The studies on multi-label data: cv and search work (per-finding scores, out-of-fold predictions in the
multi-label form, multi-label trial models); the imbalance study (single-label by nature) and the robustness
study refuse in one line before any work."""
import csv
import json

import numpy as np
import pytest

from hf_medtl.cli import main
from tests.conftest import errors, tiny_recipe
from tests.data.test_multilabel import FINDINGS, make_multilabel

FAST = ["--num_train_epochs", "1", "--n_bootstrap", "0"]


def _recipe(root, model, **extra):
    csv_file = make_multilabel(root / "cxr", n=30)
    return tiny_recipe(root, model, root, data_dir=None, multilabel_csv=str(csv_file), image_size=24, augment=False,
                       val_ratio=0.2, test_ratio=0.2, **extra)


@pytest.fixture(scope="module")
def ml_cv(tmp_path_factory, tiny_timm):
    root = tmp_path_factory.mktemp("ml_cv")
    recipe = _recipe(root, tiny_timm, output_dir=str(root / "cv"))
    assert main(["cv", str(recipe), "--folds", "2", *FAST]) == 0
    return root / "cv"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cv_on_multilabel_data_pools_the_folds_validation_predictions(ml_cv):
    summary = json.loads((ml_cv / "summary.json").read_text())
    folds = [_rows(ml_cv / f"fold-{k}" / "predictions_validation.csv") for k in range(2)]
    oof = _rows(ml_cv / "predictions_out_of_fold_seed-1.csv")
    # The multi-label form, every pool image exactly once, each with the probabilities of the fold that held it out.
    assert list(oof[0]) == ["path", *[f"true_{f}" for f in FINDINGS], *[f"prob_{f}" for f in FINDINGS]]
    assert [r["path"] for r in oof] == [r["path"] for fold in folds for r in fold]
    assert oof == [r for fold in folds for r in fold]
    manifest = _rows(ml_cv / "fold-0" / "split_manifest.csv")
    pool = sorted(r["path"] for r in manifest if r["split"] in ("train", "validation"))
    assert sorted(r["path"] for r in oof) == pool and summary["out_of_fold"]["1"]["n"] == len(pool)
    # Scored per finding: the pooled accuracy is the mean per-label accuracy at 0.5 of those rows.
    truth = np.array([[int(r[f"true_{f}"]) for f in FINDINGS] for r in oof])
    probs = np.array([[float(r[f"prob_{f}"]) for f in FINDINGS] for r in oof])
    assert summary["out_of_fold"]["1"]["accuracy"] == pytest.approx(((probs >= 0.5) == truth).mean(), abs=1e-5)
    tests = [json.loads((ml_cv / f"fold-{k}" / "metrics.json").read_text())["test"] for k in range(2)]
    assert summary["test"]["roc_auc"]["n"] == 2 and tests[0]["label_names"] == list(FINDINGS)
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(np.mean([t["accuracy"] for t in tests]))


def test_robustness_study_refuses_a_multilabel_model_before_any_work(ml_cv, tmp_path, capsys):
    data = ml_cv.parent / "cxr" / "labels.csv"
    out = tmp_path / "rob"
    assert main(["study", "robustness", str(ml_cv / "fold-0"), str(data), "--output_dir", str(out),
                 "--perturbations", "blur", "--severities", "0,1"]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "multi-label" in lines[0] and "robustness" in lines[0] and "csv" not in lines[0].lower()
    assert not out.exists()


def test_imbalance_study_refuses_multilabel_data_before_any_training(tmp_path, tiny_timm, capsys, monkeypatch):
    from hf_medtl.studies import runs

    def no_training(*a, **k):
        raise AssertionError("a level was trained before the refusal")

    monkeypatch.setattr(runs, "run", no_training)
    recipe = _recipe(tmp_path, tiny_timm, output_dir=str(tmp_path / "imb"))
    assert main(["study", "imbalance", str(recipe), "--levels", "none,1:4", *FAST]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "multi-label" in lines[0] and "imbalance" in lines[0]
    assert not (tmp_path / "imb").exists()


def test_search_on_multilabel_data_trains_multilabel_trials(tmp_path, tiny_timm):
    """The search builds its data and model as a run does: on multi-label data each trial's model has a
    multi-label head (a 0/1 row per image is its target) and is scored by the mean per-finding accuracy."""
    import optuna

    from hf_medtl.models import is_multi_label
    from hf_medtl import stages

    built = []
    new_model = stages.new_model

    def spy(recipe, splits, model_args=None):
        model, processor = new_model(recipe, splits, model_args)
        built.append(is_multi_label(model.config))
        return model, processor

    space = {"learning_rate": {"choices": [0.001, 0.01]}}
    out = tmp_path / "search"
    recipe = _recipe(tmp_path, tiny_timm, output_dir=str(out), search_space=space)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(stages, "new_model", spy)
        assert main(["study", "search", str(recipe), "--trials", "2", *FAST]) == 0
    assert built and all(built)  # the Trainer's model and every trial's
    summary = json.loads((out / "summary.json").read_text())
    study = optuna.load_study(study_name=summary["study_name"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(summary["storage"])))
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert summary["trials"] == 2 and len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert summary["best_value"] == max(values)
    assert len(_rows(out / "split_manifest.csv")) == 30  # the split the trials trained on, written down
