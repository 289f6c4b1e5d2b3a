"""Bad input never crashes, every medical format decodes by its documented rule, and the leakage guard keeps
copies and patients inside one split."""
import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hf_medtl.cli import main
from hf_medtl.data import DataError, load_splits
from hf_medtl.data.check import inspect, perceptual_hash
from hf_medtl.data.decode import DecodeError, decode
from hf_medtl.config.recipe import DataArguments
from tests.conftest import make_image, make_image_folder, write_recipe


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


# -- decoding rules ------------------------------------------------------------------------------------------
def test_sixteen_bit_grayscale_is_percentile_windowed(tmp_path):
    arr = np.linspace(0, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    arr[0, 0] = 65535  # one hot pixel must not crush the contrast
    Image.fromarray(arr).save(tmp_path / "ct16.png")
    assert Image.open(tmp_path / "ct16.png").mode.startswith("I")
    out = np.asarray(decode(tmp_path / "ct16.png"))
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255 and 100 < out[32, 32, 0] < 155


def test_cmyk_rgba_palette_bilevel_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    base = make_image(1, rng, size=32, mode="RGB")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    base.convert("RGBA").save(tmp_path / "rgba.png")
    base.convert("P").save(tmp_path / "pal.png")
    base.convert("1").save(tmp_path / "bw.bmp")
    base.save(tmp_path / "scan.tiff")
    for name in ("cmyk.jpg", "rgba.png", "pal.png", "bw.bmp", "scan.tiff"):
        img = decode(tmp_path / name)
        assert img.mode == "RGB" and img.size == (32, 32), name


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    plain = np.asarray(decode(get_testdata_file("CT_small.dcm")))[..., 0]
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    ct.WindowCenter, ct.WindowWidth = 40, 400  # soft-tissue window
    ct.save_as(tmp_path / "win.dcm")
    windowed = np.asarray(decode(tmp_path / "win.dcm"))[..., 0]
    expected = np.clip((hu - (40 - 200)) * 255 / 400, 0, 255).round()
    assert np.abs(windowed.astype(float) - expected).max() <= 1
    assert not np.array_equal(plain, windowed)
    ct.PhotometricInterpretation = "MONOCHROME1"
    ct.save_as(tmp_path / "inv.dcm")
    assert np.array_equal(np.asarray(decode(tmp_path / "inv.dcm"))[..., 0], 255 - windowed)
    with pytest.raises(DecodeError, match="multi-frame"):
        decode(get_testdata_file("rtdose.dcm"))


def test_dicom_patient_fields_never_reach_outputs(tmp_path, capsys):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    for cls, n in (("a", 3), ("b", 3)):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(n):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.PatientName, ds.PatientID = "Doe^Jane", "PID-SECRET-42"
            ds.PixelData = (ds.pixel_array + (i * 50 if cls == "a" else -i * 50)).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(tmp_path / "d" / cls / f"{i}.dcm")
    (tmp_path / "d" / "b" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    # Brightness-shifted copies of one slice are near duplicates across labels: grouping off, this is about fields.
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(tmp_path / "d"), dedupe=False,
                          output_dir=str(tmp_path / "out"), on_bad_image="skip")
    assert main(["check-data", str(recipe)]) == 0  # no model_name_or_path: the check builds no model
    printed = capsys.readouterr()
    texts = [printed.out, printed.err] + [p.read_text() for p in (tmp_path / "out").iterdir()]
    assert not any("PID-SECRET-42" in t or "Doe^Jane" in t for t in texts)
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert [b["path"] for b in report["bad_images"]] == ["b/broken.dcm"]
    assert report["bad_images"][0]["reason"].startswith("unreadable DICOM")


# -- the bad-input corpus ------------------------------------------------------------------------------------
@pytest.fixture
def bad_corpus(tmp_path):
    root = make_image_folder(tmp_path / "corpus", per_class=(8, 8, 8))
    good = (root / "benign" / "benign_001.jpg").read_bytes()
    (root / "benign" / "zero.png").write_bytes(b"")
    (root / "benign" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "malignant" / "random.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "malignant" / "notes.png").write_text("this is a text file named .png")
    shutil.copy(root / "normal" / "normal_000.png", root / "normal" / "really_png.jpg")  # wrong extension: fine
    return root


EXPECTED_BAD = {"benign/zero.png": "zero-byte", "benign/truncated.jpg": "truncated",
                "malignant/random.jpg": "not an image", "malignant/notes.png": "not an image"}


def test_bad_images_stop_before_training_with_a_list(bad_corpus, tmp_path, capsys, tiny_vit):
    # (a real local checkpoint: a Hub id that is not in the cache stops a run before the data check, offline)
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), data_dir=str(bad_corpus),
                          output_dir=str(tmp_path / "out"))
    assert main(["finetune", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "4 unreadable image(s)" in err and "on_bad_image 'skip'" in err
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    got = {b["path"]: b["reason"] for b in report["bad_images"]}
    assert set(got) == set(EXPECTED_BAD)
    for path, reason in EXPECTED_BAD.items():
        assert reason in got[path], (path, got[path])
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_skip_trains_without_them_and_says_how_many(bad_corpus, tmp_path):
    splits = load_splits(DataArguments(data_dir=str(bad_corpus), on_bad_image="skip"), 0, tmp_path / "out")
    assert splits.assignment.count("excluded") == 4 and sum(splits.counts().values()) == 25
    splits.write_manifest(tmp_path / "m.csv")
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "m.csv"))}
    assert rows["benign/zero.png"]["split"] == "excluded" and rows["benign/zero.png"]["note"].startswith("unreadable")
    assert rows["normal/really_png.jpg"]["split"] != "excluded"


