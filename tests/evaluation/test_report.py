"""report.json / report.md / plots: every number, parseable, and what the plots show."""
import csv
import json

import numpy as np
import pytest

from hf_medtl.evaluation import report
from hf_medtl.config.arguments import EvaluationArguments
from hf_medtl.evaluation.scoring import score

CLASSES = ["glioma", "meningioma", "notumor"]


def predictions(n=90, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


def test_report_holds_every_number_and_the_plots(tmp_path):
    probs, labels = predictions()
    metrics = score(probs, labels, CLASSES, EvaluationArguments(n_bootstrap=200))
    history = [{"epoch": e, "train_accuracy": 0.5 + e / 10, "train_loss": 1 / e, "val_accuracy": 0.6, "val_loss": 0.9,
                "lr": 1e-3, "monitor": "train_accuracy" if e < 3 else "val_loss", "save_best": e == 2,
                "reduced": e == 4, "stop": False} for e in range(1, 5)]
    report.write_report(tmp_path, "run: model", {"test": metrics}, {"test": (probs, labels)}, {"epochs_run": 4}, history)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["metrics"]["test"]["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    roc = data["curves"]["test"]["roc"]
    assert set(roc) == set(CLASSES) and all(r["fpr"][0] == 0 and r["tpr"][-1] == 1.0 for r in roc.values())
    assert sum(b["n"] for b in data["curves"]["test"]["reliability"]) == 90
    md = (tmp_path / "report.md").read_text()
    assert "95% CI (BCa bootstrap, 200)" in md and "| glioma | 30 |" in md and "| 4 |" in md
    for plot in data["plots"]:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / plot).stat().st_size > 5000
    assert {p.split("/")[-1] for p in data["plots"]} == {"training_curves.png", "confusion_matrix_test.png",
                                                          "roc_reliability_test.png"}


def test_predictions_csv_rows(tmp_path):
    probs, labels = predictions(6)
    report.write_predictions(tmp_path / "p.csv", [f"img{i}.png" for i in range(6)], labels, probs, CLASSES)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["label"] for r in rows] == [CLASSES[i] for i in labels]
    assert all(r["predicted"] == CLASSES[int(np.argmax([float(r[f"p_{c}"]) for c in CLASSES]))] for r in rows)
    assert sum(float(rows[0][f"p_{c}"]) for c in CLASSES) == pytest.approx(1, abs=1e-5)


def test_report_md_writes_the_summary_as_the_console_does(tmp_path):
    """No raw float (0.9739583333333334) and no Python list or dict in report.md."""
    import re

    from hf_medtl.evaluation.report import markdown

    summary = {"train_accuracy": 0.9739583333333334, "train_runtime_s": 1234.56789, "total_parameters": 3402410,
               "classes": ["glioma", "meningioma"], "split_counts": {"train": 192, "validation": 24, "test": 24},
               "trainable_parameters": [{"from_epoch": 1, "trainable_params": 1280}, {"from_epoch": 3, "trainable_params": 4000}],
               "cached_features": False}
    text = markdown("run", {}, summary)
    assert "- train accuracy: 0.9740" in text and "- train runtime s: 1,234.6" in text
    assert "- total parameters: 3,402,410" in text and "- classes: glioma, meningioma" in text
    assert "- split counts: train 192, validation 24, test 24" in text and "- cached features: no" in text
    assert "- trainable parameters: from epoch 1: 1,280; from epoch 3: 4,000" in text
    assert not re.search(r"\d\.\d{6,}|[\[\]{}]", text)
