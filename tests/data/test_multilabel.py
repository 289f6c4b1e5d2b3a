"""Multi-label: both CSV forms, per-label stratification, and a run end to end on generated data with a
pipeline prediction of every label's probability."""
import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from hf_medtl.data.multilabel import read_multilabel_csv
from hf_medtl.data.split import multilabel_assign
from hf_medtl.data.sources import DataError
from hf_medtl.finetune import run
from hf_medtl.config.recipe import load_recipe
from tests.conftest import tiny_recipe

FINDINGS = ("Effusion", "Mass", "Nodule")


def make_multilabel(root, n=60, seed=0, chestxray=False):
    """Images whose findings are bright bands (any subset of three, the empty set included)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        present = [f for f in FINDINGS if rng.random() < 0.4]
        arr = rng.integers(0, 60, (24, 24), dtype=np.uint8)
        for j, f in enumerate(FINDINGS):
            if f in present:
                arr[:, 8 * j:8 * j + 8] += 150
        name = f"{i:05d}_000.png"
        Image.fromarray(arr, "L").save(root / "images" / name)
        rows.append((name, present, f"p{i // 2}"))
    path = root / ("Data_Entry_2017.csv" if chestxray else "labels.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if chestxray:
            w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID"])
            w.writerows([(name, "|".join(p) or "No Finding", 0, g) for name, p, g in rows])
        else:
            w.writerow(["path", *FINDINGS, "group"])
            w.writerows([(f"images/{name}", *[int(x in p) for x in FINDINGS], g) for name, p, g in rows])
    return path


def test_both_csv_forms_read_the_same_findings(tmp_path):
    a, classes_a = read_multilabel_csv(make_multilabel(tmp_path / "a"))
    b, classes_b = read_multilabel_csv(make_multilabel(tmp_path / "b", chestxray=True))
    assert classes_a == classes_b == list(FINDINGS)
    assert [s.label for s in a] == [s.label for s in b] and [s.group for s in a] == [s.group for s in b]
    assert "" in {s.label for s in a}  # "No Finding": the empty set


def test_bad_multilabel_csv_is_one_clear_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("path,Mass,Nodule\nx.png,1,maybe\n")
    with pytest.raises(DataError, match="line 2: column 'Nodule' must be 0 or 1"):
        read_multilabel_csv(path)


def test_stratification_puts_every_label_in_every_split_and_keeps_groups_whole():
    rng = np.random.default_rng(1)
    sets = [[x for x in "ABCDE" if rng.random() < (0.5 if x != "E" else 0.05)] for _ in range(200)]
    groups = [i // 2 for i in range(200)]
    out = multilabel_assign(sets, groups, {"validation": 0.1, "test": 0.1}, seed=0)
    for split in ("train", "validation", "test"):
        assert {x for s, o in zip(sets, out) if o == split for x in s} == set("ABCDE"), split
    assert all(out[2 * g] == out[2 * g + 1] for g in range(100))
    counts = Counter(out)
    assert 14 <= counts["test"] <= 26 and 14 <= counts["validation"] <= 26


def test_multilabel_run_end_to_end_with_a_pipeline_prediction(tmp_path, tiny_timm):
    from transformers import pipeline

    csv_file = make_multilabel(tmp_path / "cxr", n=60, chestxray=True)
    recipe = tiny_recipe(tmp_path, tiny_timm, tmp_path, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         num_train_epochs=3, val_ratio=0.2, test_ratio=0.2, class_weights="balanced",
                         learning_rate=1e-2, augment=False)
    metrics = run(load_recipe(recipe))
    out = tmp_path / "run"
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    test = metrics["test"]
    assert test["label_names"] == list(FINDINGS) and len(test["per_label"]["roc_auc"]) == 3
    assert len(test["youden"]["thresholds"]) == 3 and 0 <= test["youden"]["f1_macro"] <= 1
    assert 0 <= test["accuracy"] <= 1 and test["roc_auc_macro"] is not None
    history = json.loads((out / "history.json").read_text())
    assert all(0 <= h["train_accuracy"] <= 1 for h in history)  # mean per-label accuracy at 0.5
    for name in ("report.md", "report.json", "predictions_test.csv", "README.md", "split_manifest.csv"):
        assert (out / name).stat().st_size > 0
    assert "threshold (Youden, validation)" in (out / "report.md").read_text()
    # Every patient's images in one split.
    with open(out / "split_manifest.csv") as f:
        rows = list(csv.DictReader(f))
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())

    classifier = pipeline("image-classification", model=str(out), function_to_apply="sigmoid", top_k=None)
    preds = classifier(str(csv_file.parent / "images" / "00000_000.png"))
    assert {p["label"] for p in preds} == set(FINDINGS)
    assert sum(p["score"] for p in preds) != pytest.approx(1.0)  # independent probabilities, not a softmax
    assert all(0 <= p["score"] <= 1 for p in preds)



def test_multilabel_bottleneck_on_cached_features(tmp_path, tiny_timm):
    """Seed 001's setting in small: frozen backbone, bottleneck head with L1+L2, class weights, multi-label."""
    csv_file = make_multilabel(tmp_path / "cxr", n=40)
    recipe = tiny_recipe(tmp_path, tiny_timm, tmp_path, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         num_train_epochs=2, val_ratio=0.2, test_ratio=0.2, class_weights="balanced", augment=False,
                         finetune_strategy="linear_probe", head="bottleneck", bottleneck_dim=8, l1_feature_reg=1e-4,
                         l2_feature_reg=1e-3, feature_cache_dir=str(tmp_path / "cache"))
    metrics = run(load_recipe(recipe))
    assert metrics["cached_features"] and len(metrics["test"]["per_label"]["f1"]) == 3
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(h["train_l2_feature_reg"] > 0 for h in history)
    from hf_medtl.cli import main as cli

    # hf-medtl evaluate scores a multi-label model per label, with the thresholds its run chose on validation.
    assert cli(["evaluate", str(tmp_path / "run"), str(csv_file), "--output_dir", str(tmp_path / "ev")]) == 0
    scored = json.loads((tmp_path / "ev" / "report.json").read_text())["metrics"]["test"]
    assert scored["n"] == 40 and scored["label_names"] == metrics["test"]["label_names"]
    assert scored["youden"]["thresholds"] == metrics["validation"]["youden"]["thresholds"]
    assert all(a is None or 0 <= a <= 1 for a in scored["per_label"]["roc_auc"])
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions_test.csv")))
    assert len(rows) == 40 and {f"prob_{c}" for c in scored["label_names"]} <= set(rows[0])
    assert cli(["evaluate", str(tmp_path / "run"), str(tmp_path / "cxr")]) == 2  # a folder: one clear line
    assert cli(["compare", str(tmp_path / "run"), "--output_dir", str(tmp_path / "cmp")]) == 0
    assert "| run | cxr |" in (tmp_path / "cmp" / "comparison.md").read_text()


