"""`hf-medtl study strategies`: one run per strategy in output_dir/<strategy> (linear_probe and knn without
augmentation), summary.json with one row each whose accuracy is that run's metrics.json, the paired tests of
every pair, and a rerun that trains nothing new; with --folds K the same over K folds each, with the fold tests.
A bad --strategies or --folds: one line, exit 2."""
import csv
import json

import numpy as np
import pytest
from scipy import stats

from hf_medtl.cli import main as cli
from tests.conftest import errors, tiny_recipe


def test_strategies_study_rows_paired_tests_and_rerun(tmp_path, tiny_vit, image_folder, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         output_dir=str(tmp_path / "study"))
    argv = ["study", "strategies", str(recipe), "--strategies", "linear_probe,knn,full"]
    assert cli(argv) == 0
    out = tmp_path / "study"
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["strategies"]
    assert [r["strategy"] for r in rows] == ["linear_probe", "knn", "full"]
    for r in rows:
        metrics = json.loads((out / r["strategy"] / "metrics.json").read_text())
        assert r["accuracy"] == metrics["test"]["accuracy"] and r["f1_macro"] == metrics["test"]["f1_macro"]
        recipe_used = json.loads((out / r["strategy"] / "recipe.json").read_text())
        assert recipe_used["finetune_strategy"] == r["strategy"]
        assert recipe_used["augment"] is (r["strategy"] == "full")  # fixed features for the probes
    by = {r["strategy"]: r for r in rows}
    assert by["knn"]["trainable_parameters"] == 0 and by["knn"]["epochs"] == 0 and by["knn"]["knn"]["k"] >= 1
    assert 0 < by["linear_probe"]["trainable_parameters"] < by["full"]["trainable_parameters"]
    pairs = {(t["run_a"], t["run_b"]) for t in summary["paired"]}
    assert pairs == {("linear_probe", "knn"), ("linear_probe", "full"), ("knn", "full")}
    assert all("p_holm" in t for t in summary["paired"])
    report = (out / "report.md").read_text()
    assert "| knn (k " in report and "p (Holm)" in report

    # A rerun reads every finished run back: no run folder is written again.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    assert cli(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == stamps
    assert json.loads((out / "summary.json").read_text())["strategies"] == rows


def test_bad_strategies_are_one_line(tmp_path, tiny_vit, image_folder, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, image_size=24, output_dir=str(tmp_path / "study"))
    assert cli(["study", "strategies", str(recipe), "--strategies", "linear_probe,nearest"]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "'nearest' is not a finetune_strategy" in err[0], err
    assert not (tmp_path / "study").exists()


def test_strategies_study_over_folds(tmp_path, tiny_vit, image_folder, capsys):
    """--folds 2: every strategy's folds in output_dir/<strategy>/fold-k on one test split and one partition of the
    pool; mean ± sd read from the fold runs; the t-test's p is scipy's on the folds' accuracies, McNemar's counts
    come from the pooled out-of-fold predictions; a rerun trains nothing."""
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, num_train_epochs=1, image_size=24, n_bootstrap=0,
                         output_dir=str(tmp_path / "study"))
    argv = ["study", "strategies", str(recipe), "--strategies", "linear_probe,knn,full", "--folds", "2"]
    assert cli(argv) == 0
    assert "over 2 folds" in capsys.readouterr().out
    out = tmp_path / "study"
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["strategy"]: r for r in summary["strategies"]}
    assert list(rows) == ["linear_probe", "knn", "full"] and summary["folds"] == 2
    accuracies, tests, pools = {}, set(), set()
    for name, r in rows.items():
        folds = [json.loads((out / name / f"fold-{k}" / "metrics.json").read_text()) for k in range(2)]
        accuracies[name] = [m["test"]["accuracy"] for m in folds]
        assert r["test"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies[name]))
        assert r["test"]["accuracy"]["sd"] == pytest.approx(np.std(accuracies[name], ddof=1))
        for k in range(2):
            used = json.loads((out / name / f"fold-{k}" / "recipe.json").read_text())
            assert (used["finetune_strategy"], used["cv_folds"], used["cv_fold"]) == (name, 2, k)
            with open(out / name / f"fold-{k}" / "predictions_test.csv") as f:  # the same images, every run
                tests.add(tuple(row["path"] for row in csv.DictReader(f)))
        with open(out / f"predictions_out_of_fold_{name}.csv") as f:
            oof = [row["path"] for row in csv.DictReader(f)]
        assert len(oof) == len(set(oof)) == folds[0]["split_counts"]["train"] + folds[0]["split_counts"]["validation"]
        pools.add(tuple(oof))
        assert r["out_of_fold"]["n"] == len(oof)
    assert len(tests) == 1 and len(pools) == 1
    assert rows["knn"]["seconds_per_epoch"] is None and rows["full"]["seconds_per_epoch"] > 0
    assert all(r["peak_memory_mb"] > 0 for r in rows.values())  # k-NN: its feature pass
    assert 0 < rows["linear_probe"]["trainable_parameters"] < rows["full"]["trainable_parameters"]
    pairs = {(t["run_a"], t["run_b"]): t for t in summary["paired"]}
    assert set(pairs) == {("linear_probe", "knn"), ("linear_probe", "full"), ("knn", "full")}
    for (a, b), t in pairs.items():
        expected = stats.ttest_rel(accuracies[a], accuracies[b]).pvalue
        assert t["t_test_p"] == (1.0 if np.isnan(expected) else pytest.approx(expected))
        assert t["t_test_p_holm"] >= t["t_test_p"] and 0 <= t["wilcoxon_p"] <= 1 and 0 <= t["mcnemar_p_holm"] <= 1
        m = t["mcnemar"]
        assert m["only_a_correct"] + m["only_b_correct"] <= rows[a]["out_of_fold"]["n"]
    report = (out / "report.md").read_text()
    assert "2-fold cross-validation" in report and "Wilcoxon p (Holm)" in report and "| knn (k " in report

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/fold-*/metrics.json")}
    assert len(stamps) == 6
    assert cli(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/fold-*/metrics.json")} == stamps
    assert json.loads((out / "summary.json").read_text())["paired"] == summary["paired"]


def test_bad_folds_are_one_line(tmp_path, tiny_vit, image_folder, capsys):
    recipe = tiny_recipe(tmp_path, tiny_vit, image_folder, image_size=24, output_dir=str(tmp_path / "study"))
    with pytest.raises(SystemExit) as e:  # argparse's own refusal, as for hf-medtl cv --folds 0
        cli(["study", "strategies", str(recipe), "--folds", "0"])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "--folds: must be a whole number of at least 1" in err[0], err
    # The study cuts the folds itself: a cv key among the overrides would fight it.
    assert cli(["study", "strategies", str(recipe), "--folds", "2", "--cv_folds", "3"]) == 2
    err = errors(capsys)
    assert len(err) == 1 and "--folds 2 cuts the folds itself; drop cv_folds" in err[0], err
    assert not (tmp_path / "study").exists()
