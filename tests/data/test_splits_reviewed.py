"""Splits a reviewer trusts (issue 31), through `hf-medtl check-data` on generated data: look-alike scans of one
modality do not chain into one near-duplicate group, a split that lacks a class (or a group that swallows the data)
stops the run in one line unless a key allows it, labels written two ways stop it, a patient column is found by its
values (`ptid`, `ID`) as well as by its name, and the manifest names each image's real group."""
import csv
import json

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_medtl.cli import main
from tests.conftest import errors, make_image, write_recipe
from tests.data.organs import class_folders, organ_images, write_organs


def report(out):
    return json.loads((out / "data_report.json").read_text())


def manifest(out):
    return list(csv.DictReader(open(out / "split_manifest.csv")))


def test_lookalike_scans_do_not_chain_and_every_split_has_every_class(tmp_path, capsys):
    """The issue's data as class folders: 96-px organ scans, each its own acquisition. Union-find over near pairs
    joined 445 of 450 into one group (validation and test then held one class); now no near group is wider than
    the thresholds, the largest holds a few images, and the console says how large it is."""
    folders = class_folders(write_organs(tmp_path / "csv", per_class=60), tmp_path / "folders")
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(folders), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    out = capsys.readouterr().out
    r = report(tmp_path / "out")
    largest = r["leakage_groups"]["largest_group"]
    assert largest["of"] == 180 and largest["images"] <= 6, largest
    assert f"largest group {largest['images']} images ({100 * largest['share']:.1f}%)" in out
    assert r["absent_classes"] == {}
    for split, per_class in r["class_counts"].items():
        assert set(per_class) == {"normal", "calcification", "lesion"} and min(per_class.values()) >= 3, split
    # check-data prints the images per split and class
    assert "class         |      train | validation |       test" in out
    assert f"lesion        | {r['class_counts']['train']['lesion']:>10} |" in out
    # every near group is a clique: each pair inside it was compared and is within LINK_SLACK x the thresholds
    for g in r["duplicates"]["near"]:
        assert g["pixel_distance"] <= 1.25 * g["threshold"]


def test_a_group_that_swallows_the_data_stops_the_run(tmp_path, capsys):
    """A threshold so loose that every scan is a 'copy' of every other makes one group of all: one line, exit 2,
    naming its size and share and the keys to change; nothing is split."""
    folders = class_folders(write_organs(tmp_path / "csv", per_class=8), tmp_path / "folders")
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(folders), output_dir=str(tmp_path / "out"),
                          near_duplicate_pixel_distance=2.0)
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "one leakage group holds 24 of the 24 images (100%" in line
    assert "max_group_share 0.2" in line and "near_duplicate_pixel_distance" in line
    assert not (tmp_path / "out" / "split_manifest.csv").exists()
    assert main(["check-data", str(recipe), "--max_group_share", "1.5"]) == 2
    assert "max_group_share 1.5: must lie in (0, 1]" in errors(capsys)[0]


def one_class_one_patient(tmp_path):
    """Three classes of organ scans; every 'lesion' image belongs to one patient, so that patient's group decides
    where the class goes: validation and test get no lesion."""
    (tmp_path / "img").mkdir()
    rows, seen = [], {}
    for k, (img, label, patient) in enumerate(organ_images(per_class=24)):
        seen[label] = seen.get(label, 0) + 1
        if label == "lesion" and seen[label] > 6:
            continue
        Image.fromarray(img).save(tmp_path / "img" / f"{k}.png")
        rows.append([f"img/{k}.png", label, "P-lesion" if label == "lesion" else f"P{patient}"])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "patient"], *rows])
    return tmp_path / "labels.csv"


