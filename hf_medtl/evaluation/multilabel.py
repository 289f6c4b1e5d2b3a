"""Multi-label scoring and reporting: per-label and macro ROC-AUC, per-label F1 at probability 0.5 and at the
threshold chosen on validation (Youden's J = sensitivity + specificity - 1, per label), mean per-label accuracy;
report.json / report.md / predictions_test.csv / model card for a multi-label run."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from hf_medtl.metrics.medical_classification.medical_classification import multilabel_metrics
from hf_medtl.outputs import atomic_write_text


def youden_thresholds(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per label, the probability threshold that maximises sensitivity + specificity - 1 (0.5 where a label
    has only one class on this split)."""
    from sklearn.metrics import roc_curve

    out = []
    for j in range(labels.shape[1]):
        y = labels[:, j] > 0.5
        if y.all() or not y.any():
            out.append(0.5)
            continue
        fpr, tpr, thr = roc_curve(y, probs[:, j])
        best = int(np.argmax(tpr - fpr))
        out.append(float(min(thr[best], 1.0)))
    return out


def score_multilabel(probs: np.ndarray, labels: np.ndarray, classes: list[str], thresholds: list[float]) -> dict:
    refs = np.asarray(labels) > 0.5
    at_half = multilabel_metrics(refs, probs, 0.5)
    at_youden = multilabel_metrics(refs, probs, np.asarray(thresholds))
    return {"accuracy": float(((probs >= 0.5) == refs).mean()), "roc_auc": at_half["roc_auc_macro"],
            "roc_auc_macro": at_half["roc_auc_macro"], "f1_macro": at_half["f1_macro"],
            "per_label": at_half["per_label"], "label_names": list(classes), "n": at_half["n"],
            "youden": {"thresholds": list(thresholds), "chosen_on": "validation", "f1_macro": at_youden["f1_macro"],
                       "f1": at_youden["per_label"]["f1"], "precision": at_youden["per_label"]["precision"],
                       "recall": at_youden["per_label"]["recall"]}}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def markdown(title: str, sections: dict, summary: dict) -> str:
    lines = [f"# {title}", "", *[f"- {k.replace('_', ' ')}: {v}" for k, v in summary.items()], ""]
    for split, m in sections.items():
        lines += [f"## {split} ({m['n']} images)", "",
                  f"Macro ROC-AUC {_pct(m['roc_auc_macro'])}; macro F1 at 0.5 {_pct(m['f1_macro'])}, at the "
                  f"validation Youden thresholds {_pct(m['youden']['f1_macro'])}; mean per-label accuracy at 0.5 "
                  f"{_pct(m['accuracy'])}.", "",
                  "| label | positives | ROC-AUC | F1 at 0.5 | threshold (Youden, validation) | F1 at threshold |",
                  "|---|---|---|---|---|---|"]
        pl, y = m["per_label"], m["youden"]
        for j, name in enumerate(m["label_names"]):
            lines.append(f"| {name} | {pl['support'][j]} | {_pct(pl['roc_auc'][j])} | {_pct(pl['f1'][j])} | "
                         f"{y['thresholds'][j]:.3f} | {_pct(y['f1'][j])} |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(out_dir: Path, title: str, results: dict, summary: dict, files: list[str], labels: np.ndarray,
                  probs: np.ndarray, classes: list[str], base_model: str) -> None:
    """report.json, report.md, predictions_test.csv and the model card of a multi-label run."""
    (out_dir / "report.json").write_text(json.dumps({"title": title, "summary": summary, "metrics": results},
                                                    indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown(title, results, summary))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", *[f"true_{c}" for c in classes], *[f"prob_{c}" for c in classes]])
    for f, y, p in zip(files, labels, probs):
        w.writerow([f, *[int(v > 0.5) for v in y], *[f"{v:.6f}" for v in p]])
    atomic_write_text(out_dir / "predictions_test.csv", buf.getvalue())
    test = results["test"]
    card = ["---", "library_name: transformers", "pipeline_tag: image-classification", f"base_model: {base_model}",
            "tags: [hf_medtl, medical-imaging, multi-label]", "---", "", f"# {title}", "",
            f"Multi-label classifier ({len(classes)} findings: {', '.join(classes)}); sigmoid outputs, one "
            "probability per finding: `pipeline('image-classification', model=DIR, function_to_apply='sigmoid', "
            "top_k=None)`.", "", markdown("Test results", {"test": test}, {}).split("\n", 2)[2],
            "Not a medical device; validate on your own population before any use."]
    (out_dir / "README.md").write_text("\n".join(card) + "\n")
