"""Data stage: scanning class folders, stratified seeded splits, pre-split layouts, transforms."""
import csv
from collections import Counter

import pytest
import torch
from PIL import Image

from hf_medtl.data import DataError, load_splits, preprocessing_from_processor, to_datasets
from hf_medtl.data.split import stratified_assign
from hf_medtl.config.recipe import DataArguments
from tests.conftest import make_image_folder


def data_args(**kw):
    return DataArguments(**kw)


def test_split_is_stratified_and_sized():
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 20
    assign = stratified_assign(labels, {"validation": 0.1, "test": 0.1}, seed=0)
    counts = Counter(zip(labels, assign))
    assert (counts["a", "validation"], counts["a", "test"], counts["a", "train"]) == (10, 10, 80)
    assert (counts["b", "validation"], counts["b", "test"]) == (5, 5)
    assert (counts["c", "validation"], counts["c", "test"], counts["c", "train"]) == (2, 2, 16)


def test_split_is_deterministic_per_seed():
    labels = ["a"] * 40 + ["b"] * 40
    ratios = {"validation": 0.2, "test": 0.2}
    assert stratified_assign(labels, ratios, 1) == stratified_assign(labels, ratios, 1)
    assert stratified_assign(labels, ratios, 1) != stratified_assign(labels, ratios, 2)


def test_tiny_class_gets_one_per_split_or_a_clear_error():
    assign = stratified_assign(["a"] * 3 + ["b"] * 30, {"validation": 0.1, "test": 0.1}, 0)
    assert sorted(assign[:3]) == ["test", "train", "validation"]
    with pytest.raises(DataError, match="class 'b' has 2 image"):
        stratified_assign(["a"] * 30 + ["b"] * 2, {"validation": 0.1, "test": 0.1}, 0)


def test_folder_split_manifest_and_reproducibility(image_folder, tmp_path):
    (image_folder / "benign" / "notes.txt").write_text("not an image")
    splits = load_splits(data_args(data_dir=str(image_folder)), seed=3)
    assert splits.classes == ["benign", "malignant", "normal"]
    assert splits.counts() == {"train": 30, "validation": 3, "test": 3}
    assert [p.name for p in splits.ignored] == ["notes.txt"]
    splits.write_manifest(tmp_path / "m.csv")
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 36 and rows[0]["path"] == "benign/benign_000.png"
    again = load_splits(data_args(data_dir=str(image_folder)), seed=3)
    assert again.assignment == splits.assignment
    other = load_splits(data_args(data_dir=str(image_folder), split_seed=4), seed=3)
    assert other.assignment != splits.assignment


def test_pre_split_layout_carves_validation_from_train(tmp_path):
    make_image_folder(tmp_path / "Training", per_class=(10, 10, 10))
    make_image_folder(tmp_path / "Testing", per_class=(4, 4, 4), seed=1)
    splits = load_splits(data_args(train_dir=str(tmp_path / "Training"), test_dir=str(tmp_path / "Testing")), 0)
    assert splits.counts() == {"train": 27, "validation": 3, "test": 12}
    assert all(s.path.parent.parent.name == "Testing" for s in splits.files("test"))
    make_image_folder(tmp_path / "Other", per_class=(4, 4), classes=("benign", "tumour"))
    with pytest.raises(DataError, match="are not all among train_dir classes"):
        load_splits(data_args(train_dir=str(tmp_path / "Training"), test_dir=str(tmp_path / "Other")), 0)


def test_file_pattern_selects_nested_files(tmp_path):
    for cls in ("benign", "malignant"):
        for mag in ("40X", "400X"):
            d = tmp_path / cls / "SOB" / f"patient_{cls}" / mag
            d.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8)).save(d / f"{i}.png")
    splits = load_splits(data_args(data_dir=str(tmp_path), file_pattern="**/400X/*.png", dedupe=False), 0)
    assert len(splits.samples) == 8 and all(s.path.parent.name == "400X" for s in splits.samples)


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "folder not found"),
    (lambda root: root.mkdir(), "no class sub-folders"),
    (lambda root: make_image_folder(root, per_class=(5,), classes=("only",)), "only one class"),
    (lambda root: (make_image_folder(root, per_class=(5, 5)), (root / "empty").mkdir()), "'empty' holds no images"),
])
def test_folder_errors_are_clear(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_splits(data_args(data_dir=str(root)), 0)


def _serving(path, image_size=None):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_medtl.models import serving_processor

    model = AutoModelForImageClassification.from_pretrained(path)
    return serving_processor(model, AutoImageProcessor.from_pretrained(path), image_size)


def test_transforms_follow_processor_and_augment_only_train(image_folder, tiny_vit):
    prep = preprocessing_from_processor(_serving(tiny_vit))
    assert prep.size == (24, 24) and prep.mean == (0.5, 0.5, 0.5) and prep.interpolation == "bilinear"
    assert preprocessing_from_processor(_serving(tiny_vit, image_size=16)).size == (16, 16)
    splits = load_splits(data_args(data_dir=str(image_folder)), 0)
    ds = to_datasets(splits, prep, data_args())
    item = ds["test"][0]
    assert item["pixel_values"].shape == (3, 24, 24) and item["pixel_values"].min() >= -1.0
    assert torch.equal(ds["test"][0]["pixel_values"], item["pixel_values"])  # eval is deterministic
    torch.manual_seed(0)
    a = ds["train"][0]["pixel_values"]
    b = ds["train"][0]["pixel_values"]
    assert not torch.equal(a, b)  # augmentation on the fly
    assert torch.equal(ds["train_eval"][0]["pixel_values"], ds["train_eval"][0]["pixel_values"])
    assert ds["train"][0]["labels"] == ds["train_eval"][0]["labels"]


def test_timm_processor_preprocessing(tiny_timm):
    prep = preprocessing_from_processor(_serving(tiny_timm))
    assert prep.size == (32, 32) and prep.mean == pytest.approx((0.485, 0.456, 0.406))
    assert prep.interpolation == "bicubic"  # the backbone's own, kept (timm's test_efficientnet is bicubic)
    assert prep.processor.data_config["crop_pct"] == 1.0