@pytest.mark.parametrize("layout,message", [
    ({"a": 4, "b": 0}, "'b' holds no images"), ({"only": 5}, "only one class"), ({"a": 5, "b": 1}, "class 'b' has 1 image"),
])
def test_folder_shapes_are_one_clear_line(tmp_path, capsys, layout, message):
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(layout.items()):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(n):
            make_image(c, rng).save(tmp_path / "d" / name / f"{i}.png")
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path="unused", data_dir=str(tmp_path / "d"))
    assert main(["check-data", str(recipe), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err and len([l for l in err.splitlines() if l.startswith("error:")]) == 1


def test_csv_pointing_at_missing_images(tmp_path):
    make_image_folder(tmp_path / "imgs", per_class=(3, 3, 3))
    (tmp_path / "labels.csv").write_text("path,label\nimgs/benign/benign_000.png,benign\nimgs/benign/gone.png,benign\n")
    with pytest.raises(DataError, match="line 3: image 'imgs/benign/gone.png' does not exist"):
        load_splits(DataArguments(csv_file=str(tmp_path / "labels.csv")), 0)


# -- leakage guard -------------------------------------------------------------------------------------------
def test_copies_reencodings_and_resizes_are_found(tmp_path):
    from PIL import ImageFilter

    def scan(seed):  # a smooth, scan-like picture: blurred blobs
        rng = np.random.default_rng(seed)
        arr = np.zeros((96, 96))
        yy, xx = np.mgrid[:96, :96]
        for _ in range(6):
            cy, cx, r = rng.uniform(10, 86, 2).tolist() + [rng.uniform(6, 20)]
            arr += rng.uniform(60, 150) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))

    img, other = scan(1), scan(2)
    a, copy_ = inspect(img), inspect(img.copy())
    reencoded = inspect(Image.open(io.BytesIO(jpeg_bytes(img, quality=85))))
    resized = inspect(img.resize((77, 77)))
    assert a.sha == copy_.sha and a.sha != reencoded.sha
    dist = lambda x, y: bin(x.phash ^ y.phash).count("1")  # noqa: E731
    assert dist(a, reencoded) <= 4 and dist(a, resized) <= 4
    assert dist(a, inspect(other)) > 4
    assert perceptual_hash(img) == a.phash


