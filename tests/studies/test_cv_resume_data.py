"""`hf-medtl cv` resumed after the data changed: a fold that finished on other data (images added, or pixels
changed in place under the same name) is run again on the current data, never reused; on unchanged data the
finished folds are reused as they are."""
import csv
import json

import numpy as np

from hf_medtl.cli import main
from tests.conftest import make_image, make_image_folder, tiny_recipe

FAST = ["--num_train_epochs", "1", "--n_bootstrap", "0", "--image_size", "24"]


def _manifest(fold_dir):
    with open(fold_dir / "split_manifest.csv", newline="") as f:
        return {r["path"]: (r["split"], r["sha1"]) for r in csv.DictReader(f)}


def _state(out):
    """Per fold: (metrics.json's mtime, manifest); and the pooled out-of-fold paths."""
    folds = [(out / f"fold-{k}" / "metrics.json").stat().st_mtime_ns for k in range(2)]
    with open(out / "predictions_out_of_fold_seed-1.csv", newline="") as f:
        oof = [r["path"] for r in csv.DictReader(f)]
    return folds, [_manifest(out / f"fold-{k}") for k in range(2)], oof


def _check_consistent(out, images):
    """Every fold trained on the files now in ``images``; the folds' validation splits partition the pool."""
    _, manifests, oof = _state(out)
    files = sorted(str(p.relative_to(images)) for p in images.rglob("*") if p.is_file())
    for m in manifests:
        assert sorted(m) == files
        assert {p: s for p, (s, _) in m.items() if s == "test"} == {p: s for p, (s, _) in manifests[0].items()
                                                                  if s == "test"}
    pool = sorted(p for p, (s, _) in manifests[0].items() if s != "test")
    assert sorted(oof) == pool and len(set(oof)) == len(oof)
    assert json.loads((out / "summary.json").read_text())["out_of_fold"]["1"]["n"] == len(pool)


def _first_cv(tmp_path, model):
    images = make_image_folder(tmp_path / "images", per_class=(5, 5, 5))
    out = tmp_path / "cv"
    recipe = tiny_recipe(tmp_path, model, images, output_dir=str(out), augment=False)
    assert main(["cv", str(recipe), "--folds", "2", *FAST]) == 0
    return images, out, recipe, _state(out)[0]


def test_cv_reruns_folds_that_finished_before_images_were_added(tmp_path, tiny_timm, hf_medtl_log):
    images, out, recipe, first = _first_cv(tmp_path, tiny_timm)
    rng = np.random.default_rng(7)  # images added to every class: a different pool (and test split)
    for c, name in enumerate(("benign", "malignant", "normal")):
        for i in range(2):
            make_image(c, rng).save(images / name / f"added_{i}.png")
    assert main(["cv", str(recipe), "--folds", "2", *FAST]) == 0
    second, _, _ = _state(out)
    assert all(a != b for a, b in zip(first, second)), "a fold of the old data was reused"
    assert "finished on other data (6 image(s) added" in hf_medtl_log.text
    _check_consistent(out, images)


def test_cv_reruns_folds_whose_pixels_changed_and_reuses_unchanged_ones(tmp_path, tiny_timm):
    images, out, recipe, first = _first_cv(tmp_path, tiny_timm)
    # The same files under the same names, one with other pixels: its sha1 differs, so every fold reruns.
    before = _manifest(out / "fold-0")
    make_image(1, np.random.default_rng(99)).save(images / "malignant" / "malignant_000.png")
    assert main(["cv", str(recipe), "--folds", "2", *FAST]) == 0
    second, _, _ = _state(out)
    assert all(a != b for a, b in zip(first, second)), "a fold trained on the old pixels was reused"
    assert _manifest(out / "fold-0")["malignant/malignant_000.png"][1] != before["malignant/malignant_000.png"][1]
    _check_consistent(out, images)
    # Nothing changed since: the finished folds are reused, not retrained.
    (out / "summary.json").unlink()
    assert main(["cv", str(recipe), "--folds", "2", *FAST]) == 0
    assert _state(out)[0] == second
