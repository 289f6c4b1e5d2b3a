"""Patients whatever the CSV calls them: group_column / path_column / label_column, a patient-like column that is
not used stops the run in one line, and the console says how many patient groups were kept within one split."""
import csv
import json

from hf_medtl.cli import main
from tests.conftest import errors, make_image_folder, write_recipe


def patient_csv(tmp_path, header=("path", "label", "patient_id"), patients=12):
    """3 classes x 12 images, 4 images per patient (a patient's images share a class, as one scan series would)."""
    images = make_image_folder(tmp_path / "imgs", per_class=(16, 16, 16))
    rows = []
    for k, f in enumerate(sorted(p for p in images.rglob("*") if p.is_file())):
        rows.append([str(f.relative_to(tmp_path)), f.parent.name, f"P{k // 4:03d}"])
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return tmp_path / "labels.csv"


def split_of_patients(out):
    rows = list(csv.DictReader(open(out / "split_manifest.csv")))
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["group"], set()).add(r["split"])
    return by_patient


def test_an_unused_patient_column_stops_the_run(tmp_path, capsys):
    table = patient_csv(tmp_path)
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "column 'patient_id' looks like a patient id" in line and "group_column 'patient_id'" in line
    assert not (tmp_path / "out" / "data_report.json").exists()


def test_group_column_keeps_each_patient_in_one_split(tmp_path, capsys, hf_medtl_log):
    table = patient_csv(tmp_path)
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), group_column="patient_id",
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    by_patient = split_of_patients(tmp_path / "out")
    assert len(by_patient) == 12 and all(len(s) == 1 for s in by_patient.values())
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["leakage_groups"]["patient_groups"] == 12
    assert "12 patient groups kept within one split" in capsys.readouterr().out


def test_group_column_null_says_there_are_no_patients(tmp_path):
    table = patient_csv(tmp_path)
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), group_column=None, output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["leakage_groups"]["patient_groups"] == 0


def test_other_column_names(tmp_path, capsys):
    table = patient_csv(tmp_path, header=("file", "diagnosis", "Subject"))
    recipe = write_recipe(tmp_path / "r.json", csv_file=str(table), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    assert "needs columns path,label (set path_column / label_column" in errors(capsys)[0]
    argv = ["check-data", str(recipe), "--path_column", "file", "--label_column", "diagnosis"]
    assert main(argv) == 2 and "column 'Subject' looks like a patient id" in errors(capsys)[0]
    assert main([*argv, "--group_column", "Subject"]) == 0
    assert all(len(s) == 1 for s in split_of_patients(tmp_path / "out").values())
    assert main([*argv, "--group_column", "subject_id"]) == 2
    assert "group_column 'subject_id' is not a column" in errors(capsys)[0]
