"""Data sources: where the images and their labels come from (class folders, a label CSV, a MedMNIST .npz)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from hf_medtl.errors import HfMedtlError

# The extensions datasets' imagefolder reads, plus DICOM (upper case matched too).
IMAGE_EXTENSIONS = {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".jfif", ".pgm", ".ppm", ".dcm", ".dicom"}


class DataError(HfMedtlError):
    pass


@dataclass(frozen=True, eq=False)
class Sample:
    path: Path  # a file, or for in-memory images (.npz) "<file>::<split>_images/<index>"
    label: str
    array: Optional[np.ndarray] = field(default=None, repr=False)
    group: Optional[str] = None  # e.g. a patient id from a CSV's group column

    @property
    def source(self):
        """What to decode: the in-memory array, or the file."""
        return self.path if self.array is None else self.array


@dataclass
class FolderScan:
    root: Path
    samples: list[Sample]
    ignored: list[Path]  # files in class folders that are not images by extension

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples})


def scan_class_folders(root: str | Path, pattern: str = "**/*", key: str = "data_dir") -> FolderScan:
    """Every image under ``root/<class>/`` matching ``pattern``, sorted, so that a scan is reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{key} '{root}': folder not found; it should hold one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{key} '{root}': no class sub-folders; expected {root}/<class name>/<image files>")
    samples, ignored = [], []
    for name in classes:
        files = sorted(p for p in (root / name).glob(pattern) if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"{key} '{root}': class folder '{name}' holds no images matching '{pattern}'; "
                            "add images or remove the folder")
        samples += [Sample(p, name) for p in images]
    if len(classes) < 2:
        raise DataError(f"{key} '{root}': only one class ('{classes[0]}'); a classifier needs at least two")
    return FolderScan(root, samples, ignored)


def read_label_csv(csv_file: str | Path) -> FolderScan:
    """A CSV with columns ``path`` (relative to the CSV's folder, or absolute), ``label`` and optionally
    ``group`` (e.g. a patient id: a group is never split across train/validation/test)."""
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise DataError(f"csv_file '{csv_file}': file not found")
    with open(csv_file, newline="") as f:
        reader = csv.DictReader(f)
        missing_cols = {"path", "label"} - set(reader.fieldnames or [])
        if missing_cols:
            raise DataError(f"csv_file '{csv_file}': needs columns path,label; missing {', '.join(sorted(missing_cols))}")
        rows = list(reader)
    samples = [Sample(csv_file.parent / r["path"], r["label"], group=r.get("group") or None) for r in rows]
    missing = [s.path for s in samples if not s.path.is_file()]
    if missing:
        raise DataError(f"csv_file '{csv_file}': {len(missing)} listed image(s) do not exist, e.g. '{missing[0]}'; "
                        "fix the paths (relative to the CSV's folder) or remove the rows")
    if len({s.label for s in samples}) < 2:
        raise DataError(f"csv_file '{csv_file}': fewer than two classes in column label")
    return FolderScan(csv_file.parent, samples, [])


NPZ_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def read_medmnist_npz(npz_file: str | Path, class_names: Optional[list[str]] = None) -> dict[str, list[Sample]]:
    """MedMNIST ``{train,val,test}_images`` / ``_labels`` arrays: split name -> samples (images in memory)."""
    npz_file = Path(npz_file)
    if not npz_file.is_file():
        raise DataError(f"npz_file '{npz_file}': file not found")
    arrays = np.load(npz_file)
    out = {}
    for key, split in NPZ_SPLITS.items():
        if f"{key}_images" not in arrays:
            continue
        images, labels = arrays[f"{key}_images"], np.asarray(arrays[f"{key}_labels"])
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise DataError(f"npz_file '{npz_file}': {key}_labels has {labels.shape[1]} columns (multi-label); "
                            "only single-label classification is supported")
        labels = labels.reshape(-1).astype(int)
        if class_names is not None and labels.max() >= len(class_names):
            raise DataError(f"npz_file '{npz_file}': label {labels.max()} but class_names has {len(class_names)} names")
        names = class_names or [str(i) for i in range(int(labels.max()) + 1)]
        out[split] = [Sample(Path(f"{npz_file}::{key}_images/{i}"), names[lab], images[i]) for i, lab in enumerate(labels)]
    if "train" not in out:
        raise DataError(f"npz_file '{npz_file}': no train_images/train_labels arrays (MedMNIST layout expected)")
    return out