# Bad multi-label CSVs: each one line naming the file (and the line, where one row is at fault), exit 2, before
# any model is built, and no output that looks like a run. Both forms; several instances of each kind.
CX = "Image Index,Finding Labels,Follow-up #,Patient ID\n"
BAD_CSVS = {
    "chestxray row holding only the Image Index": (CX + "00000_000.png,Mass,0,p0\n00001_000.png\n", "line 3",
                                                   "Finding Labels"),
    "chestxray row without its Patient ID cell": (CX + "00000_000.png,Mass,0,p0\n00001_000.png,Nodule\n", "line 3",
                                                  "Patient ID"),
    "chestxray empty Finding Labels": (CX + "00000_000.png,Mass,0,p0\n00001_000.png,,0,p1\n", "line 3", "empty"),
    "chestxray blank Finding Labels": (CX + "00000_000.png,   ,0,p0\n00001_000.png,Nodule,0,p1\n", "line 2", "empty"),
    "chestxray empty name between separators": (CX + "00000_000.png,Mass||Nodule,0,p0\n", "line 2", "empty finding"),
    "chestxray No Finding with findings": (CX + "00000_000.png,No Finding|Mass,0,p0\n00001_000.png,Nodule,0,p1\n",
                                           "line 2", "No Finding"),
    "chestxray duplicated Finding Labels": ("Image Index,Finding Labels,Finding Labels\n00000_000.png,Mass,Nodule\n",
                                            "['Finding Labels']", "more than once"),
    "duplicated finding column": ("path,Mass,Nodule,Mass\nimages/00000_000.png,1,0,0\n", "['Mass']", "more than once"),
    "duplicated path column": ("path,Mass,Nodule,path\nimages/00000_000.png,1,0,images/00001_000.png\n", "['path']",
                               "more than once"),
    "finding name holding the separator": ("path,Mass|Nodule,Effusion\nimages/00000_000.png,1,0\n", "'Mass|Nodule'",
                                           "separator"),
    "finding name holding the separator among others": ("path,Mass,Nodule,Effusion|Other\nimages/00000_000.png,1,0,0\n",
                                                        "'Effusion|Other'", "separator"),
    "0/1 row missing a finding cell": ("path,Mass,Nodule\nimages/00000_000.png,1,0\nimages/00001_000.png,1\n", "line 3",
                                       "'Nodule'"),
    "0/1 row longer than the header": ("path,Mass,Nodule\nimages/00000_000.png,1,0,1\n", "line 2", "header"),
    "0/1 empty path": ("path,Mass,Nodule\n,1,0\n", "line 2", "'path'"),
    "0/1 unnamed column holding values": ("path,Mass,Nodule,\nimages/00000_000.png,1,0,1\n", "column 4", "no name"),
}


