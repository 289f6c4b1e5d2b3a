"""`hf-medtl study strategies`: one run per strategy in output_dir/<strategy> (linear_probe and knn without
augmentation), summary.json with one row each whose accuracy is that run's metrics.json, the paired tests of
every pair, and a rerun that trains nothing new. A bad --strategies: one line, exit 2."""
import json

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
