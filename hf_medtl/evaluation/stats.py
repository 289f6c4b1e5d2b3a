"""Paired significance between two models scored on the same images: McNemar's exact test for accuracy,
DeLong's test for a binary ROC-AUC, a paired bootstrap for every headline metric's difference, and Holm's
step-down correction across a table of tests."""
from __future__ import annotations

import numpy as np
from scipy import stats

from hf_medtl.evaluation.scoring import HEADLINE as SCORING_HEADLINE
from hf_medtl.metrics.medical_classification.medical_classification import point_metrics

# The headline metrics whose paired difference is tested (ECE is a calibration summary, not a paired score).
HEADLINE = tuple(k for k in SCORING_HEADLINE if k != "ece")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test: of the images exactly one model gets right (b: only A, c: only B), is the split
    50:50? Two-sided binomial p-value (scipy.stats.binomtest)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p)}


def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict:
    """DeLong, DeLong & Clarke-Pearson (1988) test of two correlated ROC-AUCs, by the midrank algorithm of
    Sun & Xu (2014). ``positive``: boolean labels; returns both AUCs, their difference, its SE, z and p."""
    positive = np.asarray(positive, bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative images")
    v10, v01, aucs = [], [], []
    for score in (np.asarray(score_a, float), np.asarray(score_b, float)):
        x, y = score[positive], score[~positive]
        tz = _midranks(np.r_[x, y])
        tx, ty = _midranks(x), _midranks(y)
        auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10.append((tz[:m] - tx) / n)  # placement of each positive among the negatives
        v01.append(1.0 - (tz[m:] - ty) / m)
        aucs.append(auc)
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else 0.0
    p = float(2 * stats.norm.sf(abs(z))) if se > 0 else 1.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": float(diff), "se": se,
            "z": float(z), "p_value": p, "var_a": float(cov[0, 0]), "var_b": float(cov[1, 1])}


def paired_bootstrap(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_bootstrap: int = 1000,
                     seed: int = 0, confidence_level: float = 0.95, metrics=HEADLINE) -> dict:
    """metric -> {a, b, difference (a - b), ci (percentile, over resamples of the images drawn once for
    both models), p_value (two-sided: twice the smaller share of resampled differences on either side of 0)}."""
    labels = np.asarray(labels)
    k = probs_a.shape[1]
    pred_a, pred_b = probs_a.argmax(1), probs_b.argmax(1)
    full_a, full_b = point_metrics(labels, pred_a, k, probs_a), point_metrics(labels, pred_b, k, probs_b)
    rng = np.random.default_rng(seed)
    diffs = {key: [] for key in metrics}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(labels), len(labels))
        ma = point_metrics(labels[idx], pred_a[idx], k, probs_a[idx])
        mb = point_metrics(labels[idx], pred_b[idx], k, probs_b[idx])
        for key in metrics:
            if ma.get(key) is not None and mb.get(key) is not None:
                diffs[key].append(ma[key] - mb[key])
    alpha = (1 - confidence_level) / 2
    out = {}
    for key in metrics:
        if full_a.get(key) is None or full_b.get(key) is None:
            continue
        d = np.asarray(diffs[key])
        row = {"a": full_a[key], "b": full_b[key], "difference": full_a[key] - full_b[key]}
        if len(d):
            row["ci"] = [float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))]
            row["p_value"] = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
        out[key] = row
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the table), in the input order."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


def paired_tests(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_bootstrap: int = 1000,
                 seed: int = 0) -> list[dict]:
    """Every test between two models on one test set, one row each: metric, a, b, difference, CI, test, p."""
    boot = paired_bootstrap(labels, probs_a, probs_b, n_bootstrap, seed)
    rows = []
    for key, r in boot.items():
        row = {"metric": key, **r, "test": "paired bootstrap"}
        if key == "accuracy":
            row.update(test="McNemar exact", p_value=mcnemar_exact(probs_a.argmax(1) == labels,
                                                                   probs_b.argmax(1) == labels)["p_value"])
        elif key == "roc_auc" and probs_a.shape[1] == 2 and min((labels == 1).sum(), (labels == 0).sum()) >= 2:
            row.update(test="DeLong", p_value=delong(labels == 1, probs_a[:, 1], probs_b[:, 1])["p_value"])
        elif key == "roc_auc":
            row["test"] = "paired bootstrap (one-vs-rest macro)"
        rows.append(row)
    return rows
