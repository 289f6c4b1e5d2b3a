"""The `evaluate` metric module against scikit-learn, its bootstrap CIs, and offline loading."""
import numpy as np
import pytest
from sklearn import metrics as sk

from hf_medtl.metrics import MEDICAL_CLASSIFICATION, load_medical_classification


@pytest.fixture(scope="module")
def metric():
    return load_medical_classification()


def random_case(n, k, seed, accuracy=0.7):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < accuracy, refs, rng.integers(0, k, n))
    scores = rng.dirichlet(np.ones(k), n)
    scores[np.arange(n), preds] += 1.0
    return refs, preds, scores / scores.sum(1, keepdims=True)


def check_against_sklearn(out, refs, preds, scores, k):
    labels = list(range(k))
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(refs, preds))
    for avg in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(refs, preds, labels=labels, average=avg, zero_division=0)
        assert (out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"]) == pytest.approx((p, r, f))
    p, r, f, support = sk.precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    assert out["per_class"]["precision"] == pytest.approx(p) and out["per_class"]["f1"] == pytest.approx(f)
    assert out["per_class"]["support"] == support.tolist()
    assert out["mcc"] == pytest.approx(sk.matthews_corrcoef(refs, preds))
    assert out["confusion_matrix"] == sk.confusion_matrix(refs, preds, labels=labels).tolist()
    cm = np.asarray(out["confusion_matrix"])
    for c in range(k):  # specificity = recall of "not c" in the one-vs-rest problem
        spec = sk.recall_score(refs != c, preds != c, zero_division=0)
        assert out["per_class"]["specificity"][c] == pytest.approx(spec), c
    assert out["specificity_macro"] == pytest.approx(np.mean(out["per_class"]["specificity"]))
    assert cm.sum() == len(refs)


def test_binary_matches_sklearn(metric):
    refs, preds, scores = random_case(300, 2, seed=0)
    out = metric.compute(predictions=preds, references=refs, scores=scores, num_classes=2)
    check_against_sklearn(out, refs, preds, scores, 2)
    assert out["roc_auc"] == pytest.approx(sk.roc_auc_score(refs, scores[:, 1]))


def test_multiclass_matches_sklearn_including_ties(metric):
    refs, preds, scores = random_case(400, 4, seed=1)
    scores = np.round(scores, 2)  # ties in the scores
    scores /= scores.sum(1, keepdims=True)
    out = metric.compute(predictions=preds, references=refs, scores=scores, num_classes=4)
    check_against_sklearn(out, refs, preds, scores, 4)
    assert out["roc_auc"] == pytest.approx(sk.roc_auc_score(refs, scores, multi_class="ovr", average="macro"))


def test_class_never_predicted_and_class_absent(metric):
    refs, preds, scores = random_case(200, 4, seed=2)
    preds = np.where(preds == 3, 0, preds)  # class 3 is never predicted
    out = metric.compute(predictions=preds, references=refs, num_classes=4)
    check_against_sklearn(out, refs, preds, None, 4)
    assert out["per_class"]["precision"][3] == 0.0
    refs = np.where(refs == 2, 1, refs)  # class 2 absent from the labels
    out = metric.compute(predictions=preds, references=refs, scores=scores, num_classes=4)
    check_against_sklearn(out, refs, preds, scores, 4)
    assert out["per_class"]["roc_auc"][2] is None
    present = [0, 1, 3]
    expected = np.mean([sk.roc_auc_score(refs == c, scores[:, c]) for c in present])
    assert out["roc_auc"] == pytest.approx(expected)


def test_calibration_error(metric):
    refs, preds, scores = random_case(500, 3, seed=3)
    out = metric.compute(predictions=scores.argmax(1), references=refs, scores=scores, num_classes=3, ece_bins=10)
    conf, correct = scores.max(1), scores.argmax(1) == refs
    bins = np.minimum((conf * 10).astype(int), 9)
    bins[conf * 10 == np.floor(conf * 10)] -= 1  # right-closed bins
    expected = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                   for b in range(10) if (bins == b).any())
    assert out["ece"] == pytest.approx(expected)
    perfect = np.eye(3)[refs]
    assert metric.compute(predictions=refs, references=refs, scores=perfect, num_classes=3)["ece"] == 0.0


def test_bootstrap_cis_cover_and_reproduce(metric):
    refs, preds, scores = random_case(300, 3, seed=4)
    kw = dict(predictions=preds, references=refs, scores=scores, num_classes=3, n_bootstrap=1000)
    a, b, c = metric.compute(**kw, seed=7), metric.compute(**kw, seed=7), metric.compute(**kw, seed=8)
    assert a["ci"] == b["ci"] and a["ci"] != c["ci"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "specificity_macro", "mcc", "roc_auc"):
        lo, hi = a["ci"][key]
        assert lo <= a[key] <= hi and hi - lo > 0, key
    assert a["ci"]["accuracy"][1] - a["ci"]["accuracy"][0] == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 300), rel=0.3)