def test_duplicate_groups_stay_in_one_split(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=(20, 20, 20))
    rng = np.random.default_rng(3)
    originals = sorted((root / "benign").glob("*.png"))[:6]
    for k, src in enumerate(originals):  # six images, each with a byte copy, a re-encoding and a resize
        img = Image.open(src).convert("RGB").resize((96, 96))
        img.save(src)
        shutil.copy(src, root / "benign" / f"copy_{k}.png")
        (root / "benign" / f"reenc_{k}.jpg").write_bytes(jpeg_bytes(img, quality=90))
        img.resize((80, 80)).save(root / "benign" / f"small_{k}.png")
    splits = load_splits(DataArguments(data_dir=str(root)), int(rng.integers(100)), tmp_path / "out")
    d = splits.report["duplicates"]
    assert d["exact_groups"] == 6 and d["images_in_exact_groups"] == 12
    by_name = {s.path.name: (a, g) for s, a, g in zip(splits.samples, splits.assignment, splits.groups)}
    for k in range(6):
        names = [originals[k].name, f"copy_{k}.png", f"reenc_{k}.jpg", f"small_{k}.png"]
        assert len({by_name[n][1] for n in names}) == 1, names  # one group
        assert len({by_name[n][0] for n in names}) == 1, names  # one split
    assert splits.counts()["test"] >= 3


