"""`dataset_name`: a Hugging Face dataset as the data source (a save_to_disk folder, parquet files, an imagefolder
with metadata.csv; a Hub id fails in one line offline), built here with `datasets`, never fetched from the Hub."""
import csv
import json
import time

import datasets
import numpy as np
import pytest

from hf_medtl.cli import main
from tests.conftest import CLASSES, errors, make_image, write_recipe


def image_table(n_per_class, seed, patients_from=0, per_patient=3):
    """Rows of distinct learnable images (class index c, so that a ClassLabel maps them) and patient ids, each
    patient's images of one class."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "label": [], "patient_id": []}
    for c in range(len(CLASSES)):
        for i in range(n_per_class):
            rows["image"].append(make_image(c, rng))
            rows["label"].append(c)
            rows["patient_id"].append(f"P{patients_from + c * 10 + i // per_patient:03d}")
    return rows


def class_label_dataset(rows):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES)),
                                  "patient_id": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


def manifest(out):
    return list(csv.DictReader(open(out / "split_manifest.csv")))


def test_save_to_disk_keeps_its_splits_and_patients(tmp_path, capsys):
    train, val, test = image_table(12, 1), image_table(4, 2, patients_from=100), image_table(4, 3, patients_from=200)
    train["patient_id"][:2] = ["P200", "P200"]  # a test patient also in the dataset's own train split
    folder = tmp_path / "sd"
    datasets.DatasetDict(train=class_label_dataset(train), validation=class_label_dataset(val),
                         test=class_label_dataset(test)).save_to_disk(str(folder))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "column 'patient_id' looks like a patient id" in line and "group_column 'patient_id'" in line

    assert main(["check-data", str(recipe), "--group_column", "patient_id"]) == 0
    rows = manifest(tmp_path / "out")
    assert len(rows) == 36 + 12 + 12 and {r["label"] for r in rows} == set(CLASSES)  # ClassLabel names, not ids
    # The dataset's own splits are kept: its test and validation rows all stay where they are.
    for split in ("validation", "test"):
        assert {r["split"] for r in rows if f"::{split}/" in r["path"]} == {split}
    # The shared patient stays on the test side: its two training images are left out, as copies of test images are.
    train_rows = [r for r in rows if "::train/" in r["path"]]
    assert [r["split"] for r in train_rows[:2]] == ["excluded"] * 2
    assert {r["split"] for r in train_rows[2:]} == {"train"}
    by_group = {}
    for r in rows:
        if r["split"] != "excluded":
            by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["split_counts"] == {"train": 34, "validation": 12, "test": 12}
    assert report["leakage_groups"]["patient_groups"] == 12 + 6 + 6 and not report["leakage_groups"]["spanning_labels"]


def test_a_dataset_with_only_train_is_split_by_patient(tmp_path):
    folder = tmp_path / "only_train"
    class_label_dataset(image_table(12, 4)).save_to_disk(str(folder))  # a Dataset, not a DatasetDict
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    rows = manifest(tmp_path / "out")
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert len(by_group) == 12 and all(len(s) == 1 for s in by_group.values())


@pytest.fixture
def parquet_dataset(tmp_path):
    """train.parquet and test.parquet (labels as strings), as the Hub's parquet exports are laid out."""
    folder = tmp_path / "pq"
    folder.mkdir()
    for split, n, seed in (("train", 14, 5), ("test", 5, 6)):
        rows = image_table(n, seed)
        rows["label"] = [CLASSES[c] for c in rows["label"]]
        del rows["patient_id"]
        datasets.Dataset.from_dict(rows, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("string")})).to_parquet(str(folder / f"{split}.parquet"))
    return folder


def test_parquet_finetune_then_evaluate(tmp_path, parquet_dataset, tiny_vit, capsys):
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), dataset_name=str(parquet_dataset),
                          num_train_epochs=1, image_size=24, n_bootstrap=0, per_device_train_batch_size=8,
                          seed=1, output_dir=str(run_dir), disable_tqdm=True)
    assert main(["finetune", str(recipe)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split_counts"]["test"] == 15 and metrics["classes"] == list(CLASSES)  # its own test split
    card = (run_dir / "README.md").read_text()
    assert "datasets:" not in card.split("---")[1]  # a local folder is never presented as a Hub dataset id

    ev = tmp_path / "ev"
    assert main(["evaluate", str(run_dir), str(parquet_dataset), "--split", "test", "--output_dir", str(ev),
                 "--n_bootstrap", "0"]) == 0
    scored = json.loads((ev / "report.json").read_text())["metrics"]["pq"]
    assert scored["n"] == 15 and scored["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), str(parquet_dataset), "--split", "validation",
                 "--output_dir", str(tmp_path / "ev2")]) == 2
    [line] = errors(capsys)
    assert "no 'validation' split; it has train, test" in line

    # A Hub id as dataset_name is the card's dataset id (the data itself is not read to write a card).
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.hub.card import render_model_card

    hub_recipe = load_recipe(recipe, ["--dataset_name", "someorg/chest-xray"])
    card = str(render_model_card(hub_recipe, metrics))
    assert "datasets:\n- someorg/chest-xray" in card


def test_imagefolder_with_metadata_csv(tmp_path):
    folder = tmp_path / "imf"
    folder.mkdir()
    rows = image_table(8, 7)
    lines = ["file_name,label,site"]
    for i, (img, c) in enumerate(zip(rows["image"], rows["label"])):
        img.save(folder / f"img_{i:03d}.png")
        lines.append(f"img_{i:03d}.png,{CLASSES[c]},site{i % 2}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    got = manifest(tmp_path / "out")
    # The files are read where they lie (by the toolkit's own decode), split by the ratios as a data_dir is.
    assert sorted(r["path"] for r in got) == [f"img_{i:03d}.png" for i in range(24)]
    assert {r["split"] for r in got} == {"train", "validation", "test"} and {r["label"] for r in got} == set(CLASSES)


def test_bad_inputs_are_one_line(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "no_image_column"
    rows = image_table(4, 8)
    rows["img"] = rows.pop("image")
    del rows["patient_id"]
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "no column 'image' (set image_column" in line and "it has label, img" in line
    assert main(["check-data", str(recipe), "--image_column", "img"]) == 0

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert main(["check-data", str(recipe), "--dataset_name", "someorg/not-here"]) == 2
    assert time.monotonic() - start < 5
    [line] = errors(capsys)
    assert "dataset_name 'someorg/not-here'" in line and "local copy" in line

    assert main(["check-data", str(recipe), "--data_dir", str(tmp_path)]) == 2
    [line] = errors(capsys)
    assert "exactly one data source" in line and "data_dir, dataset_name" in line
