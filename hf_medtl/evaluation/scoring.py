"""Scoring behind one interface: probabilities and true labels in, every metric out — single-label through the
medical_classification metric module (with bootstrap CIs), multi-label (0/1 label rows) per label and macro, at
0.5 and at thresholds chosen on validation. Also the headline metric list and the number format that every
report, card, comparison and study uses."""
from __future__ import annotations

import numpy as np

# The headline metrics, in the order every table shows them: metrics.json key -> display name.
HEADLINE = {"accuracy": "Accuracy", "precision_macro": "Precision (macro)",
            "recall_macro": "Sensitivity / recall (macro)", "specificity_macro": "Specificity (macro)",
            "f1_macro": "F1 (macro)", "roc_auc": "ROC-AUC", "mcc": "Matthews corr.", "ece": "ECE"}
UNIT_SCALE = ("mcc", "ece")  # shown as numbers; every other metric as a percentage


def fmt(key: str | None, value, missing: str = "n/a") -> str:
    """A metric as the reports show it: 97.84% (or 0.912 for MCC and ECE); ``missing`` for None."""
    if value is None:
        return missing
    return f"{value:.3f}" if key in UNIT_SCALE else f"{100 * value:.2f}%"


def pct(value, missing: str = "n/a") -> str:
    """A fraction as a percentage with two decimals."""
    return fmt(None, value, missing)


def plain(value) -> str:
    """A summary value as the console writes it: 0.9740 (not 0.9739583333333334), 1,234,567, lists and mappings as
    short text (never Python's repr)."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "n/a"}[value]
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) and {"from_epoch", "trainable_params"} <= set(v) for v in value):
            return "; ".join(f"from epoch {v['from_epoch']}: {v['trainable_params']:,}" for v in value)
        return ", ".join(plain(v) for v in value)
    return str(value)


def score(probs: np.ndarray, labels: np.ndarray, classes: list[str], eval_args=None, seed: int = 0,
          thresholds: list[float] | None = None) -> dict:
    """Every metric of ``probs`` against ``labels``. Class ids: the metric module's metrics with bootstrap CIs as
    ``eval_args`` (EvaluationArguments) says. 0/1 label rows (multi-label): score_multilabel at ``thresholds``
    (0.5 each when not given)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return score_multilabel(probs, labels, classes, thresholds or [0.5] * len(classes))
    from hf_medtl.metrics import load_medical_classification

    n_bootstrap, ci_method = (eval_args.n_bootstrap, eval_args.ci_method) if eval_args is not None else (0, "bca")
    return load_medical_classification().compute(
        predictions=probs.argmax(1), references=labels, scores=probs, num_classes=len(classes), label_names=classes,
        n_bootstrap=n_bootstrap, ci_method=ci_method, seed=seed)


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
    """Per-label and macro ROC-AUC, F1 at 0.5 and at ``thresholds`` (Youden's, chosen on validation), mean
    per-label accuracy at 0.5."""
    from hf_medtl.metrics.medical_classification.medical_classification import multilabel_metrics

    refs = np.asarray(labels) > 0.5
    at_half = multilabel_metrics(refs, probs, 0.5)
    at_youden = multilabel_metrics(refs, probs, np.asarray(thresholds))
    return {"accuracy": float(((probs >= 0.5) == refs).mean()), "roc_auc": at_half["roc_auc_macro"],
            "roc_auc_macro": at_half["roc_auc_macro"], "f1_macro": at_half["f1_macro"],
            "per_label": at_half["per_label"], "label_names": list(classes), "n": at_half["n"],
            "youden": {"thresholds": list(thresholds), "chosen_on": "validation", "f1_macro": at_youden["f1_macro"],
                       "f1": at_youden["per_label"]["f1"], "precision": at_youden["per_label"]["precision"],
                       "recall": at_youden["per_label"]["recall"]}}


def score_splits(predictions: dict, classes: list[str], eval_args=None, seed: int = 0) -> dict:
    """split -> metrics for a run's {"validation": (probs, labels), "test": ...}. Multi-label thresholds are
    chosen on validation and applied to both."""
    thresholds = None
    probs, labels = predictions["validation"]
    if np.asarray(labels).ndim == 2:
        thresholds = youden_thresholds(labels, probs)
    return {split: score(p, y, classes, eval_args, seed, thresholds) for split, (p, y) in predictions.items()}