def test_a_split_without_a_class_stops_before_training_unless_allowed(tmp_path, capsys, hf_medtl_log):
    table = one_class_one_patient(tmp_path)
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), group_column="patient",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "the validation split (" in line and "has no lesion" in line and "the test split (" in line
    assert "set allow_missing_classes true to train anyway" in line
    assert not (tmp_path / "out" / "split_manifest.csv").exists()
    # Allowed: the split is written, and data_report.json and the warning name the absent class.
    assert main(["check-data", str(recipe), "--allow_missing_classes", "true"]) == 0
    assert report(tmp_path / "out")["absent_classes"] == {"validation": ["lesion"], "test": ["lesion"]}
    assert "NOT EVERY CLASS IS SCORED" in hf_medtl_log.text
    # The one patient holds 6 of 54 images (11%): under the default max_group_share, over a stricter one.
    assert main(["check-data", str(recipe), "--allow_missing_classes", "true", "--max_group_share", "0.1"]) == 2
    assert "one leakage group holds 6 of the 54 images (11%: lesion 6; group 'P-lesion')" in errors(capsys)[0]


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_labels_written_two_ways_stop_the_run(tmp_path, capsys, layout):
    table = write_organs(tmp_path / "csv", per_class=6, relabel={12: "Lesion", 13: "Lesion", 14: " lesion"})
    if layout == "csv":
        recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), group_column="ptid",
                              output_dir=str(tmp_path / "out"))
    else:
        recipe = write_recipe(tmp_path / "r.json", data_dir=str(class_folders(table, tmp_path / "folders")),
                              output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    # a CSV's label is stripped (' lesion' is 'lesion'); folders named 'Lesion' and ' lesion' beside 'lesion' clash
    listed = "'Lesion' (2 images) vs 'lesion' (4 images)" if layout == "csv" else \
        "' lesion' (1 images) vs 'Lesion' (2 images) vs 'lesion' (3 images)"
    assert f"labels that differ only in case or surrounding spaces: {listed}; write each class one way" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def id_csv(tmp_path, extra: dict, n_patients=12, per_patient=4):
    """path,label,<extra columns> over 3 classes of small images; ``extra`` maps a column name to a function of
    (row index, patient index) giving its value."""
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for k in range(n_patients * per_patient):
        p = k // per_patient
        c = p % 3
        make_image(c, rng).save(tmp_path / "img" / f"{k}.png")
        rows.append([f"img/{k}.png", "abc"[c], *(f(k, p) for f in extra.values())])
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", *extra], *rows])
    return tmp_path / "t.csv"


@pytest.mark.parametrize("column,value", [("ptid", lambda k, p: f"pt{p:03d}"), ("ID", lambda k, p: str(p + 1)),
                                          ("scan_owner", lambda k, p: f"{p * 7919 % 10007:x}-{p}")])
def test_a_patient_column_is_found_by_its_values(tmp_path, capsys, column, value):
    """ptid, ID (integers: an id by its name) and a column with no telling name at all: each repeats its values
    like a patient id (4 rows per value, 12 values) and stops the run until group_column names it or says null."""
    table = id_csv(tmp_path, {column: value, "age": lambda k, p: str(40 + p % 5), "image_id": lambda k, p: f"im{k}"})
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert f"column '{column}' looks like a patient id (its values: 12 values, 4 rows each (median)" in line
    assert f"set group_column '{column}'" in line and "or group_column null if it is not one" in line
    assert main(["check-data", str(recipe), "--group_column", column]) == 0
    rows = manifest(tmp_path / "out")
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["group"], set()).add(r["split"])
    assert sorted(by_patient) == sorted({value(k, k // 4) for k in range(48)})  # the real ids, not g0, g1...
    assert all(len(s) == 1 for s in by_patient.values())
    assert main(["check-data", str(recipe), "--group_column", "null"]) == 0


def test_measurements_categories_and_per_image_ids_are_not_patients(tmp_path):
    """Numbers with decimals, an age, a category of a few values and an id per image are left alone."""
    table = id_csv(tmp_path, {"age": lambda k, p: str(30 + p % 7), "dose": lambda k, p: f"{1.5 + p % 4 * 0.25}",
                              "view": lambda k, p: "AP" if k % 2 else "PA", "image_id": lambda k, p: f"IM{k:04d}",
                              "site": lambda k, p: f"hospital {p % 3}"})
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0


def test_a_dataset_column_is_found_by_its_values(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = {"image": [make_image(k % 3, rng) for k in range(36)], "label": [k % 3 for k in range(36)],
            "ID": [k // 3 for k in range(36)]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "ID": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(tmp_path / "ds"), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    assert "column 'ID' looks like a patient id (its values: 12 values, 3 rows each" in errors(capsys)[0]


def test_the_manifest_names_real_groups(tmp_path):
    """Patients by their id, copies by their first file, an image alone by its own path (without a patient
    column: an empty patient cell is refused, tests/data/test_ids_paths_labels.py)."""
    table = id_csv(tmp_path, {"subject": lambda k, p: f"S{p}" if k < 24 else f"U{k}"})
    big = Image.open(tmp_path / "img" / "30.png").resize((80, 80))
    big.save(tmp_path / "img" / "30.png")
    big.save(tmp_path / "img" / "30_copy.jpg", quality=95)
    with open(table, "a", newline="") as f:
        csv.writer(f).writerow(["img/30_copy.jpg", "abc"[(30 // 4) % 3], "U30"])
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), group_column="subject",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    group = {r["path"]: r["group"] for r in manifest(tmp_path / "out")}
    assert group["img/0.png"] == group["img/3.png"] == "S0" and group["img/23.png"] == "S5"
    assert group["img/30.png"] == group["img/30_copy.jpg"] == "U30" and group["img/40.png"] == "U40"
    assert main(["check-data", str(recipe), "--group_column", "null"]) == 0
    group = {r["path"]: r["group"] for r in manifest(tmp_path / "out")}
    assert group["img/30.png"] == group["img/30_copy.jpg"] == "copies of img/30.png"
    assert group["img/40.png"] == "img/40.png"


def test_finetune_on_lookalike_scans_scores_every_class(tmp_path, tiny_timm):
    """The issue's run, small: class folders of look-alike organ scans through `hf-medtl finetune`. Its test split
    holds every class (the chained group had left it one class, and the run reported accuracy 1.0 with the
    interval 1.0-1.0), so the headline is a measurement over all three."""
    folders = class_folders(write_organs(tmp_path / "csv", per_class=30), tmp_path / "folders")
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_timm), data_dir=str(folders),
                          image_size=32, num_train_epochs=1, per_device_train_batch_size=16, seed=1,
                          output_dir=str(tmp_path / "run"), disable_tqdm=True)
    assert main(["finetune", str(recipe)]) == 0
    with open(tmp_path / "run" / "predictions_test.csv") as f:
        truth = [r["label"] for r in csv.DictReader(f)]
    assert sorted(set(truth)) == ["calcification", "lesion", "normal"] and min(map(truth.count, set(truth))) >= 2
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert test["ci"]["accuracy"][1] - test["ci"]["accuracy"][0] > 0


def test_an_allowed_missing_class_leads_the_console_metrics_and_card(tmp_path, tiny_timm, capsys):
    """allow_missing_classes: the run trains, and metrics.json, the console (before the headline) and the model
    card (first in its results) say which class a split lacks."""
    import json

    from tests.conftest import tiny_recipe

    table = one_class_one_patient(tmp_path)
    recipe = tiny_recipe(tmp_path, tiny_timm, None, data_dir=None, csv_file=str(table), group_column="patient",
                         allow_missing_classes=True, num_train_epochs=1, image_size=32, n_bootstrap=0)
    assert main(["finetune", str(recipe)]) == 0
    out = capsys.readouterr().out.splitlines()
    warning = [i for i, line in enumerate(out) if line.startswith("WARNING: NOT EVERY CLASS IS SCORED")]
    headline = [i for i, line in enumerate(out) if line.startswith("test accuracy")]
    assert warning and headline and warning[-1] < headline[0] and "test split has no image of lesion" in out[warning[-1]]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["absent_classes"] == {"validation": ["lesion"], "test": ["lesion"]}
    card = (tmp_path / "run" / "README.md").read_text()
    results = card.index("## Results")
    assert card.index("Not every class is scored: the test split has no image of lesion", results) < card.index(
        "Held-out test split", results)
