"""medical_classification: an `evaluate` metric for single-label medical image classifiers.

Self-contained (numpy only) so that ``evaluate.load(<this folder>)`` works offline. Every class in
``range(num_classes)`` counts in the macro averages, including one absent from the references or never
predicted (its precision/recall/F1 are 0, as scikit-learn's ``zero_division=0`` with ``labels=`` all classes).
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy; precision, recall (sensitivity), specificity and F1 per class (one-vs-rest), macro and
weighted; Matthews correlation; confusion matrix; with class scores also ROC-AUC (binary, or one-vs-rest macro)
and expected calibration error; with n_bootstrap > 0 percentile bootstrap confidence intervals of the headline
metrics."""

_KWARGS = """
Args:
    predictions: predicted class ids. references: true class ids.
    scores: optional (N, num_classes) class probabilities, for ROC-AUC and calibration.
    num_classes: number of classes (default: 1 + the largest id seen). label_names: names for the per-class table.
    n_bootstrap: bootstrap resamples for confidence intervals (0 = none). confidence_level: default 0.95.
    seed: bootstrap seed. ece_bins: equal-width confidence bins for the calibration error (default 15).
"""

HEADLINE = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "sensitivity_macro", "specificity_macro",
            "mcc", "roc_auc")


def _div(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def confusion_matrix(refs, preds, k):
    return np.bincount(refs * k + preds, minlength=k * k).reshape(k, k)


def binary_auc(positive, score):
    """Mann-Whitney AUC with average ranks for ties; None when one side is empty."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score))
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # average 1-based rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(refs, scores, bins=15):
    conf = scores.max(1)
    correct = scores.argmax(1) == refs
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def point_metrics(refs, preds, k, scores=None, ece_bins=15):
    cm = confusion_matrix(refs, preds, k)
    n = cm.sum()
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    fp, fn = predicted - tp, support - tp
    tn = n - tp - fp - fn
    precision, recall, specificity = _div(tp, predicted), _div(tp, support), _div(tn, tn + fp)
    f1 = _div(2 * precision * recall, precision + recall)
    weights = _div(support, n)
    cov = float(np.trace(cm)) * n - float(predicted @ support)
    denom = np.sqrt((n * n - float(predicted @ predicted)) * (n * n - float(support @ support)))
    out = {
        "accuracy": float(_div(np.trace(cm), n)),
        "precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()), "sensitivity_macro": float(recall.mean()),
        "specificity_macro": float(specificity.mean()),
        "precision_weighted": float(precision @ weights), "recall_weighted": float(recall @ weights),
        "f1_weighted": float(f1 @ weights),
        "mcc": float(cov / denom) if denom > 0 else 0.0,
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "sensitivity": recall.tolist(),
                      "specificity": specificity.tolist(), "f1": f1.tolist(), "support": support.tolist()},
        "confusion_matrix": cm.tolist(),
        "n": int(n),
    }
    if scores is not None:
        if k == 2:
            out["roc_auc"] = binary_auc(refs == 1, scores[:, 1])
            per_class = [out["roc_auc"]] * 2
        else:
            per_class = [binary_auc(refs == c, scores[:, c]) for c in range(k)]
            defined = [a for a in per_class if a is not None]
            out["roc_auc"] = float(np.mean(defined)) if defined else None
        out["per_class"]["roc_auc"] = per_class
        out["ece"] = expected_calibration_error(refs, scores, ece_bins)
    return out


def bootstrap_ci(refs, preds, k, scores, n_bootstrap, confidence_level, seed):
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in HEADLINE + ("ece",)}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(refs), len(refs))
        m = point_metrics(refs[idx], preds[idx], k, None if scores is None else scores[idx])
        for key in samples:
            if m.get(key) is not None:
                samples[key].append(m[key])
    alpha = (1 - confidence_level) / 2
    return {key: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
            for key, v in samples.items() if v}


def multilabel_metrics(refs, scores, threshold=0.5):
    """Per-label and macro ROC-AUC, and per-label / macro F1 of ``scores >= threshold``."""
    preds = scores >= threshold
    tp = (preds & refs).sum(0).astype(float)
    precision, recall = _div(tp, preds.sum(0)), _div(tp, refs.sum(0))
    f1 = _div(2 * precision * recall, precision + recall)
    auc = [binary_auc(refs[:, j], scores[:, j]) for j in range(refs.shape[1])]
    defined = [a for a in auc if a is not None]
    return {"roc_auc_macro": float(np.mean(defined)) if defined else None, "f1_macro": float(f1.mean()),
            "per_label": {"roc_auc": auc, "f1": f1.tolist(), "precision": precision.tolist(),
                          "recall": recall.tolist(), "support": refs.sum(0).astype(int).tolist()},
            "threshold": threshold, "n": int(len(refs))}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MedicalClassification(evaluate.Metric):
    """config_name 'multiclass' (default): class ids in, everything above out. 'multilabel': predictions are
    per-label scores (N, L) and references 0/1 (N, L); per-label and macro ROC-AUC and F1 at ``threshold``."""

    def _info(self):
        if self.config_name == "multilabel":
            features = {"predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("int64"))}
        else:
            features = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features(features))

    def _compute(self, predictions, references, scores=None, num_classes=None, label_names=None,
                 n_bootstrap=0, confidence_level=0.95, seed=0, ece_bins=15, threshold=0.5):
        if self.config_name == "multilabel":
            out = multilabel_metrics(np.asarray(references, dtype=bool), np.asarray(predictions, dtype=float), threshold)
            out["label_names"] = list(label_names) if label_names else [str(j) for j in range(len(out["per_label"]["f1"]))]
            return out
        preds, refs = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        scores = None if scores is None else np.asarray(scores, dtype=float)
        k = int(num_classes or (len(label_names) if label_names else max(preds.max(), refs.max()) + 1))
        if scores is not None and scores.shape != (len(refs), k):
            raise ValueError(f"scores must have shape ({len(refs)}, {k}), got {scores.shape}")
        out = point_metrics(refs, preds, k, scores, ece_bins)
        out["label_names"] = list(label_names) if label_names else [str(c) for c in range(k)]
        if n_bootstrap:
            out["ci"] = bootstrap_ci(refs, preds, k, scores, n_bootstrap, confidence_level, seed)
            out["confidence_level"] = confidence_level
            out["n_bootstrap"] = n_bootstrap
        return out
