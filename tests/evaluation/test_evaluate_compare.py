"""`hf-medtl evaluate` and `hf-medtl compare` on saved runs of tiny models."""
import csv
import shutil
from pathlib import Path
import json

import numpy as np
import pytest

from hf_medtl.cli import main
from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import make_image_folder
from tests.conftest import tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_vit, tiny_timm):
    root = tmp_path_factory.mktemp("runs")
    images = make_image_folder(root / "images")
    runs = []
    for name, model, extra in (("vit", tiny_vit, {}), ("timm", tiny_timm, {"image_size": 24})):
        (root / name).mkdir()
        run(load_recipe(tiny_recipe(root / name, model, images, num_train_epochs=2, **extra)))
        runs.append(root / name / "run")
    return runs


def test_evaluate_folder_writes_report(two_runs, tmp_path, capsys):
    external = make_image_folder(tmp_path / "external", per_class=(4, 5, 6), seed=9)
    assert main(["evaluate", str(two_runs[1]), str(external), "--output_dir", str(tmp_path / "ev"),
                 "--n_bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "15 images: accuracy" in out
    # The last line: where the command's time went, phase by phase (hf_medtl/timings.py).
    last = out.strip().splitlines()[-1]
    assert last.startswith("timings: ") and last.endswith("s"), last
    for phase in ("model load", "data", "image cache", "scoring", "report+plots", "| total "):
        assert phase in last, last
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    m = report["metrics"]["external"]
    assert m["n"] == 15 and m["per_class"]["support"] == [4, 5, 6] and m["n_bootstrap"] == 200
    assert "| Accuracy |" in (tmp_path / "ev" / "report.md").read_text()
    for png in report["plots"]:
        assert (tmp_path / "ev" / png).read_bytes()[:8] == PNG
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))
    assert len(rows) == 15 and {"path", "label", "predicted", "p_benign"} <= set(rows[0])


def test_evaluate_subset_of_classes_and_default_output_dir(two_runs, tmp_path):
    external = make_image_folder(tmp_path / "two_classes", per_class=(3, 3), classes=("malignant", "normal"))
    assert main(["evaluate", str(two_runs[0]), str(external), "--n_bootstrap", "0"]) == 0
    out = two_runs[0].parent / "run_eval_two_classes"
    assert json.loads((out / "report.json").read_text())["metrics"]["two_classes"]["per_class"]["support"] == [0, 3, 3]


def test_evaluate_class_mismatch_is_one_clear_line(two_runs, tmp_path, capsys):
    external = make_image_folder(tmp_path / "other", per_class=(3, 3), classes=("benign", "tumour"))
    assert main(["evaluate", str(two_runs[0]), str(external)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "['tumour']" in err[0] and "benign" in err[0]
    assert main(["evaluate", str(tmp_path), str(external)]) == 2
    assert "not a saved model" in capsys.readouterr().err


def test_evaluate_npz_and_csv(two_runs, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 12)
    images = rng.integers(0, 255, (12, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", train_images=images, train_labels=labels[:, None],
             test_images=images, test_labels=labels[:, None])
    assert main(["evaluate", str(two_runs[1]), str(tmp_path / "tiny.npz"), "--output_dir", str(tmp_path / "npz")]) == 0
    m = json.loads((tmp_path / "npz" / "report.json").read_text())["metrics"]["tiny"]
    assert m["n"] == 12 and sum(m["per_class"]["support"]) == 12
    assert main(["evaluate", str(two_runs[1]), str(tmp_path / "tiny.npz"), "--split", "val"]) == 2

    folder = make_image_folder(tmp_path / "csvimgs", per_class=(2, 2, 2))
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(folder.rglob("*.*"))))
    assert main(["evaluate", str(two_runs[1]), str(tmp_path / "labels.csv"), "--output_dir", str(tmp_path / "csv")]) == 0
    assert json.loads((tmp_path / "csv" / "report.json").read_text())["metrics"]["labels"]["n"] == 6


def test_compare_tabulates_runs(two_runs, tmp_path, capsys):
    assert main(["compare", *map(str, two_runs), "--output_dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.count("| images |") == 2 and "Test Acc (95% CI)" in table and "tiny_vit" in table
    rows = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    metrics = json.loads((two_runs[0] / "metrics.json").read_text())
    vit = next(r for r in rows if "vit" in r["model"])
    assert float(vit["test_acc"]) == metrics["test"]["accuracy"] and int(vit["epochs"]) == metrics["epochs_run"]
    assert main(["compare", str(tmp_path)]) == 2


def test_compare_puts_an_external_evaluation_beside_the_internal_test(two_runs, tmp_path, capsys):
    """Runs and evaluate outputs side by side; two evaluations of the same external images get the paired tests."""
    external = make_image_folder(tmp_path / "external", per_class=(4, 4, 4), seed=11)
    for k, run_dir in enumerate(two_runs):
        assert main(["evaluate", str(run_dir), str(external), "--output_dir", str(tmp_path / f"ev{k}"),
                     "--n_bootstrap", "0"]) == 0
    capsys.readouterr()
    argv = ["compare", *map(str, two_runs), str(tmp_path / "ev0"), str(tmp_path / "ev1"), "--output_dir", str(tmp_path / "cmp")]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "comparison.csv")))
    assert sorted(r["dataset"] for r in rows) == ["external", "external", "images", "images"]
    ev0 = json.loads((tmp_path / "ev0" / "report.json").read_text())["metrics"]["external"]
    [row0] = [r for r in rows if r["run"] == str(tmp_path / "ev0")]
    assert float(row0["test_acc"]) == ev0["accuracy"] and row0["epochs"] == "" and row0["model"] == "run"
    pairs = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert {(p["run_a"], p["run_b"]) for p in pairs} >= {("ev0", "ev1")}  # same images: paired; internal vs external: not
    assert not any({"ev0", "run"} == {p["run_a"], p["run_b"]} for p in pairs)