def test_multilabel_variant_matches_sklearn():
    import evaluate

    rng = np.random.default_rng(5)
    refs = rng.random((200, 3)) < [0.3, 0.5, 0.1]
    scores = np.clip(refs * 0.4 + rng.random((200, 3)) * 0.7, 0, 1)
    m = evaluate.load(str(MEDICAL_CLASSIFICATION), config_name="multilabel", keep_in_memory=True)
    out = m.compute(predictions=scores, references=refs.astype(int), threshold=0.5)
    assert out["per_label"]["roc_auc"] == pytest.approx([sk.roc_auc_score(refs[:, j], scores[:, j]) for j in range(3)])
    assert out["roc_auc_macro"] == pytest.approx(sk.roc_auc_score(refs, scores, average="macro"))
    assert out["per_label"]["f1"] == pytest.approx(sk.f1_score(refs, scores >= 0.5, average=None).tolist())
    assert out["f1_macro"] == pytest.approx(sk.f1_score(refs, scores >= 0.5, average="macro"))


def test_loads_offline_from_its_folder():
    import os
    import subprocess
    import sys

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    code = ("import evaluate, sys; m = evaluate.load(sys.argv[1]); "
            "print(m.compute(predictions=[0, 1, 1], references=[0, 1, 0])['accuracy'])")
    out = subprocess.run([sys.executable, "-c", code, str(MEDICAL_CLASSIFICATION)], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == str(2 / 3)


def test_bca_is_the_default_and_agrees_with_scipy(metric):
    from scipy.stats import bootstrap

    refs = np.zeros(60, dtype=int)
    preds = refs.copy()
    preds[:4] = 1  # 56 of 60 right: a skewed bootstrap distribution near 100%
    out = metric.compute(predictions=preds, references=refs, num_classes=2, n_bootstrap=4000, seed=0)
    assert out["ci_method"] == "bca"
    ref = bootstrap(((preds == refs).astype(float),), np.mean, n_resamples=4000, method="BCa",
                    random_state=np.random.default_rng(1)).confidence_interval
    assert out["ci"]["accuracy"] == pytest.approx([ref.low, ref.high], abs=0.012)
    pct = metric.compute(predictions=preds, references=refs, num_classes=2, n_bootstrap=4000, seed=0,
                         ci_method="percentile")
    assert pct["ci_method"] == "percentile" and pct["ci"]["accuracy"] != out["ci"]["accuracy"]
    assert out["ci"]["accuracy"][0] < pct["ci"]["accuracy"][0]  # BCa reaches further down, away from the bound


def test_degenerate_bootstrap_falls_back_to_a_point_interval(metric):
    refs = np.arange(20) % 2
    out = metric.compute(predictions=refs, references=refs, num_classes=2, n_bootstrap=200)
    assert out["ci"]["accuracy"] == [1.0, 1.0]


@pytest.mark.parametrize("n,k,ties,one_class", [(40, 2, False, False), (60, 3, True, False), (30, 9, False, False),
                                                (25, 2, True, True), (1500, 2, True, False)])
def test_the_batched_bootstrap_table_is_point_metrics_bit_for_bit(n, k, ties, one_class, monkeypatch):
    """Issue 32: the bootstrap and jackknife resamples are scored together (one confusion-matrix and ROC-AUC pass
    for all); each value equals point_metrics' on that resample exactly, so the CIs are unchanged. Covers score
    ties, nine classes (pairwise sums), one class only (undefined AUC), unequal jackknife blocks (n > 1000) and
    the memory blocks (small on purpose here)."""
    from hf_medtl.metrics.medical_classification import medical_classification as mc

    monkeypatch.setattr(mc, "_ROW_BLOCK", 3 * n + 1)  # several blocks of rows
    rng = np.random.default_rng(n + k)
    p = rng.random((n, k)) ** 3
    if ties:
        p = np.round(p, 1) + 1e-3
    p /= p.sum(1, keepdims=True)
    y = np.zeros(n, dtype=np.int64) if one_class else rng.integers(0, k, n)
    preds = p.argmax(1)
    sets = [rng.integers(0, n, n) for _ in range(20)] + mc._jackknife_sets(n)[:30] + mc._jackknife_sets(n)[-30:]
    for scores in (p, None):
        table = mc._metric_table(y, preds, k, scores, sets)
        for j, idx in enumerate(sets):
            one = mc.point_metrics(y[idx], preds[idx], k, None if scores is None else scores[idx])
            for key, values in table.items():
                expected = one.get(key)
                assert (np.isnan(values[j]) if expected is None else values[j] == expected), (key, j)
