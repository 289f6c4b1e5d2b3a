"""The data stage: recipe's data arguments in, labelled train/validation/test datasets out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hf_medtl.data.sources import (DataError, FolderScan, Sample, read_label_csv, read_medmnist_npz,
                                   scan_class_folders)
from hf_medtl.data.split import SPLITS, stratified_assign, write_manifest
from hf_medtl.data.transforms import Preprocessing, build_transforms, preprocessing_from_processor

__all__ = ["DataError", "Splits", "load_splits", "to_datasets", "image_dataset", "Preprocessing",
           "preprocessing_from_processor", "build_transforms"]


@dataclass
class Splits:
    """Which file goes to which split, before any pixel is read."""

    root: Path
    samples: list[Sample]
    assignment: list[str]
    classes: list[str]
    ignored: list[Path]

    def files(self, split: str) -> list[Sample]:
        return [s for s, a in zip(self.samples, self.assignment) if a == split]

    def counts(self) -> dict[str, int]:
        return {split: self.assignment.count(split) for split in SPLITS}

    def write_manifest(self, path: Path) -> None:
        write_manifest(path, self.root, self.samples, self.assignment)


def load_splits(data_args, seed: int) -> Splits:
    """Scan the recipe's folders and assign every image to a split (stratified, seeded)."""
    seed = seed if data_args.split_seed is None else data_args.split_seed
    if data_args.npz_file:
        return _npz_splits(data_args, seed)
    if data_args.data_dir or data_args.csv_file:
        scan = (scan_class_folders(data_args.data_dir, data_args.file_pattern, "data_dir") if data_args.data_dir
                else read_label_csv(data_args.csv_file))
        ratios = {"validation": data_args.val_ratio, "test": data_args.test_ratio}
        assignment = stratified_assign([s.label for s in scan.samples], ratios, seed)
        return Splits(scan.root, scan.samples, assignment, scan.classes, scan.ignored)
    train = scan_class_folders(data_args.train_dir, data_args.file_pattern, "train_dir")
    test = scan_class_folders(data_args.test_dir, data_args.file_pattern, "test_dir")
    if train.classes != test.classes:
        raise DataError(f"train_dir classes {train.classes} differ from test_dir classes {test.classes}; "
                        "the two folders need the same class sub-folders")
    assignment = stratified_assign([s.label for s in train.samples], {"validation": data_args.val_ratio}, seed)
    root = Path(_common_root(train.root, test.root))
    return Splits(root, train.samples + test.samples, assignment + ["test"] * len(test.samples),
                  train.classes, train.ignored + test.ignored)


def _npz_splits(data_args, seed: int) -> Splits:
    """MedMNIST's own train/val(/test) split; a missing test split is carved out of train, stratified."""
    parts = read_medmnist_npz(data_args.npz_file, data_args.class_names)
    samples, assignment = [], []
    for split, items in parts.items():
        samples += items
        assignment += [split] * len(items)
    if "test" not in parts:
        train_idx = [i for i, a in enumerate(assignment) if a == "train"]
        carved = stratified_assign([samples[i].label for i in train_idx], {"test": data_args.test_ratio}, seed)
        for i, a in zip(train_idx, carved):
            assignment[i] = a
    classes = data_args.class_names or sorted({s.label for s in samples}, key=int)
    return Splits(Path(data_args.npz_file).resolve().parent, samples, assignment, list(classes), [])


def _common_root(a: Path, b: Path) -> str:
    return os.path.commonpath([a.resolve(), b.resolve()])


def image_dataset(samples: list[Sample], classes: list[str], transform):
    """A ``datasets.Dataset`` of (pixel_values, labels), decoded and transformed lazily, as RGB."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    label_id = {c: i for i, c in enumerate(classes)}
    ds = datasets.Dataset.from_dict({"image": [str(s.path) if s.array is None else s.array for s in samples],
                                     "label": [label_id[s.label] for s in samples]}, features=features)
    ds.set_transform(lambda batch: {"pixel_values": [transform(im.convert("RGB")) for im in batch["image"]],
                                    "labels": batch["label"]})
    return ds


def to_datasets(splits: Splits, prep: Preprocessing, data_args) -> dict:
    """A dataset per split, plus ``train_eval``: the training images without augmentation."""
    train_tf, eval_tf = build_transforms(prep, data_args.augment, data_args.crop_scale_min,
                                         data_args.rotation_degrees, data_args.hflip_prob)
    train = splits.files("train")
    return {"train": image_dataset(train, splits.classes, train_tf),
            "train_eval": image_dataset(train, splits.classes, eval_tf),
            "validation": image_dataset(splits.files("validation"), splits.classes, eval_tf),
            "test": image_dataset(splits.files("test"), splits.classes, eval_tf)}