def test_evaluate_reads_a_csv_with_the_runs_patient_column_and_names_its_flag(tmp_path, tiny_timm, capsys):
    """A run trained from a CSV with a patient column evaluates that CSV as it read it (its recipe.json's
    group_column): exit 0, the run's own test probabilities. A CSV whose patient column the run did not name: one
    line naming --group_column, which the command has; with it, exit 0."""
    import csv

    from hf_medtl.cli import main
    from tests.conftest import assert_evaluation_matches_run, errors

    images = make_image_folder(tmp_path / "images", per_class=(8, 8, 8))
    files = sorted(p for p in images.rglob("*") if p.is_file())
    with open(images / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "diagnosis", "ptid"])
        for i, p in enumerate(files):
            w.writerow([str(p.relative_to(images)), p.parent.name, f"P{i // 2:03d}"])
    recipe = tiny_recipe(tmp_path, tiny_timm, images, data_dir=None, csv_file=str(images / "labels.csv"),
                         path_column="file", label_column="diagnosis", group_column="ptid", num_train_epochs=1,
                         image_size=24, n_bootstrap=0)
    assert main(["finetune", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), str(images / "labels.csv"), "--output_dir", str(tmp_path / "ev"),
                 "--n_bootstrap", "0"]) == 0
    with open(tmp_path / "run" / "predictions_test.csv") as f:
        run_rows = list(csv.DictReader(f))
    assert_evaluation_matches_run(tmp_path / "ev" / "predictions.csv", run_rows)
    # another CSV of the same images whose patient column is named otherwise
    with open(images / "labels.csv") as f, open(images / "other.csv", "w") as g:
        g.write(f.read().replace("ptid", "subject"))
    assert main(["evaluate", str(tmp_path / "run"), str(images / "other.csv"), "--output_dir", str(tmp_path / "ev2"),
                 "--n_bootstrap", "0"]) == 2
    [line] = errors(capsys)  # the run's group column is not in this CSV: named by the flag that changes it
    assert line.endswith("--group_column 'ptid' is not a column; it has file, diagnosis, subject")
    assert main(["evaluate", str(tmp_path / "run"), str(images / "other.csv"), "--output_dir", str(tmp_path / "ev2"),
                 "--n_bootstrap", "0", "--group_column", "subject"]) == 0


def test_a_failed_re_evaluation_leaves_the_previous_one_whole_and_a_live_one_is_not_mixed(trained_run, tmp_path,
                                                                                           capsys, monkeypatch):
    """evaluate writes into a staging folder, committed at the end (report.json last), inside the folder's lock:
    a re-evaluation that fails after its predictions (a full disk) leaves the previous evaluation's files as they
    were, with one line naming the file; another live process in the folder: one line, nothing written."""
    import errno
    import subprocess
    import sys

    from hf_medtl.evaluation import report
    from tests.conftest import errors

    out = tmp_path / "ev"
    images = trained_run.parent / "images"
    assert main(["evaluate", str(trained_run), str(images), "--output_dir", str(out), "--n_bootstrap", "0"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("predictions.csv") in before and Path("report.json") in before

    def full_disk(directory, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(directory) / "report.json"))

    monkeypatch.setattr(report, "write_report", full_disk)
    (tmp_path / "other").mkdir()
    for c in ("benign", "malignant"):
        shutil.copytree(images / c, tmp_path / "other" / c)
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), str(tmp_path / "other"), "--output_dir", str(out)]) == 2
    [line] = errors(capsys)
    assert "report.json: no space left on the device" in line
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".staging" not in p.parts}
    assert after == before  # the old evaluation, whole; the new predictions only in .staging
    monkeypatch.undo()

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".hf_medtl.lock").write_text(str(holder.pid))
        assert main(["evaluate", str(trained_run), str(images), "--output_dir", str(out)]) == 2
        [line] = errors(capsys)
        assert "is in use by another hf_medtl run" in line and str(holder.pid) in line
    finally:
        holder.kill()
        holder.wait()
