"""Issue 35, items 1-3, through the CLI on generated datasets: splits whose labels disagree with the ClassLabel
names stop before any model is loaded; patient ids are one id whatever type a reader gives (7 == 7.0 == "7"),
and a missing id is refused naming the column and the row; a dataset's relative image paths are its own folder's
files (never the working directory's), inside it unless allow_paths_outside_root."""
import contextlib
import csv

import datasets
import numpy as np
import pytest

from hf_medtl.cli import main
from tests.conftest import CLASSES, errors, make_image, make_image_folder, write_recipe


def table(n_per_class, seed, label_as=None, patients=None):
    """{'image', 'label', 'patient_id'} columns: distinct learnable images; labels as class ids (or ``label_as``
    of the class index); ``patients(c, i)`` each row's id."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "label": [], "patient_id": []}
    for c in range(len(CLASSES)):
        for i in range(n_per_class):
            rows["image"].append(make_image(c, rng))
            rows["label"].append(label_as(c) if label_as else c)
            rows["patient_id"].append(patients(c, i) if patients else f"P{c}{i // 3}")
    return rows


def dataset(rows, label=None, patient=datasets.Value("string")):
    return datasets.Dataset.from_dict(rows, features=datasets.Features({
        "image": datasets.Image(), "label": label or datasets.ClassLabel(names=list(CLASSES)), "patient_id": patient}))


def manifest(out):
    return list(csv.DictReader(open(out / "split_manifest.csv")))


# -- 1. labels that disagree with the ClassLabel names ----------------------------------------------------------
@pytest.mark.parametrize("test_labels", ["ints", "other strings"])
def test_a_split_that_is_no_classlabel_stops_before_the_model(tmp_path, capsys, tiny_vit, test_labels,
                                                             hf_medtl_log):
    folder = tmp_path / "sd"
    if test_labels == "ints":  # the test split re-exported with the ClassLabel's ids as plain integers
        test = dataset(table(4, 2), label=datasets.Value("int64"))
    else:  # ... or with other names for the classes
        test = dataset(table(4, 2, label_as=lambda c: f"class_{c}"), label=datasets.Value("string"))
    datasets.DatasetDict(train=dataset(table(9, 1)), test=test).save_to_disk(str(folder))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), group_column="patient_id",
                          model_name_or_path=str(tiny_vit), num_train_epochs=1, image_size=24, n_bootstrap=0,
                          output_dir=str(tmp_path / "out"), disable_tqdm=True)
    for command in ("check-data", "finetune"):
        assert main([command, str(recipe)]) == 2, command
        [line] = errors(capsys)
        assert "split 'test' has labels" in line and "ClassLabel: benign, malignant, normal" in line, line
        assert ("'0', '1', '2'" in line and "class ids" in line) if test_labels == "ints" else "'class_0'" in line
        assert "cast_column('label'" in line
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not any(str(tiny_vit) in m for m in hf_medtl_log.messages)  # no model was loaded


def test_splits_that_share_no_class_stop(tmp_path, capsys):
    folder = tmp_path / "pq"
    folder.mkdir()
    string = datasets.Value("string")
    dataset(table(6, 3, label_as=lambda c: CLASSES[c]), label=string).to_parquet(str(folder / "train.parquet"))
    dataset(table(3, 4, label_as=str), label=string).to_parquet(str(folder / "test.parquet"))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "split 'test' labels ('0', '1', '2') share no class with split 'train'" in line


# -- 2. patient ids: one id whatever the type --------------------------------------------------------------------
def test_int_and_float_patient_ids_are_one_patient(tmp_path, capsys):
    """Patient 7 is int64 7 in train and float64 7.0 in test: its training images must leave train (the dataset's
    own test split keeps it), as they do for a shared string id."""
    train = dataset(table(9, 1, patients=lambda c, i: 7 if (c, i) == (0, 0) else 100 + 10 * c + i // 3),
                    patient=datasets.Value("int64"))
    test = dataset(table(3, 2, patients=lambda c, i: 7.0 if c == 0 else 200.0 + c), patient=datasets.Value("float64"))
    folder = tmp_path / "sd"
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(folder))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    rows = manifest(tmp_path / "out")
    seven = [r for r in rows if r["group"] == "7"]
    assert len(seven) == 1 + 3 and not any(r["group"] == "7.0" for r in rows)
    assert [r["split"] for r in seven if "::train/" in r["path"]] == ["excluded"]
    assert {r["split"] for r in seven if "::test/" in r["path"]} == {"test"}
    assert {r["group"] for r in rows if "::test/" in r["path"]} == {"7", "201", "202"}


def test_a_missing_patient_id_is_refused_naming_column_and_row(tmp_path, capsys):
    test = dataset(table(3, 2, patients=lambda c, i: float("nan") if (c, i) == (1, 2) else float(300 + c)),
                   patient=datasets.Value("float64"))
    folder = tmp_path / "sd"
    datasets.DatasetDict(train=dataset(table(6, 1)), test=test).save_to_disk(str(folder))
    recipe = write_recipe(tmp_path / "r.json", dataset_name=str(folder), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "split 'test', row 5: no patient id in group column 'patient_id' (nan)" in line
    assert "label" not in line.split("no patient id")[1].replace("group_column", "")


def patient_csv(tmp_path, ids):
    """3 classes x 6 images, with ``ids(c, i)`` as each row's patient cell."""
    images = make_image_folder(tmp_path / "imgs", per_class=(6, 6, 6))
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for c, name in enumerate(CLASSES):
            for i, f in enumerate(sorted((images / name).iterdir())):
                w.writerow([str(f.relative_to(tmp_path)), name, ids(c, i)])
    return tmp_path / "labels.csv"