@pytest.mark.parametrize("name", BAD_CSVS)
def test_bad_multilabel_csv_is_one_line_before_any_model(tmp_path, tiny_timm, capsys, name):
    from hf_medtl.cli import main
    from tests.conftest import errors

    make_multilabel(tmp_path / "cxr", n=4)  # the images the rows name
    text, where, what = BAD_CSVS[name]
    bad = tmp_path / "cxr" / "bad.csv"
    bad.write_text(text)
    recipe = tiny_recipe(tmp_path, tiny_timm, tmp_path, data_dir=None, multilabel_csv=str(bad), image_size=24,
                         num_train_epochs=1)
    assert main(["finetune", str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and "bad.csv" in lines[0] and where in lines[0] and what in lines[0], lines
    out = tmp_path / "run"
    assert not (out / "metrics.json").exists() and not (out / "config.json").exists()
    assert not (out / "split_manifest.csv").exists()


def test_no_finding_literal_and_trailing_commas_still_read(tmp_path):
    """Only the literal "No Finding" is the empty set; the official Data_Entry file ends every line with a comma
    (an unnamed, empty column), which stays accepted; so does an unnamed empty column in the 0/1 form."""
    make_multilabel(tmp_path / "cxr", n=3)
    cx = tmp_path / "cxr" / "Data_Entry_2017.csv"
    cx.write_text("Image Index,Finding Labels,Patient ID,\n00000_000.png,No Finding,p0,\n"
                  "00001_000.png,Mass|Nodule,p0,\n00002_000.png, Nodule ,,\n")
    samples, classes = read_multilabel_csv(cx)
    assert classes == ["Mass", "Nodule"]
    assert [(s.label, s.group) for s in samples] == [("", "p0"), ("Mass|Nodule", "p0"), ("Nodule", None)]
    zero_one = tmp_path / "cxr" / "zero_one.csv"
    zero_one.write_text("path,Mass,Nodule,\nimages/00000_000.png,1,1,\nimages/00001_000.png,0,0,\n")
    samples, classes = read_multilabel_csv(zero_one)
    assert classes == ["Mass", "Nodule"] and [s.label for s in samples] == ["Mass|Nodule", ""]
