"""Float images with non-finite pixels (parametric maps: ADC, T1/T2 with a NaN background): windowed on their finite
pixels, NaN and -Inf black, +Inf white, so distinct scans stay distinct; a file without one finite pixel is one
unreadable-image line. Driven through `hf-medtl check-data` and `hf-medtl predict` on TIFFs the tests write."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from hf_medtl.cli import main
from tests.conftest import CLASSES, errors, write_recipe

SIZE = 24


def save_float(arr: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.float32), mode="F").save(path)
    with Image.open(path) as img:
        assert img.mode == "F"  # a 32-bit float TIFF, as parametric maps are stored


def parametric_map(label: int, rng: np.random.Generator, background: float) -> np.ndarray:
    """The class decides which third of the image is bright (as tests/conftest.make_image), on values of an ADC
    map's scale (1e-3 mm^2/s); a border of ``background`` (NaN, +-Inf) where the map is undefined."""
    arr = rng.uniform(0.0, 1.5e-3, (SIZE, SIZE))
    band = SIZE // 3
    arr[:, label * band:(label + 1) * band] += 2.0e-3
    arr[:3, :] = arr[-3:, :] = arr[:, :2] = background
    return arr


def map_folder(root, background: float, per_class: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES[:2]):
        for i in range(per_class):
            save_float(parametric_map(c * 2, rng, background), root / name / f"{name}_{i:02d}.tif")
    return root


@pytest.mark.parametrize("background", [np.nan, -np.inf, np.inf], ids=["nan", "-inf", "+inf"])
def test_maps_with_a_non_finite_background_stay_distinct(tmp_path, capsys, background):
    from hf_medtl.data.decode import decode

    root = map_folder(tmp_path / "maps", background)
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(root), output_dir=str(tmp_path / "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN or Inf runs through numpy's arithmetic unhandled
        assert main(["check-data", str(recipe)]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["bad_images"] == []
    dup = report["duplicates"]
    assert dup["exact_groups"] == 0 and dup["exact"] == [], dup["exact"]
    assert not [g for g in dup["near"] if len({p.split("/")[0] for p in g["images"]}) > 1]  # no cross-class group

    a, b = (np.asarray(decode(root / name / f"{name}_00.tif"))[..., 0] for name in CLASSES[:2])
    assert not np.array_equal(a, b)
    for img, bright in ((a, slice(0, 8)), (b, slice(16, 24))):
        inside = img[3:-3, 2:]
        assert inside.max() == 255 and inside[:, bright].mean() > inside.mean() + 40  # the class's band, windowed
        border = img[0, :]
        assert (border == (255 if background > 0 else 0)).all()  # NaN/-Inf the window's low end, +Inf its high


def test_one_valued_maps_on_a_nan_background_keep_their_shape(tmp_path, capsys):
    """A mask stored as a float map (1.0 inside, NaN outside): its window collapses to one value, which stays
    mid-grey, apart from the black NaN, instead of every such file decoding to one black image."""
    from hf_medtl.data.decode import decode

    root = tmp_path / "masks"
    for i in range(10):
        square, bar = np.full((SIZE, SIZE), np.nan), np.full((SIZE, SIZE), np.nan)
        square[i:i + 8, 2 * i // 3:2 * i // 3 + 8 + i % 4] = 1.0
        bar[i + 4:i + 7, :] = 1.0
        bar[:, i + 10:i + 12] = 1.0
        save_float(square, root / "benign" / f"square_{i}.tif")
        save_float(bar, root / "malignant" / f"bar_{i}.tif")
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(root), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "data_report.json").read_text())["duplicates"]["exact_groups"] == 0
    square = np.asarray(decode(root / "benign" / "square_0.tif"))[..., 0]
    assert set(np.unique(square)) == {0, 128} and (square == 128).sum() == 64


@pytest.mark.parametrize("fill", ["nan", "inf", "mixed"])
def test_an_image_without_a_finite_pixel_is_one_unreadable_line(tmp_path, capsys, fill):
    root = map_folder(tmp_path / "maps", np.nan, per_class=6)
    arr = {"nan": np.full((SIZE, SIZE), np.nan), "inf": np.full((SIZE, SIZE), np.inf),
           "mixed": np.tile([np.nan, np.inf, -np.inf], SIZE * SIZE // 3).reshape(SIZE, SIZE)}[fill]
    save_float(arr, root / "malignant" / "empty_map.tif")
    recipe = write_recipe(tmp_path / "r.json", data_dir=str(root), output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 2
    lines = errors(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: 1 unreadable image(s), e.g. 'malignant/empty_map.tif' "
                                                   "(no finite pixel value"), lines
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["bad_images"] == [{"path": "malignant/empty_map.tif",
                                     "reason": "no finite pixel value (every pixel is NaN or infinite)"}]


def test_predict_on_nan_background_maps_is_finite_and_follows_the_content(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(3)
    files = []
    for label in (0, 1, 2):  # the trained run's classes: benign, malignant, normal (bright third 0, 1, 2)
        files.append(tmp_path / f"map_{label}.tif")
        save_float(parametric_map(label, rng, np.nan), files[-1])
    save_float(np.full((SIZE, SIZE), np.nan), tmp_path / "empty.tif")
    capsys.readouterr()
    assert main(["predict", str(trained_run), *map(str, files), str(tmp_path / "empty.tif"), "--format", "json"]) == 0
    rows = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    for label, path in enumerate(files):
        probs = rows[str(path)]["probabilities"]
        assert all(np.isfinite(p) for p in probs.values()) and abs(sum(probs.values()) - 1) < 1e-5
        assert rows[str(path)]["prediction"] == CLASSES[label], probs  # the band decides, not a black image
    empty = rows[str(tmp_path / "empty.tif")]
    assert not empty["probabilities"] and empty["prediction"] is None
    assert empty["error"].startswith("no finite pixel value")
