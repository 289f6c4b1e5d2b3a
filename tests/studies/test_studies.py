"""Studies through the CLI on tiny models: cv folds and summary, paired compare, imbalance, robustness, search."""
import csv
import json
import shutil

import numpy as np
import pytest

from hf_medtl.cli import main
from hf_medtl.data import load_splits
from hf_medtl.config.recipe import load_recipe
from tests.conftest import make_image, make_image_folder, write_recipe
from tests.conftest import errors, tiny_recipe

FAST = ["--num_train_epochs", "1", "--n_bootstrap", "20"]


def _csv_with_groups(root, per_class=(18, 18, 12), group_size=3):
    """A label CSV whose 'group' column puts every 3 consecutive images of a class in one patient."""
    rng = np.random.default_rng(0)
    rows = ["path,label,group"]
    for c, (name, n) in enumerate(zip(("a", "b", "c"), per_class)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            make_image(c, rng).save(root / name / f"{i}.png")
            rows.append(f"{name}/{i}.png,{name},{name}-p{i // group_size}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_folds_disjoint_stratified_groups_whole(tmp_path):
    labels_csv = _csv_with_groups(tmp_path / "imgs")
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(labels_csv), dedupe=False)
    test, held = None, []
    for k in range(3):
        splits = load_splits(load_recipe(recipe, ["--cv_folds", "3", "--cv_fold", str(k)]).data, 0, write=False)
        rows = list(zip([s.path.name + s.label for s in splits.samples], splits.assignment,
                        [s.group for s in splits.samples], [s.label for s in splits.samples]))
        now_test = sorted(r[0] for r in rows if r[1] == "test")
        assert test is None or now_test == test  # one test split for every fold
        test = now_test
        val = [r for r in rows if r[1] == "validation"]
        held.append({r[0] for r in val})
        assert {r[3] for r in val} == {"a", "b", "c"}  # stratified: every class in every fold
        for g in {r[2] for r in rows}:
            assert len({r[1] for r in rows if r[2] == g}) == 1, f"group {g} straddles splits in fold {k}"
        assert splits.report["cv"]["fold_sizes"][k] == len(val)
    pool = 48 - len(test)
    assert sum(map(len, held)) == pool and len(set().union(*held)) == pool  # disjoint, covering the pool


def test_imbalance_ratio_gives_documented_counts(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=(30, 20, 10))
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(folder), dedupe=False)
    plain = load_splits(load_recipe(recipe).data, 0, write=False)
    sub = load_splits(load_recipe(recipe, ["--imbalance_ratio", "0.25"]).data, 0, write=False)
    train = lambda s: {c: sum(1 for x, a in zip(s.samples, s.assignment) if a == "train" and x.label == c)  # noqa: E731
                       for c in s.classes}
    before, after = train(plain), train(sub)
    keep = round(0.25 * before["benign"])
    assert after == {"benign": before["benign"], "malignant": keep, "normal": min(before["normal"], keep)}
    assert sub.report["imbalance"]["train_after"] == after
    for split in ("validation", "test"):  # untouched
        assert [s.path for s in sub.files(split)] == [s.path for s in plain.files(split)]
    only = load_splits(load_recipe(recipe, ["--imbalance_ratio", "0.25", "--minority_classes", '["normal"]']).data, 0,
                       write=False)
    assert train(only)["malignant"] == before["malignant"] and train(only)["normal"] == min(before["normal"], keep)


def test_imbalance_level_names():
    from hf_medtl.studies.imbalance import parse_levels

    assert parse_levels("none,mild,moderate,severe,1:10,0.3") == {
        "none": None, "mild": 0.5, "moderate": 0.2, "severe": 0.05, "1to10": 0.1, "0.3": 0.3}
    with pytest.raises(Exception, match="not a level"):
        parse_levels("extreme")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, tiny_vit):
    root = tmp_path_factory.mktemp("cv")
    images = make_image_folder(root / "images", per_class=(10, 10, 10))
    recipe = tiny_recipe(root, tiny_vit, images, output_dir=str(root / "cv"))
    assert main(["cv", str(recipe), "--folds", "3", *FAST]) == 0
    return root, recipe


