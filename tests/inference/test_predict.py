"""`hf-medtl predict` / hf_medtl.inference.predict on a trained tiny model: formats, DICOM, unreadable files, TTA, multi-label."""
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import hf_medtl
from hf_medtl.cli import main
from hf_medtl.inference.core import TTA_VIEWS, batch_probabilities, black_of, load, pixels, view
from hf_medtl.inference.predict import format_predictions

CLASSES = ["benign", "malignant", "normal"]


def test_predict_cli_csv_json_table_and_an_unreadable_file(trained_run, tmp_path, capsys):
    images = trained_run.parent / "images"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["predict", str(trained_run), str(images / "malignant"), str(tmp_path / "bad.png"),
                 "--format", "csv", "--batch_size", "5"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["path"] for r in rows[:-1]] == [str(p) for p in sorted((images / "malignant").iterdir())]
    assert rows[-1]["path"].endswith("bad.png") and rows[-1]["error"] == "not an image" and rows[-1]["benign"] == ""
    assert "bad.png: unreadable (not an image)" in captured.err and "Traceback" not in captured.err
    good = rows[:-1]
    assert all(abs(sum(float(r[c]) for c in CLASSES) - 1) < 1e-5 for r in good)
    assert sum(r["prediction"] == "malignant" for r in good) >= 10, good  # the model learnt the task (12 images)

    # What the formats guarantee, not one image's class (which a tiny model may change with a library release):
    # the CSV above, the JSON and the table give the same probabilities for the same image, ranked the same way.
    by_path = {r["path"]: r for r in good}
    image = sorted((images / "malignant").iterdir())[0]
    assert main(["predict", str(trained_run), str(image), "--format", "json"]) == 0
    [one] = json.loads(capsys.readouterr().out)
    assert set(one["probabilities"]) == set(CLASSES) and one["tta"] == ["identity"]
    assert one["prediction"] == max(one["probabilities"], key=one["probabilities"].get)
    assert all(abs(one["probabilities"][c] - float(by_path[str(image)][c])) < 1e-6 for c in CLASSES)

    assert main(["predict", str(trained_run), str(image), "--top_k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    ranked = sorted(CLASSES, key=one["probabilities"].get, reverse=True)
    assert table[0] == "| image | #1 | #2 |" and len(table) == 3
    cells = [c.strip() for c in table[2].split("|")[2:4]]
    assert cells == [f"{c} ({one['probabilities'][c]:.1%})" for c in ranked[:2]], cells


def test_python_api_and_nothing_readable(trained_run, tmp_path, capsys):
    image = trained_run.parent / "images" / "benign" / "benign_003.png"
    [p] = hf_medtl.predict(trained_run, [image])
    assert p.error is None and list(p.probabilities) == CLASSES
    assert p.top(1)[0][0] == max(p.probabilities, key=p.probabilities.get)
    (tmp_path / "empty.png").write_bytes(b"")
    assert main(["predict", str(trained_run), str(tmp_path / "empty.png")]) == 2  # nothing predicted
    assert "unreadable: zero-byte file" in capsys.readouterr().out
    (tmp_path / "no_images").mkdir()
    assert main(["predict", str(trained_run), str(tmp_path / "no_images")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: no images found in {tmp_path / 'no_images'}"


def test_dicom_goes_through_the_toolkits_decoding(trained_run, tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from hf_medtl.data.decode import decode

    dicom = get_testdata_file("CT_small.dcm")  # 16-bit signed CT with Rescale Slope/Intercept
    decode(dicom).save(tmp_path / "as_decoded.png")  # what training would have seen, stored losslessly
    a, b = hf_medtl.predict(trained_run, [dicom, tmp_path / "as_decoded.png"])
    assert a.error is None and a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_tta_averages_the_listed_views(trained_run):
    served, alone = load(trained_run, tta=True), load(trained_run, tta=False)
    model, processor = served.model, served.processor
    black = Image.new("RGB", (24, 24))  # every flip and rotation of it is itself
    np.testing.assert_allclose(served.probabilities([black]), alone.probabilities([black]), atol=1e-7)
    image = Image.open(trained_run.parent / "images" / "benign" / "benign_000.png").convert("RGB")
    tta = served.probabilities([image])[0]
    x = pixels(processor, [image])
    views = np.concatenate([batch_probabilities(model, view(x, v, black_of(processor))) for v in TTA_VIEWS])
    np.testing.assert_allclose(tta, views.mean(0), atol=1e-6)
    assert np.abs(views - views[0]).max() > 1e-3  # the views differ, so the mean is not the plain prediction
    assert TTA_VIEWS == ("identity", "hflip", "rotate+10", "rotate-10")
    text = format_predictions(hf_medtl.predict(trained_run, [trained_run.parent / "images" / "benign"], tta=True))
    assert text.startswith("TTA: probabilities averaged over identity, hflip, rotate+10, rotate-10")


def test_multi_label_model_gets_a_sigmoid_per_label(trained_run, tmp_path):
    import torch

    from hf_medtl.data.decode import decode
    from hf_medtl.data.transforms import eval_transform
    from hf_medtl.models import load_saved_model

    model_dir = tmp_path / "multi"
    shutil.copytree(trained_run, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    image = trained_run.parent / "images" / "normal" / "normal_000.png"
    [p] = hf_medtl.predict(model_dir, [image])
    model, processor, _ = load_saved_model(model_dir)
    with torch.no_grad():
        logits = model(pixel_values=eval_transform(processor)(decode(image))[None]).logits[0].double().numpy()
    assert list(p.probabilities.values()) == pytest.approx(1 / (1 + np.exp(-logits)), abs=1e-6)
    assert abs(sum(p.probabilities.values()) - 1) > 1e-3  # independent labels, not a softmax


def test_predict_on_a_folder_leaves_nothing_out_silently(trained_run, tmp_path, capsys):
    """Dangling and looping links and a folder link back to its ancestor are reported as rows with an error; a DICOM
    file without an extension (PACS naming) is predicted; hidden files stay out."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "scans"
    (folder / "series").mkdir(parents=True)
    shutil.copy(trained_run.parent / "images" / "benign" / "benign_000.png", folder / "a.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "series" / "IM0001")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")
    (folder / "series" / "up").symlink_to(folder)
    (folder / ".hidden.png").write_bytes(b"x")
    assert main(["predict", str(trained_run), str(folder), "--format", "csv"]) == 0
    rows = {r["path"][len(str(folder)) + 1:]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert set(rows) == {"a.png", "gone.png", "loop_a", "loop_b", "series/IM0001", "series/up"}
    a = rows["a.png"]
    assert a["prediction"] == max(CLASSES, key=lambda c: float(a[c])) and rows["series/IM0001"]["prediction"] in CLASSES
    assert rows["gone.png"]["error"] == "file not found" and rows["loop_a"]["error"] and rows["loop_b"]["error"]
    assert "loop" in rows["series/up"]["error"] and rows["series/up"]["benign"] == ""


def test_palette_color_dicom_is_decoded_through_its_lookup_tables(trained_run, tmp_path, capsys):
    """A PALETTE COLOR DICOM's stored values are palette indices: decoded through its red/green/blue tables, not as
    grey indices; predict serves it like any image."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    from hf_medtl.data.decode import decode

    path = get_testdata_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    expected = np.round(apply_color_lut(ds.pixel_array, ds) * 255.0 / 65535).astype(np.uint8)
    decoded = np.asarray(decode(path))
    assert decoded.shape == (ds.Rows, ds.Columns, 3) and np.array_equal(decoded, expected)
    assert not np.array_equal(decoded[..., 0], ds.pixel_array)  # not the grey indices
    assert main(["predict", str(trained_run), path, "--format", "json"]) == 0
    [p] = json.loads(capsys.readouterr().out)
    assert p["error"] is None and abs(sum(p["probabilities"].values()) - 1) < 1e-5