def test_patient_regex_and_csv_groups_keep_patients_whole(tmp_path):
    rng = np.random.default_rng(4)
    for c, cls in enumerate(("B", "M")):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for patient in range(6):
            for k in range(5):
                make_image(c, rng, size=24).save(tmp_path / "d" / cls / f"SOB_{cls}_A-14-{patient}{cls}-400-{k:03d}.png")
    splits = load_splits(DataArguments(data_dir=str(tmp_path / "d"), group_regex=r"SOB_[BM]_[A-Z]+-([^-]+-[^-]+)-",
                                       val_ratio=0.2, test_ratio=0.2), 0)
    patient_split = {}
    for s, a in zip(splits.samples, splits.assignment):
        patient_split.setdefault(s.path.name.split("-")[2], set()).add(a)
    assert all(len(v) == 1 for v in patient_split.values()) and len(patient_split) == 12
    assert all(n > 0 for n in splits.counts().values())
    with pytest.raises(DataError, match="does not match file name"):
        load_splits(DataArguments(data_dir=str(tmp_path / "d"), group_regex=r"patient(\d+)"), 0)

    rows = [f"{p.relative_to(tmp_path)},{p.parent.name},{p.name.split('-')[2]}" for p in sorted((tmp_path / "d").rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    splits = load_splits(DataArguments(csv_file=str(tmp_path / "labels.csv"), val_ratio=0.2, test_ratio=0.2), 1)
    groups = {}
    for s, a in zip(splits.samples, splits.assignment):
        groups.setdefault(s.group, set()).add(a)
    assert all(len(v) == 1 for v in groups.values())


def test_test_folder_copies_are_removed_from_train_and_reported(tmp_path):
    make_image_folder(tmp_path / "Training", per_class=(10, 10, 10))
    make_image_folder(tmp_path / "Testing", per_class=(4, 4, 4), seed=7)
    shutil.copy(tmp_path / "Testing" / "normal" / "normal_001.jpg", tmp_path / "Training" / "normal" / "leak.jpg")
    args = dict(train_dir=str(tmp_path / "Training"), test_dir=str(tmp_path / "Testing"))
    splits = load_splits(DataArguments(**args), 0, tmp_path / "out")
    c = splits.report["cross_split_duplicates"]
    assert c["found"] == 1 and c["images"] == ["Training/normal/leak.jpg"]
    leak = next(i for i, s in enumerate(splits.samples) if s.path.name == "leak.jpg")
    assert splits.assignment[leak] == "excluded" and "duplicate of a test image" in splits.notes[leak]
    kept = load_splits(DataArguments(**args, cross_split_duplicates="keep"), 0)
    assert kept.report["cross_split_duplicates"]["found"] == 1 and kept.assignment[leak] in ("train", "validation")


def test_manifest_is_reused_and_a_changed_dataset_is_reported(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", per_class=(10, 10, 10))
    out = tmp_path / "out"
    first = load_splits(DataArguments(data_dir=str(root)), 0, out)
    first.write_manifest(out / "split_manifest.csv")
    again = load_splits(DataArguments(data_dir=str(root)), 0, out)
    assert again.assignment == first.assignment and again.report["manifest"] == "reused"
    other = load_splits(DataArguments(data_dir=str(root), split_seed=99), 0, out)  # a changed recipe re-splits
    assert other.report["manifest"] == "split settings changed; new split" and other.assignment != first.assignment
    first = load_splits(DataArguments(data_dir=str(root)), 0, out)  # back to the recipe of the manifest
    first.write_manifest(out / "split_manifest.csv")
    make_image(0, np.random.default_rng(9)).save(root / "benign" / "benign_003.png")  # content changed
    (root / "malignant" / "malignant_000.png").unlink()
    changed = load_splits(DataArguments(data_dir=str(root)), 0, out)
    assert changed.report["manifest"]["added"] == 0 and changed.report["manifest"]["removed"] == 1
    assert changed.report["manifest"]["changed"] == 1 and "dataset changed" in capsys.readouterr().err


# -- EXIF, oversized headers, DICOM LUTs -----------------------------------------------------------------------
def exif_rotated_jpeg(path, orientation=6):
    """A 40x20 JPEG stored sideways, with the EXIF tag that tells viewers to rotate it upright."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :8] = 250  # a bright band on the stored image's left edge
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_agrees_with_serving(tmp_path):
    from transformers.image_utils import load_image

    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    ours, served = np.asarray(decode(path)), np.asarray(load_image(str(path)))
    assert ours.shape == (40, 20, 3)  # upright: the EXIF rotation applied
    assert np.array_equal(ours, served)


def test_exif_rotated_images_serve_as_the_run_scored_them(tmp_path, tiny_vit):
    import csv

    from transformers import pipeline

    from hf_medtl.finetune import run
    from hf_medtl.config.recipe import load_recipe
    from tests.conftest import tiny_recipe

    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 60, (20, 40, 3), dtype=np.uint8)
            arr[:, c * 20:(c + 1) * 20] += 150
            img = Image.fromarray(arr)
            exif = img.getexif()
            exif[0x0112] = 6 if i % 2 else 8
            img.save(tmp_path / "d" / name / f"{i}.jpg", exif=exif)
    run(load_recipe(tiny_recipe(tmp_path, tiny_vit, tmp_path / "d", num_train_epochs=1, n_bootstrap=0,
                                dedupe=False)))
    classifier = pipeline("image-classification", model=str(tmp_path / "run"))
    with open(tmp_path / "run" / "predictions_test_no_tta.csv") as f:  # what pipeline() serves: the model alone
        for row in csv.DictReader(f):
            served = {p["label"]: p["score"] for p in classifier(str(tmp_path / "d" / row["path"]), top_k=2)}
            assert served["a"] == pytest.approx(float(row["p_a"]), abs=2e-6)


def test_header_declaring_a_huge_image_is_refused_without_decoding(tmp_path):
    import struct
    import subprocess
    import sys
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side, comp = 11000, zlib.compressobj(6)
    rows = b"\0" * ((side + 1) * 1000)  # 1,000 filtered rows of zeros at a time
    body = b"".join(comp.compress(rows) for _ in range(side // 1000)) + comp.flush()
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DecodeError, match="image too large \\(11000x11000 pixels declared"):
        decode(bomb, max_pixels=50_000_000)
    code = ("import resource, sys; from hf_medtl.data.check import inspect_all; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"infos = inspect_all([{str(bomb)!r}] * 100, 50_000_000); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, infos[0].reason)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) < 50_000 and out[1] == "image"  # < 50 MB more peak memory (ru_maxrss is in KiB)


def test_dicom_voi_lut_sequence_and_sigmoid_follow_pydicom(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUT Descriptor: 256 entries, first mapped 0, 8 bits
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUT Data: an inverting 8-bit VOI LUT
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm")
    expected = 255 - np.clip(raw, 0, 255)  # the LUT's output range is 0..255 already
    assert np.array_equal(np.asarray(decode(tmp_path / "lut.dcm"))[..., 0], expected.astype(np.uint8))

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, "SIGMOID"
    ds.save_as(tmp_path / "sigmoid.dcm")
    expected = 255 / (1 + np.exp(-4 * (raw - 40) / 400))  # PS3.3 C.11.2.1.3.1, onto 0..255
    got = np.asarray(decode(tmp_path / "sigmoid.dcm"))[..., 0].astype(float)
    assert np.abs(got - expected).max() <= 1
