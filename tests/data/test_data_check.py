"""The leakage guard's near-duplicate rule: every hash or neighbour candidate is confirmed on the pixels, so
planted copies (re-encoded, resized, shifted by 2 px, brighter) are found at 28 and 224 px while distinct
look-alikes are not, and data_report.json / the console say what was grouped and removed, and why."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from hf_medtl.cli import main
from hf_medtl.data import check, load_splits, near
from hf_medtl.config.recipe import DataArguments
from tests.conftest import write_recipe

DATA = Path(__file__).parents[1] / "fixtures"
LOOKALIKES = np.load(DATA / "pneumoniamnist_lookalikes.npz")  # real 28-px X-rays: 3 pairs of hash look-alikes


def planted(arr: np.ndarray) -> dict[str, np.ndarray]:
    img, (h, w) = Image.fromarray(arr), arr.shape
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return {"re-encoded": np.asarray(Image.open(buf).convert("L")),
            "resized": np.asarray(img.resize((round(w * 1.5), round(h * 1.5)), Image.Resampling.BILINEAR)),
            "shifted": np.pad(arr, 2, mode="edge")[4:4 + h, 0:w],  # content 2 px up and 2 px right
            "brighter": np.asarray(ImageEnhance.Brightness(img).enhance(1.1))}


def grouped(images: list[np.ndarray], **kw) -> tuple[list[int], dict]:
    infos = [check.inspect(a) for a in images]
    uf = check.UnionFind(len(images))
    dup = check.duplicate_groups(infos, 4, uf, **kw)
    return uf.groups(), dup


@pytest.mark.parametrize("which", ["xray_28px", "brain_mri_224px"])
def test_planted_copies_are_found(which):
    if which == "xray_28px":
        originals = list(LOOKALIKES["images"][[0, 2, 4]])
    else:
        originals = [np.asarray(Image.open(DATA / "brain_mri_glioma_0505.jpg").convert("L"))]
    images, owner = list(originals), []
    for k, arr in enumerate(originals):
        for copy in planted(arr).values():
            images.append(copy)
            owner.append(k)
    roots, dup = grouped(images + list(LOOKALIKES["images"][[1, 3, 5]]))  # plus each original's look-alike
    for c, k in enumerate(owner):
        assert roots[len(originals) + c] == roots[k], (which, c)
    assert len({roots[k] for k in range(len(originals))}) == len(originals)
    assert dup["rule"]["images_below_small_image_size"] == (len(images) + 3 if which == "xray_28px" else 3)
    assert all(d <= (0.08 if which == "xray_28px" else 0.12) for d in dup["pairs"].values())


def test_distinct_lookalikes_at_28px_are_not_grouped():
    x = LOOKALIKES["images"]
    infos = [check.inspect(a) for a in x]
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert bin(infos[a].phash ^ infos[b].phash).count("1") <= 4  # the hash alone calls them copies
    roots, dup = grouped(list(x))
    assert len(set(roots)) == 6 and dup["near"] == [] and dup["rejected"] == dup["candidates"] >= 3
    # Their distances: 0.10-0.16 standard deviations, above the 28-px threshold
    d, _ = near.pixel_distances(near.prepare(np.stack([i.thumb for i in infos])), np.array([[0, 1], [2, 3], [4, 5]]))
    assert np.all((d > near.PIXEL_DISTANCE["small"]) & (d < 0.2)), d
    # A recipe that loosens the threshold groups them again, and says so.
    roots, dup = grouped(list(x), pixel_distance=0.2)
    assert roots[0] == roots[1] and roots[2] == roots[3] and roots[4] == roots[5]
    assert dup["rule"]["applied"].startswith("near_duplicate_pixel_distance")


def npz_with_copies(path: Path) -> Path:
    """A MedMNIST-style file: val holds 3 look-alike X-rays; train holds their partners (distinct images that
    the hash alone matches), one pixel-identical and one shifted copy of val images, and filler."""
    x, labels = LOOKALIKES["images"], LOOKALIKES["labels"]
    rng = np.random.default_rng(0)
    filler = [np.clip(rng.normal(120, 40, (28, 28)), 0, 255).astype(np.uint8) for _ in range(24)]
    train = [x[1], x[3], x[5], x[0].copy(), planted(x[2])["shifted"], *filler]
    train_labels = [labels[1], labels[3], labels[5], labels[0], labels[2], *([0, 1] * 12)]
    np.savez(path, train_images=np.stack(train), train_labels=np.array(train_labels)[:, None],
             val_images=np.stack([x[0], x[2], x[4]]), val_labels=np.array([labels[0], labels[2], labels[4]])[:, None])
    return path


def test_only_confirmed_copies_are_removed_and_the_console_says_why(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.json", npz_file=str(npz_with_copies(tmp_path / "x.npz")),
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe)]) == 0
    line = capsys.readouterr().out
    assert "2 train copies of held-out images removed (1 pixel-identical, 1 near duplicates)" in line
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["cross_split_duplicates"]["found"] == 2
    short = lambda paths: sorted(p.split("/x.npz::")[-1] for p in paths)  # noqa: E731
    assert short(report["cross_split_duplicates"]["images"]) == ["train_images/3", "train_images/4"]
    d = report["duplicates"]
    assert d["near_rule"]["applied"] == "resolution-aware default" and d["near_rule"]["pixel_distance"] == {
        "below 64 px": 0.08, "64 px and above": 0.12}
    assert d["near_groups"] == 1 and short(d["near"][0]["images"]) == ["train_images/4", "val_images/1"]
    assert 0 < d["near"][0]["pixel_distance"] <= d["near"][0]["threshold"] == 0.08
    assert d["near_candidates_rejected"] >= 3


def test_a_rerun_on_the_same_files_reuses_the_near_duplicate_search(tmp_path, capsys):
    """The search's result is kept under a key of the files' pixels and the settings: a rerun reports the very
    same groups, pairs and counts without searching; a damaged entry is searched again and rewritten; another
    setting, or the cache turned off, searches afresh."""
    cache = tmp_path / "cache"
    recipe = write_recipe(tmp_path / "r.json", npz_file=str(npz_with_copies(tmp_path / "x.npz")),
                          output_dir=str(tmp_path / "out"), data_cache_dir=str(cache))

    def duplicates(*extra):
        assert main(["check-data", str(recipe), *extra]) == 0
        d = json.loads((tmp_path / "out" / "data_report.json").read_text())["duplicates"]
        return d.pop("near_search_reused"), d

    reused, first = duplicates()
    [entry] = (cache / "near_duplicates").glob("*.json")
    assert not reused and first["near_groups"] == 1 and first["near_candidates"] > 0
    reused, again = duplicates()
    assert reused and again == first
    entry.write_text('{"exact": [[0, 99999]]')  # damaged: never trusted
    reused, repaired = duplicates()
    assert not reused and repaired == first and "near_duplicates" in capsys.readouterr().err
    assert duplicates()[0]
    assert not duplicates("--data_cache", "false")[0]
    reused, other = duplicates("--near_duplicate_distance", "2")
    assert not reused and len(list((cache / "near_duplicates").glob("*.json"))) == 2


def test_a_group_spanning_labels_is_reported_with_its_distance(tmp_path, hf_medtl_log):
    brain = Image.open(DATA / "brain_mri_glioma_0505.jpg").convert("L")
    for cls in ("glioma", "meningioma", "notumor"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        rng = np.random.default_rng(len(cls))
        for k in range(8):
            Image.fromarray(np.clip(rng.normal(100, 50, (64, 64)), 0, 255).astype(np.uint8)).save(
                tmp_path / "d" / cls / f"{k}.png")
    brain.save(tmp_path / "d" / "glioma" / "scan.png")
    brain.resize((200, 200)).save(tmp_path / "d" / "meningioma" / "scan_small.jpg", quality=80)  # mislabelled copy
    splits = load_splits(DataArguments(data_dir=str(tmp_path / "d")), 0, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    spanning = report["leakage_groups"]["spanning_labels"]
    assert len(spanning) == 1 and spanning[0]["labels"] == ["glioma", "meningioma"]
    (pair,) = spanning[0]["pairs"]
    assert sorted(pair["images"]) == ["glioma/scan.png", "meningioma/scan_small.jpg"]
    assert 0 < pair["pixel_distance"] <= 0.12
    assert "different labels" in hf_medtl_log.text
    assert len({g for s, g in zip(splits.samples, splits.groups) if s.path.name.startswith("scan")}) == 1


def test_pixel_threshold_keys_are_checked(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.json", npz_file=str(npz_with_copies(tmp_path / "x.npz")),
                          output_dir=str(tmp_path / "out"))
    assert main(["check-data", str(recipe), "--near_duplicate_pixel_distance", "5"]) == 2
    assert "'near_duplicate_pixel_distance' must lie in 0..2" in capsys.readouterr().err
    assert main(["check-data", str(recipe), "--small_image_size", "0"]) == 2
    assert "'small_image_size' must be at least 1" in capsys.readouterr().err
    # small_image_size 16: 28-px images count as large, and the report says so
    assert main(["check-data", str(recipe), "--small_image_size", "16"]) == 0
    rule = json.loads((tmp_path / "out" / "data_report.json").read_text())["duplicates"]["near_rule"]
    assert rule["images_below_small_image_size"] == 0 and rule["small_image_size"] == 16