def test_csv_ids_3_and_3_0_are_one_patient(tmp_path):
    # Each patient's first image written "3", the others "3.0" (a column that went through a float on the way).
    table_ = patient_csv(tmp_path, lambda c, i: f"{10 * c + i // 2}" + ("" if i % 2 == 0 else ".0"))
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table_), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    by_patient = {}
    for r in manifest(tmp_path / "out"):
        by_patient.setdefault(r["group"], []).append(r["split"])
    assert len(by_patient) == 9 and all(len(s) == 2 and len(set(s)) == 1 for s in by_patient.values())


def test_csv_empty_patient_id_is_refused(tmp_path, capsys):
    table_ = patient_csv(tmp_path, lambda c, i: "" if (c, i) == (2, 4) else f"P{c}{i // 2}")
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table_), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert f"csv_file '{table_}', line {2 + 12 + 4}: no patient id in group column 'patient_id' (empty)" in line
    assert not (tmp_path / "out" / "data_report.json").exists()


# -- 3. a dataset's relative image paths --------------------------------------------------------------------------
def path_dataset(paths, labels):
    """A dataset whose image cells hold only a path (no bytes), as a dataset built from files and saved is."""
    return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))}))


def saved_with_images(folder, kind, paths, labels, images: dict):
    """The dataset saved as ``kind`` at ``folder`` (parquet: folder/train.parquet), ``images`` (name -> PIL) in
    the dataset's folder; returns dataset_name."""
    ds = path_dataset(paths, labels)
    staging = folder.parent / f"{folder.name}_files"
    staging.mkdir()
    for name, img in images.items():
        img.save(staging / name)
    with contextlib.chdir(staging):  # save_to_disk sizes the files by their paths, from the working directory
        if kind == "parquet":
            ds.to_parquet(str(staging / "train.parquet"))
        else:
            ds.save_to_disk(str(folder))
    if kind == "parquet":
        staging.rename(folder)
    else:
        for f in staging.iterdir():
            f.rename(folder / f.name)
    return folder / "train.parquet" if kind == "parquet" else folder


@pytest.mark.parametrize("kind", ["save_to_disk", "parquet"])
def test_relative_paths_are_the_datasets_own_files(tmp_path, monkeypatch, capsys, kind):
    rng = np.random.default_rng(0)
    names = [f"img_{c}_{i}.png" for c in range(len(CLASSES)) for i in range(8)]
    labels = [c for c in range(len(CLASSES)) for _ in range(8)]
    own = {n: make_image(c, rng) for n, c in zip(names, labels)}
    data = saved_with_images(tmp_path / "ds", kind, names, labels, own)
    # parquet keeps each cell's path only; save_to_disk embeds the bytes and keeps the path as the file's name.
    cell = datasets.load_dataset("parquet", data_files=str(data))["train"] if kind == "parquet" else \
        datasets.load_from_disk(str(data))
    cell = cell.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert cell["path"] == names[0] and (cell["bytes"] is None) == (kind == "parquet")
    decoys = tmp_path / "elsewhere"  # a working directory holding files of the same names: other images
    decoys.mkdir()
    for n, c in zip(names, labels):
        make_image((c + 1) % 3, rng, size=32).save(decoys / n)

    def check(cwd, out, *extra):
        monkeypatch.chdir(cwd)
        recipe = write_recipe(tmp_path / "r.json", dataset_name=str(data), group_column=None, output_dir=str(out))
        return main(["check-data", str(recipe), *extra])

    assert check(tmp_path, tmp_path / "a") == 0  # no such files here: the dataset's own are read
    assert check(decoys, tmp_path / "b") == 0  # same-named files here: still the dataset's own
    a, b = manifest(tmp_path / "a"), manifest(tmp_path / "b")
    if kind == "parquet":
        assert sorted(r["path"] for r in a) == sorted(names)
    assert [(r["path"], r["sha1"], r["split"]) for r in a] == [(r["path"], r["sha1"], r["split"]) for r in b]

    if kind != "parquet":
        return
    # A path that leaves the dataset's folder is refused, as a CSV's is, unless allowed.
    make_image(0, rng).save(tmp_path / "outside.png")
    data = saved_with_images(tmp_path / "ds2", kind, ["../outside.png", *names[1:]], labels, own)
    assert check(decoys, tmp_path / "c") == 2
    [line] = errors(capsys)
    assert "row 0: '" in line and "outside.png' lies outside" in line and "allow_paths_outside_root" in line
    assert check(decoys, tmp_path / "c", "--allow_paths_outside_root", "true") == 0
