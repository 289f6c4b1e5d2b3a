"""`hf-medtl evaluate` on multi-label runs: the run's flip TTA applied (probabilities checked against an
independent computation), and a CSV lacking some of the model's findings refused in one line."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from hf_medtl.cli import main
from tests.conftest import errors, tiny_recipe
from tests.data.test_multilabel import FINDINGS, make_multilabel


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory, tiny_vit):
    """A multi-label run whose recipe averages every image with its mirror (tta: hflip)."""
    root = tmp_path_factory.mktemp("ml_tta")
    csv_file = make_multilabel(root / "cxr", n=24)
    recipe = tiny_recipe(root, tiny_vit, root, data_dir=None, multilabel_csv=str(csv_file), image_size=24,
                         num_train_epochs=1, n_bootstrap=0, val_ratio=0.25, test_ratio=0.25, augment=False,
                         tta="hflip")
    assert main(["finetune", str(recipe)]) == 0
    return root / "run", csv_file


def _independent_probs(run_dir, files):
    """(identity, mirror) sigmoid probabilities of each file, computed here with plain torch."""
    import hf_medtl
    from hf_medtl.inference.core import pixels

    model, processor, classes = hf_medtl.load_model(run_dir)
    model.serve_views = False  # the trained model on the image alone (its saved form averages the mirror inside)
    x = pixels(processor, [Image.open(f).convert("RGB") for f in files])
    with torch.no_grad():
        plain = torch.sigmoid(model(pixel_values=x).logits.double()).numpy()
        mirror = torch.sigmoid(model(pixel_values=torch.flip(x, dims=[-1])).logits.double()).numpy()
    return classes, plain, mirror


def test_evaluate_applies_the_runs_hflip_tta(flip_run, tmp_path):
    run_dir, csv_file = flip_run
    assert main(["evaluate", str(run_dir), str(csv_file), "--output_dir", str(tmp_path / "ev"),
                 "--n_bootstrap", "0"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions_test.csv")))
    assert len(rows) == 24
    classes, plain, mirror = _independent_probs(run_dir, [r["path"] for r in rows])
    assert classes == list(FINDINGS)
    scored = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(scored, (plain + mirror) / 2, atol=2e-6)  # the CSV keeps 6 decimals
    assert np.abs(scored - plain).max() > 1e-4  # not the image alone: the mirror moved the probabilities
    assert "tta: hflip" in (tmp_path / "ev" / "report.md").read_text()


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_evaluate_refuses_a_csv_lacking_some_of_the_models_findings(flip_run, tmp_path, capsys):
    run_dir, csv_file = flip_run
    rows = list(csv.DictReader(open(csv_file)))
    images = csv_file.parent / "images"
    one_missing = _write(csv_file.parent / "no_nodule.csv", ["path", "Effusion", "Mass"],
                         [[r["path"], r["Effusion"], r["Mass"]] for r in rows])
    # ChestX-ray's form names only the findings an image has: a finding no row names is not labelled here.
    cx_missing = _write(csv_file.parent / "Data_Entry_no_effusion.csv", ["Image Index", "Finding Labels", "Patient ID"],
                        [[p.name, ("Mass", "Mass|Nodule", "No Finding")[i % 3], f"p{i}"]
                         for i, p in enumerate(sorted(images.iterdir()))])
    for data, missing in ((one_missing, "['Nodule']"), (cx_missing, "['Effusion']")):
        out = tmp_path / data.stem
        assert main(["evaluate", str(run_dir), str(data), "--output_dir", str(out), "--n_bootstrap", "0"]) == 2
        lines = errors(capsys)
        assert len(lines) == 1 and data.name in lines[0] and missing in lines[0] and "all-negative" in lines[0]
        assert not any((out / name).exists() for name in ("report.json", "report.md", "predictions_test.csv"))
    # Every finding present (one column more than the model knows is still refused, as before).
    extra = _write(csv_file.parent / "extra.csv", ["path", *FINDINGS, "Hernia"],
                   [[r["path"], *[r[f] for f in FINDINGS], "0"] for r in rows])
    assert main(["evaluate", str(run_dir), str(extra), "--output_dir", str(tmp_path / "x")]) == 2
    assert "Hernia" in errors(capsys)[0]
