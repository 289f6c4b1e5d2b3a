"""hf_medtl.evaluation.stats against values worked by hand and against scikit-learn / the definitions."""
import numpy as np
import pytest

from hf_medtl.evaluation import stats


def test_mcnemar_exact_hand_worked():
    # 1 image only A gets right, 6 only B: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    r = stats.mcnemar_exact(a, b)
    assert (r["only_a_correct"], r["only_b_correct"]) == (1, 6) and r["p_value"] == pytest.approx(0.125)
    # 0 vs 5 discordant: 2 / 32
    assert stats.mcnemar_exact(np.zeros(5, bool), np.ones(5, bool))["p_value"] == pytest.approx(0.0625)
    assert stats.mcnemar_exact(np.ones(4, bool), np.ones(4, bool))["p_value"] == 1.0  # no discordant pair
    # Agresti's presidential-approval table (b=150, c=86): far below 0.05, as the chi-square gives (17.36)
    big = stats.mcnemar_exact(np.r_[np.ones(150), np.zeros(86)].astype(bool), np.r_[np.zeros(150), np.ones(86)].astype(bool))
    assert big["p_value"] < 1e-3


def _delong_by_definition(pos, a, b):
    """DeLong et al. (1988) literally: the kernel psi over all (positive, negative) pairs, its structural
    components V10, V01 and S = S10/m + S01/n."""
    comps = []
    for s in (a, b):
        x, y = s[pos], s[~pos]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        comps.append((psi.mean(), psi.mean(1), psi.mean(0)))
    m, n = pos.sum(), (~pos).sum()
    s10 = np.cov(np.array([c[1] for c in comps]))
    s01 = np.cov(np.array([c[2] for c in comps]))
    s = s10 / m + s01 / n
    return comps[0][0], comps[1][0], s[0, 0] + s[1, 1] - 2 * s[0, 1]


def test_delong_matches_sklearn_and_the_definition():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(120) < 0.4
    a = np.round(y + rng.normal(0, 0.8, 120), 1)  # rounded: ties inside and across classes
    b = np.round(y + rng.normal(0, 1.2, 120), 1)
    r = stats.delong(y, a, b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a)) and r["auc_b"] == pytest.approx(roc_auc_score(y, b))
    auc_a, auc_b, var = _delong_by_definition(y, a, b)
    assert r["se"] ** 2 == pytest.approx(var) and r["difference"] == pytest.approx(auc_a - auc_b)
    assert r["p_value"] == pytest.approx(2 * (1 - __import__("scipy").stats.norm.cdf(abs(r["z"]))))
    same = stats.delong(y, a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_delong_se_agrees_with_a_paired_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.5
    a, b = y + rng.normal(0, 1, 400), y + rng.normal(0, 1.5, 400)
    r = stats.delong(y, a, b)
    probs = lambda s: np.c_[1 - 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s))]  # noqa: E731
    boot = stats.paired_bootstrap(y.astype(int), probs(a), probs(b), n_bootstrap=300, seed=1, metrics=("roc_auc",))
    se_boot = (boot["roc_auc"]["ci"][1] - boot["roc_auc"]["ci"][0]) / (2 * 1.96)
    assert r["se"] == pytest.approx(se_boot, rel=0.2) and boot["roc_auc"]["difference"] == pytest.approx(r["difference"])


def test_paired_bootstrap_identical_runs_is_zero_centred():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90)
    out = stats.paired_bootstrap(labels, probs, probs.copy(), n_bootstrap=200)
    assert set(stats.HEADLINE) <= set(out)
    for r in out.values():
        assert r["difference"] == 0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0
    better = probs.copy()
    better[np.arange(90), labels] += 2  # B always right
    out = stats.paired_bootstrap(labels, probs, better / better.sum(1, keepdims=True), n_bootstrap=200)
    acc = out["accuracy"]
    assert acc["difference"] < 0 and acc["ci"][1] < 0 and acc["p_value"] < 0.05


def test_holm_step_down():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.5 with m=4 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert stats.holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_tests_choose_the_test_per_metric():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 60)
    pa, pb = rng.dirichlet(np.ones(2), 60), rng.dirichlet(np.ones(2), 60)
    tests = {r["metric"]: r["test"] for r in stats.paired_tests(labels, pa, pb, n_bootstrap=50)}
    assert tests["accuracy"] == "McNemar exact" and tests["roc_auc"] == "DeLong" and tests["f1_macro"] == "paired bootstrap"
    labels3 = rng.integers(0, 3, 60)
    tests3 = {r["metric"]: r["test"] for r in stats.paired_tests(labels3, rng.dirichlet(np.ones(3), 60),
                                                                 rng.dirichlet(np.ones(3), 60), n_bootstrap=50)}
    assert tests3["roc_auc"].startswith("paired bootstrap")