def test_cv_summary_matches_fold_files_and_resumes(cv_run):
    root, recipe = cv_run
    out = root / "cv"
    summary = json.loads((out / "summary.json").read_text())
    folds = [json.loads((out / f"fold-{k}" / "metrics.json").read_text()) for k in range(3)]
    for key in ("accuracy", "f1_macro"):
        values = [m["test"][key] for m in folds]
        assert summary["test"][key]["mean"] == pytest.approx(np.mean(values))
        assert summary["test"][key]["sd"] == pytest.approx(np.std(values, ddof=1))
        assert summary["test"][key]["min"] == min(values) and summary["test"][key]["max"] == max(values)
    tests = {(out / f"fold-{k}" / "predictions_test.csv").read_text().split("\n", 1)[0] for k in range(3)}
    assert len(tests) == 1
    oof = list(csv.DictReader(open(out / "predictions_out_of_fold_seed-1.csv")))
    pool = folds[0]["split_counts"]["train"] + folds[0]["split_counts"]["validation"]
    assert len(oof) == len({r["path"] for r in oof}) == pool == summary["out_of_fold"]["1"]["n"]
    assert (out / "plots" / "folds.png").read_bytes()[:4] == b"\x89PNG" and "± " in (out / "report.md").read_text()
    stamps = [(out / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(3)]
    (out / "summary.json").unlink()
    assert main(["cv", str(recipe), "--folds", "3", *FAST]) == 0  # resumed: no fold reruns
    assert [(out / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(3)] == stamps
    assert json.loads((out / "summary.json").read_text())["test"] == summary["test"]
    assert main(["cv", str(recipe), "--folds", "3", *FAST, "--learning_rate", "0.01"]) == 2  # not a silent mix
    assert not (out / ".staging" / "summary.json").exists()


def test_cv_seeds_repeat_on_one_test_split(tmp_path, tiny_vit, capsys):
    images = make_image_folder(tmp_path / "images", per_class=(6, 6, 6))
    recipe = tiny_recipe(tmp_path, tiny_vit, images, output_dir=str(tmp_path / "seeds"))
    assert main(["cv", str(recipe), "--folds", "1", "--seeds", "2", *FAST]) == 0
    assert "2 runs: test accuracy" in capsys.readouterr().out
    runs = [tmp_path / "seeds" / f"seed-{s}" / "run" for s in (1, 2)]
    assert [json.loads((r / "recipe.json").read_text())["seed"] for r in runs] == [1, 2]
    assert len({(r / "predictions_test.csv").read_text().split("\n")[1].split(",")[0] for r in runs}) == 1


def test_compare_paired_significance(cv_run, tmp_path, capsys):
    root, _ = cv_run
    a, b = root / "cv" / "fold-0", root / "cv" / "fold-1"
    shutil.copytree(a, tmp_path / "same")
    assert main(["compare", str(a), str(b), str(tmp_path / "same"), "--output_dir", str(tmp_path), "--n_bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "Paired differences" in out and "McNemar exact" in out and "p (Holm)" in out
    rows = json.loads((tmp_path / "paired.json").read_text())
    same = [r for r in rows if {r["run_a"], r["run_b"]} == {"fold-0", "same"}]
    assert len(same) == 7 and all(r["difference"] == 0 and r["ci"] == [0, 0] and not r["significant"] for r in same)
    assert {r["metric"] for r in rows} >= {"accuracy", "roc_auc", "f1_macro"}
    holm = sorted(r["p_holm"] for r in rows)
    assert all(r["p_holm"] >= r["p_value"] for r in rows) and holm == sorted(holm)


def test_imbalance_study_cli(tmp_path, tiny_vit):
    images = make_image_folder(tmp_path / "images", per_class=(16, 8, 8))
    recipe = tiny_recipe(tmp_path, tiny_vit, images, output_dir=str(tmp_path / "imb"), dedupe=False)
    assert main(["study", "imbalance", str(recipe), "--levels", "none,1:4", *FAST]) == 0
    s = json.loads((tmp_path / "imb" / "summary.json").read_text())
    none, quarter = s["levels"]
    n = none["train_counts"]["benign"]
    assert quarter["train_counts"] == {"benign": n, "malignant": round(n / 4), "normal": round(n / 4)}
    assert len(quarter["recall"]) == 3 and all(len(ci) == 2 for ci in quarter["recall_ci"] if ci)
    assert (tmp_path / "imb" / "plots" / "imbalance.png").is_file() and "1to4" in (tmp_path / "imb" / "report.md").read_text()


@pytest.mark.parametrize("name", ["gaussian_noise", "blur", "contrast", "brightness", "jpeg", "rotation", "downsample"])
def test_perturbation_identity_at_zero(name):
    from hf_medtl.studies.perturbations import perturb

    img = make_image(1, np.random.default_rng(0), size=48, mode="RGB")
    assert np.array_equal(np.asarray(perturb(img, name, 0)), np.asarray(img))
    harsh = perturb(img, name, 5)
    assert harsh.size == img.size and harsh.mode == "RGB" and not np.array_equal(np.asarray(harsh), np.asarray(img))
    assert np.array_equal(np.asarray(perturb(img, name, 3)), np.asarray(perturb(img, name, 3)))  # reproducible


def test_robustness_study_cli(cv_run, tmp_path, capsys):
    root, _ = cv_run
    external = make_image_folder(tmp_path / "ext", per_class=(4, 4, 4), seed=5)
    out = tmp_path / "rob"
    args = ["study", "robustness", str(root / "cv" / "fold-0"), str(external), "--output_dir", str(out),
            "--perturbations", "blur,jpeg", "--severities", "0,2,5", "--n_bootstrap", "20"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [(r["perturbation"], r["severity"]) for r in s["rows"]] == [
        ("blur", 0), ("blur", 2), ("blur", 5), ("jpeg", 0), ("jpeg", 2), ("jpeg", 5)]
    clean = json.loads(main(["evaluate", str(root / "cv" / "fold-0"), str(external), "--output_dir", str(tmp_path / "ev"),
                             "--n_bootstrap", "0"]) == 0 and (tmp_path / "ev" / "report.json").read_text())
    assert s["rows"][0]["accuracy"] == clean["metrics"]["ext"]["accuracy"]  # severity 0 = evaluate's own path
    assert (out / "plots" / "robustness.png").is_file() and not (out / ".partial").exists()
    assert main([*args[:-2], "--severities", "0,9"]) == 2 and "severities 0..5" in errors(capsys)[0]


def test_search_two_trials_writes_rerunnable_best_recipe(tmp_path, tiny_vit, capsys, monkeypatch):
    from hf_medtl.inference import core

    def no_test(*a, **k):
        raise AssertionError("the search predicted a split: only the Trainer's validation pass may run")

    monkeypatch.setattr(core, "dataset_probabilities", no_test)
    from hf_medtl.training.theta import ThetaStar

    firsts, wins = [], ThetaStar.wins

    def first_epochs(self, candidate):  # each trial's first epoch meets no earlier trial's best (its θ* is its own)
        if candidate["epoch"] == 1:
            firsts.append(self.key)
        return wins(self, candidate)

    monkeypatch.setattr(ThetaStar, "wins", first_epochs)
    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    space = {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "threshold": {"choices": [0.5, 0.9]},
             "patience": {"low": 1, "high": 2}}
    recipe = tiny_recipe(tmp_path, tiny_vit, images, output_dir=str(tmp_path / "search"), search_space=space)
    assert main(["study", "search", str(recipe), "--trials", "2", "--num_train_epochs", "1"]) == 0
    out = tmp_path / "search"
    s = json.loads((out / "summary.json").read_text())
    trials = list(csv.DictReader(open(out / "trials.csv")))
    scored = {k: v for k, v in s.items() if k not in ("recipe", "output_dir", "storage")}  # paths hold pytest's "test_..."
    assert s["trials"] == len(trials) == 2 and "test" not in json.dumps(scored).replace("the test split", "")
    assert s["objective"] == "validation accuracy at θ*"
    best = json.loads((out / "best_recipe.json").read_text())
    assert best["learning_rate"] == s["best_params"]["learning_rate"] and best["threshold"] in (0.5, 0.9)
    assert s["best_value"] == max(float(t["value"]) for t in trials)
    assert firsts == [None, None]
    assert (out / "plots" / "slice.png").is_file() and "importance" in s["plots"]
    assert main(["study", "search", str(recipe), "--trials", "2", "--num_train_epochs", "1"]) == 0  # resumed
    assert json.loads((out / "summary.json").read_text())["trials"] == 2
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["finetune", str(out / "best_recipe.json"), "--n_bootstrap", "20"]) == 0
    assert json.loads((out / "best" / "recipe.json").read_text())["patience"] == s["best_params"]["patience"]
    bad = tiny_recipe(tmp_path, tiny_vit, images, search_space={"image_size": {"low": 16, "high": 32}})
    assert main(["study", "search", str(bad), "--trials", "1"]) == 2
    assert "only model, schedule and training keys" in errors(capsys)[0]
