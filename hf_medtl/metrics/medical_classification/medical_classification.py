"""medical_classification: an `evaluate` metric for single-label medical image classifiers.

Self-contained (numpy only) so that ``evaluate.load(<this folder>)`` works offline. Every class in
``range(num_classes)`` counts in the macro averages, including one absent from the references or never
predicted (its precision/recall/F1 are 0, as scikit-learn's ``zero_division=0`` with ``labels=`` all classes).
"""
import datasets
import evaluate
import numpy as np
from scipy.stats import norm

_DESCRIPTION = """Accuracy; precision, recall (sensitivity), specificity and F1 per class (one-vs-rest), macro and
weighted; Matthews correlation; confusion matrix; with class scores also ROC-AUC (binary, or one-vs-rest macro)
and expected calibration error; with n_bootstrap > 0 bootstrap confidence intervals of the headline metrics,
BCa (bias-corrected and accelerated, the default) or percentile."""

_KWARGS = """
Args:
    predictions: predicted class ids. references: true class ids.
    scores: optional (N, num_classes) class probabilities, for ROC-AUC and calibration.
    num_classes: number of classes (default: 1 + the largest id seen). label_names: names for the per-class table.
    n_bootstrap: bootstrap resamples for confidence intervals (0 = none). confidence_level: default 0.95.
    ci_method: 'bca' (default) or 'percentile'.
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


def calibration_bins(refs, scores, bins=15):
    """Equal-width bins of the top-class confidence: per bin its range, count, mean confidence and accuracy.
    The one binning behind both the ECE and the reliability diagram."""
    conf = scores.max(1)
    correct = scores.argmax(1) == refs
    which = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append({"bin": b, "low": b / bins, "high": (b + 1) / bins, "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else None,
                    "accuracy": float(correct[m].mean()) if m.any() else None})
    return out


def expected_calibration_error(refs, scores, bins=15):
    n = len(refs)
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in calibration_bins(refs, scores, bins)
                     if b["n"]))


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


def _metric_table(refs, preds, k, scores, index_sets):
    """metric -> array of its value on each index set (NaN where undefined): point_metrics' values, bit for bit, with
    the index sets of one length computed together (one confusion matrix and one ROC-AUC pass for all of them)."""
    keys = HEADLINE + ("ece",)
    table = {m: np.full(len(index_sets), np.nan) for m in keys}
    by_length = {}
    for j, idx in enumerate(index_sets):
        by_length.setdefault(len(idx), []).append(j)
    for same in by_length.values():
        step = max(1, _ROW_BLOCK // max(len(index_sets[same[0]]), 1))  # memory: about _ROW_BLOCK indices at a time
        for start in range(0, len(same), step):
            rows = same[start:start + step]
            values = _metric_rows(refs, preds, k, scores, np.stack([np.asarray(index_sets[j]) for j in rows]))
            for key, v in values.items():
                table[key][rows] = v
    return table


_ROW_BLOCK = 2_000_000


def _metric_rows(refs, preds, k, scores, idx):
    """The headline metrics and the ECE of each row of ``idx`` (m index sets of one length), as point_metrics
    computes them: the same float operations on the same exact counts, so the same values."""
    m, n = idx.shape
    codes = (refs[idx] * k + preds[idx]) + (np.arange(m) * k * k)[:, None]
    cm = np.bincount(codes.ravel(), minlength=m * k * k).reshape(m, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    support, predicted = cm.sum(2), cm.sum(1)
    fp, fn = predicted - tp, support - tp
    tn = n - tp - fp - fn
    precision, recall, specificity = _div(tp, predicted), _div(tp, support), _div(tn, tn + fp)
    f1 = _div(2 * precision * recall, precision + recall)
    trace = tp.sum(1)  # exact: integer counts
    cov = trace * n - (predicted * support).sum(1).astype(float)
    nn = float(n) * n
    denom = np.sqrt((nn - (predicted * predicted).sum(1).astype(float)) * (nn - (support * support).sum(1).astype(float)))
    out = {"accuracy": _div(trace, np.full(m, n)), "precision_macro": precision.mean(1), "recall_macro": recall.mean(1),
           "f1_macro": f1.mean(1), "sensitivity_macro": recall.mean(1), "specificity_macro": specificity.mean(1),
           "mcc": np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)}
    if scores is None:
        out["roc_auc"] = np.full(m, np.nan)
        out["ece"] = np.full(m, np.nan)
        return out
    counts = np.bincount((idx + (np.arange(m) * len(refs))[:, None]).ravel(), minlength=m * len(refs))
    counts = counts.reshape(m, len(refs))  # how often each image is drawn in each row
    if k == 2:
        out["roc_auc"] = _weighted_auc(refs == 1, scores[:, 1], counts)
    else:
        per_class = np.stack([_weighted_auc(refs == c, scores[:, c], counts) for c in range(k)], 1)
        # np.mean over the defined classes of each row, as point_metrics takes it (the same summation)
        out["roc_auc"] = np.array([np.mean(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.nan for r in per_class])
    out["ece"] = _rows_ece(refs, scores, idx)
    return out


def _weighted_auc(positive, score, counts):
    """binary_auc of each row's resample, from how often each image is drawn (``counts``, m x N): the Mann-Whitney
    count of (positive, negative) pairs ranked right, ties a half, which is what the average-rank formula gives.
    Every term is a multiple of 1/2 well inside float64's exact range, so the value is binary_auc's to the bit."""
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    c = counts[:, order]
    pos_sorted = positive[order]
    pos = np.add.reduceat(c * pos_sorted, starts, axis=1)  # drawn positives per tie group
    neg = np.add.reduceat(c * ~pos_sorted, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    twice = (pos * (2 * below + neg)).sum(1)  # 2 x the pairs ranked right (integers)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (twice / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _rows_ece(refs, scores, idx, bins=15):
    """expected_calibration_error of each row's resample. Each bin's mean confidence is np.mean of the same values
    in the same order as calibration_bins takes them (a stable sort by bin keeps the resample's order), so the sum
    and its rounding are the same; counts and accuracies are exact."""
    conf = scores.max(1)
    correct = scores.argmax(1) == refs
    which = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    out = np.empty(len(idx))
    n = idx.shape[1]
    for r, rows in enumerate(idx):
        w = which[rows]
        order = np.argsort(w, kind="stable")
        c, ok, w = conf[rows][order], correct[rows][order], w[order]
        edges = np.flatnonzero(np.r_[True, w[1:] != w[:-1], True])
        total = 0.0
        for a, b in zip(edges[:-1], edges[1:]):  # the non-empty bins, in bin order
            size = b - a
            total += size / n * abs(ok[a:b].sum() / size - c[a:b].mean())
        out[r] = float(total)
    return out


def _jackknife_sets(n, max_blocks=1000):
    """Leave-one-out index sets (or leave-one-block-out when n is large: the grouped jackknife)."""
    blocks = np.array_split(np.arange(n), min(n, max_blocks))
    return [np.setdiff1d(np.arange(n), blk, assume_unique=True) for blk in blocks]


def bootstrap_ci(refs, preds, k, scores, n_bootstrap, confidence_level, seed, method="bca"):
    """Confidence intervals of the headline metrics from ``n_bootstrap`` paired resamples of the images.

    bca: Efron's bias-corrected and accelerated interval, the bias from the share of resamples below the
    estimate and the acceleration from a jackknife; it covers better than the percentile interval near 100%
    and at small n. A degenerate bootstrap distribution (every resample equal) falls back to percentile."""
    rng = np.random.default_rng(seed)
    boot = _metric_table(refs, preds, k, scores, [rng.integers(0, len(refs), len(refs)) for _ in range(n_bootstrap)])
    alpha = (1 - confidence_level) / 2
    full = point_metrics(refs, preds, k, scores)
    jack = _metric_table(refs, preds, k, scores, _jackknife_sets(len(refs))) if method == "bca" else None
    out = {}
    for key, values in boot.items():
        values = values[~np.isnan(values)]
        if not len(values):
            continue
        lo, hi = alpha, 1 - alpha
        estimate = full.get(key)
        if method == "bca" and estimate is not None and values.min() < values.max():
            share = (np.sum(values < estimate) + 0.5 * np.sum(values == estimate)) / len(values)
            z0 = norm.ppf(np.clip(share, 0.5 / len(values), 1 - 0.5 / len(values)))
            j = jack[key][~np.isnan(jack[key])]
            d = j.mean() - j
            denom = 6 * np.sum(d ** 2) ** 1.5
            a = np.sum(d ** 3) / denom if denom > 0 else 0.0
            z = norm.ppf([alpha, 1 - alpha])
            lo, hi = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        out[key] = [float(np.quantile(values, lo)), float(np.quantile(values, hi))]
    return out


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
                 n_bootstrap=0, confidence_level=0.95, seed=0, ece_bins=15, threshold=0.5, ci_method="bca"):
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
            if ci_method not in ("bca", "percentile"):
                raise ValueError(f"ci_method must be 'bca' or 'percentile', got {ci_method!r}")
            out["ci"] = bootstrap_ci(refs, preds, k, scores, n_bootstrap, confidence_level, seed, ci_method)
            out["confidence_level"] = confidence_level
            out["n_bootstrap"] = n_bootstrap
            out["ci_method"] = ci_method
        return out
