"""NIfTI (.nii, .nii.gz) through the data stage, finetune and predict: 2-D images as they are, a 3-D volume's chosen
slice, and a 3-D volume without a slice choice refused in one line."""
import json

import numpy as np
import pytest

from hf_medtl.cli import main
from tests.conftest import CLASSES, assert_evaluation_matches_run, errors, tiny_recipe, write_recipe

nibabel = pytest.importorskip("nibabel")


def _band(label_index: int, rng, size: int = 24, depth: int | None = None) -> np.ndarray:
    """A float image (CT-like Hounsfield range) whose class decides which third is bright, over a smooth random
    field of its own (so that no two images are near duplicates); a volume with ``depth``."""
    shape = (size, size) if depth is None else (size, size, depth)
    field = np.kron(rng.normal(0.0, 300.0, (4, 4)), np.ones((size // 4, size // 4)))
    arr = rng.normal(-500.0, 30.0, shape) + (field if depth is None else field[..., None])
    band = size // 3
    arr[label_index * band:(label_index + 1) * band] += 1200.0  # NIfTI's first axis: columns once shown (rot90)
    return arr.astype(np.float32)


def nifti_folder(root, per_class=6, depth=None, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".nii.gz" if i % 2 else ".nii"
            nibabel.save(nibabel.Nifti1Image(_band(c, rng, depth=depth), np.eye(4)), str(root / name / f"{name}_{i}{suffix}"))
    return root


def test_a_2d_nifti_decodes_windowed_and_oriented(tmp_path):
    from hf_medtl.data.decode import decode

    arr = np.zeros((20, 30), np.float32)
    arr[:5, :] = 1000.0  # the first rows of the array: after rot90, the first columns... of the last rows
    nibabel.save(nibabel.Nifti1Image(arr, np.eye(4)), str(tmp_path / "x.nii.gz"))
    image = np.asarray(decode(tmp_path / "x.nii.gz"))
    assert image.shape == (30, 20, 3)  # rotated 90 degrees: rows run along the array's second axis
    assert image[:, :5, 0].min() == 255 and image[:, 5:, 0].max() == 0


def test_2d_nifti_folders_train_and_predict(tmp_path, tiny_vit, capsys):
    data = nifti_folder(tmp_path / "nifti")
    recipe = tiny_recipe(tmp_path, tiny_vit, data, num_train_epochs=1, n_bootstrap=0, image_size=24)
    assert main(["finetune", str(recipe)]) == 0
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["files"] == 18 and not report.get("bad_images")
    manifest = (tmp_path / "run" / "split_manifest.csv").read_text()
    assert "benign/benign_1.nii.gz" in manifest and "benign/benign_0.nii" in manifest
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(data / "normal" / "normal_1.nii.gz"), "--format", "json"]) == 0
    [p] = json.loads(capsys.readouterr().out)
    assert p["error"] is None and abs(sum(p["probabilities"].values()) - 1) < 1e-5


def test_a_3d_volume_needs_a_slice_choice(tmp_path, capsys):
    data = nifti_folder(tmp_path / "vol", per_class=3, depth=5)
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(data), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    [line] = errors(capsys)
    assert "3-D NIfTI volume (24, 24, 5)" in line and "nifti_slice" in line
    assert main(["check-data", str(recipe), "--nifti_slice", "middle"]) == 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["files"] == 9 and not report.get("bad_images")
    assert main(["check-data", str(recipe), "--nifti_slice", "7"]) == 2
    assert "outside the volume's 5 slices" in errors(capsys)[0]
    assert main(["check-data", str(recipe), "--nifti_axis", "3", "--nifti_slice", "1"]) == 2
    assert "'nifti_axis' must be 0, 1 or 2" in errors(capsys)[0]


def test_the_chosen_slice_is_what_the_model_sees(tmp_path):
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.data.decode import decode, from_array
    from hf_medtl.data.sources import scan_source

    data = nifti_folder(tmp_path / "vol", per_class=3, depth=5)
    recipe = load_recipe(write_recipe(tmp_path / "r.json", data_dir=str(data), nifti_slice=1, nifti_axis=2))
    [s] = [s for s in scan_source(recipe.data).samples if s.path.name == "malignant_0.nii"]
    volume = np.asarray(nibabel.load(str(s.path)).dataobj, dtype=np.float64)
    expected = np.asarray(from_array(np.rot90(volume[:, :, 1])))
    assert np.array_equal(np.asarray(decode(s.source)), expected)


def test_predict_and_evaluate_read_a_volume_as_its_run_did(tmp_path, tiny_vit, capsys):
    """A model trained on the middle slice of 3-D volumes predicts and evaluates the same volumes with that slice
    (the run's recipe.json), giving the run's own test probabilities; --nifti_slice picks another one."""
    import csv

    data = nifti_folder(tmp_path / "vol", per_class=4, depth=5)
    recipe = tiny_recipe(tmp_path, tiny_vit, data, num_train_epochs=1, n_bootstrap=0, image_size=24,
                         nifti_slice="middle", dedupe=False)
    assert main(["finetune", str(recipe)]) == 0
    run = tmp_path / "run"
    with open(run / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    files = [str(data / r["path"]) for r in rows]
    capsys.readouterr()
    assert main(["predict", str(run), *files, "--format", "json"]) == 0
    served = json.loads(capsys.readouterr().out)
    for p, r in zip(served, rows):
        assert p["error"] is None
        np.testing.assert_allclose([p["probabilities"][c] for c in CLASSES], [float(r[f"p_{c}"]) for c in CLASSES],
                                   atol=1e-5)
    assert main(["predict", str(run), files[0], "--format", "json", "--nifti_slice", "0"]) == 0
    [other] = json.loads(capsys.readouterr().out)
    assert other["error"] is None and other["probabilities"] != served[0]["probabilities"]  # another slice
    assert main(["evaluate", str(run), str(data), "--output_dir", str(tmp_path / "ev"), "--n_bootstrap", "0"]) == 0
    assert_evaluation_matches_run(tmp_path / "ev" / "predictions.csv", rows)


def test_a_slice_is_taken_along_the_asked_axis_even_beside_a_singleton(tmp_path, capsys):
    """A (40, 1, 12) volume with nifti_axis 2: its 'slices' are 40 x 1 lines. It used to give the 40 x 12 plane (of
    another orientation) without a word; now one line naming the axis to use, which then gives that plane."""
    from hf_medtl.data.decode import DecodeError, nifti_slice

    vol = np.random.default_rng(0).normal(size=(40, 1, 12)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    with pytest.raises(DecodeError, match=r"nifti_axis 2 of a \(40, 1, 12\) volume are 40 x 1 lines.*set nifti_axis 1"):
        nifti_slice(tmp_path / "v.nii.gz", 2, "middle")
    np.testing.assert_array_equal(nifti_slice(tmp_path / "v.nii.gz", 1, "middle"), np.rot90(vol[:, 0, :]))
    flat = np.ones((24, 24, 1), np.float32)  # a 2-D image stored as one slice: its own plane, as before
    nibabel.save(nibabel.Nifti1Image(flat, np.eye(4)), str(tmp_path / "f.nii"))
    assert nifti_slice(tmp_path / "f.nii", 2, "middle").shape == (24, 24)
