"""Data sources: where the images and their labels come from (class folders, a label CSV; a MedMNIST .npz and a
multi-label CSV through their own readers), and the dispatch on the recipe's one data source."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hf_medtl.data.groups import group_id
from hf_medtl.data.medmnist import read_medmnist_npz
from hf_medtl.data.multilabel import scan_multilabel
from hf_medtl.data.patients import PATIENT_LIKE, patient_column_error, unused_patient_column
from hf_medtl.data.types import IMAGE_EXTENSIONS, DataError, FolderScan, Sample, Source, inside, is_image_name

__all__ = ["DataError", "FolderScan", "IMAGE_EXTENSIONS", "Sample", "Source", "read_label_csv", "scan_class_folders",
           "scan_source"]


def scan_class_folders(root: str | Path, pattern: str = "**/*", key: str = "data_dir",
                       allow_outside: bool = False) -> FolderScan:
    """Every image under ``root/<class>/`` matching ``pattern``, sorted, so that a scan is reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{key} '{root}': folder not found; it should hold one sub-folder of images per class")
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise DataError(f"file_pattern '{pattern}': must stay inside each class folder (no absolute path, no '..')")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{key} '{root}': no class sub-folders; expected {root}/<class name>/<image files>")
    samples, ignored = [], []
    for name in classes:
        files = sorted(p for p in (root / name).glob(pattern) if p.is_file() and not p.name.startswith("."))
        images = [inside(p, root / name, allow_outside, key) for p in files if is_image_name(p)]
        ignored += [p for p in files if not is_image_name(p)]
        if not images:
            raise DataError(f"{key} '{root}': class folder '{name}' holds no images matching '{pattern}'; "
                            "add images or remove the folder")
        samples += [Sample(p, name) for p in images]
    if len(classes) < 2:
        raise DataError(f"{key} '{root}': only one class ('{classes[0]}'); a classifier needs at least two")
    return FolderScan(root, samples, ignored)


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold the image path, the label and the patient (leakage group); group None: no patients.
    ``group_given``: the recipe named the group column (or null) itself, so a patient-like column is its choice."""

    path: str = "path"
    label: str = "label"
    group: Optional[str] = "group"
    group_given: bool = False
    key: str = "group_column"  # how the user names the group column here (evaluate: its --group_column flag)


def _check_columns(csv_file: Path, names: list[str], cols: Columns) -> None:
    """Every named column exists."""
    flag = "--" if cols.key.startswith("--") else ""  # a command's flags, or the recipe's keys
    missing = [c for c in (cols.path, cols.label) if c not in names]
    if missing:
        raise DataError(f"csv_file '{csv_file}': needs columns {cols.path},{cols.label} (set {flag}path_column / "
                        f"{flag}label_column to yours); missing {', '.join(missing)}; it has {', '.join(names)}")
    if cols.group_given and cols.group is not None and cols.group not in names:
        raise DataError(f"csv_file '{csv_file}': {cols.key} '{cols.group}' is not a column; it has {', '.join(names)}")


def _check_patient_columns(csv_file: Path, names: list[str], rows: list[dict], cols: Columns) -> None:
    """A column that looks like a patient id (by name or by its values) that the recipe did not account for
    (group_column unset, and no column 'group') stops the run."""
    if cols.group_given or cols.group in names:
        return
    found = unused_patient_column(names, (cols.path, cols.label), lambda c: [r.get(c) for r in rows])
    if found:
        raise patient_column_error(f"csv_file '{csv_file}'", *found, key=cols.key)


def read_label_csv(csv_file: str | Path, allow_outside: bool = False, min_classes: int = 2,
                   columns: Columns = Columns()) -> FolderScan:
    """A CSV with a path column (relative to the CSV's folder), a label column and optionally a group column (e.g. a
    patient id: a group is never split across train/validation/test). Every row is checked before any work."""
    csv_file, cols = Path(csv_file), columns
    if not csv_file.is_file():
        raise DataError(f"csv_file '{csv_file}': file not found")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _check_columns(csv_file, list(reader.fieldnames or []), cols)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"csv_file '{csv_file}': not a readable UTF-8 CSV ({type(e).__name__})") from None
    _check_patient_columns(csv_file, list(reader.fieldnames or []), rows, cols)
    samples = []
    for line, r in enumerate(rows, start=2):  # line 1 is the header
        if None in r or any(r.get(k) is None for k in (cols.path, cols.label)):
            raise DataError(f"csv_file '{csv_file}', line {line}: wrong number of fields; each row needs "
                            f"{','.join(reader.fieldnames)}")
        path, label = r[cols.path].strip(), r[cols.label].strip()
        if not path or not label:
            raise DataError(f"csv_file '{csv_file}', line {line}: empty {cols.path if not path else cols.label}; "
                            "fill it in or remove the row")
        image = inside(csv_file.parent / path, csv_file.parent, allow_outside, f"csv_file '{csv_file}', line {line}")
        if not image.is_file():
            raise DataError(f"csv_file '{csv_file}', line {line}: image '{path}' does not exist; fix the path "
                            "(relative to the CSV's folder) or remove the row")
        group = (group_id(r[cols.group], f"csv_file '{csv_file}', line {line}", cols.group, cols.key)
                 if cols.group and cols.group in reader.fieldnames else None)
        samples.append(Sample(image, label, group=group))
    if len({s.label for s in samples}) < min_classes:
        raise DataError(f"csv_file '{csv_file}': fewer than two classes in column {cols.label}")
    return FolderScan(csv_file.parent, samples, [])


def columns_of(a) -> Columns:
    """The recipe's CSV column keys (DataArguments ``a``)."""
    group = getattr(a, "group_column", "group")
    return Columns(a.path_column, a.label_column, None if group is None else group, group != "group")


def scan_source(a) -> Source:
    """The recipe's one data source (DataArguments ``a``), with the chosen slice of each 3-D NIfTI volume."""
    source = _scan(a)
    if getattr(a, "nifti_slice", None) is not None:
        source.samples = [_with_nifti_slice(s, a) for s in source.samples]
    return source


def nifti_slices(samples: list[Sample], a) -> list[Sample]:
    """``samples`` with each 3-D NIfTI volume as the slice ``a`` (nifti_slice, nifti_axis, max_image_pixels) names."""
    return [_with_nifti_slice(s, a) for s in samples] if a.nifti_slice is not None else samples


def _with_nifti_slice(s: Sample, a) -> Sample:
    """A NIfTI sample as its chosen 2-D slice, held in memory like an .npz image (every later stage reads it)."""
    from hf_medtl.data.decode import DecodeError, is_nifti, nifti_slice

    if s.array is not None or not is_nifti(s.path):
        return s
    try:
        arr = nifti_slice(s.path, a.nifti_axis, a.nifti_slice, a.max_image_pixels)
    except DecodeError as e:
        raise DataError(f"'{s.path}': {e}") from None
    return Sample(s.path, s.label, arr, s.group)


def _scan(a) -> Source:
    """Dispatch on the recipe's one data source."""
    outside = a.allow_paths_outside_root
    if getattr(a, "multilabel_csv", None):
        return scan_multilabel(a)
    if getattr(a, "dataset_name", None):
        from hf_medtl.data.hf_datasets import scan_dataset  # here: `datasets` is imported only for a dataset

        cols = columns_of(a)
        return scan_dataset(a, cols.group, cols.group_given, PATIENT_LIKE)
    if a.npz_file:
        parts = read_medmnist_npz(a.npz_file, a.class_names)
        samples = [s for items in parts.values() for s in items]
        fixed = [split for split, items in parts.items() for _ in items]
        ratios = {} if "test" in parts else {"test": a.test_ratio}
        if ratios:
            fixed = [None if f == "train" else f for f in fixed]
        classes = a.class_names or sorted({s.label for s in samples}, key=int)
        return Source(Path(a.npz_file).resolve().parent, samples, fixed, ratios, [], list(classes))
    if a.data_dir or a.csv_file:
        scan = (scan_class_folders(a.data_dir, a.file_pattern, "data_dir", outside) if a.data_dir
                else read_label_csv(a.csv_file, outside, columns=columns_of(a)))
        return Source(scan.root, scan.samples, [None] * len(scan.samples),
                      {"validation": a.val_ratio, "test": a.test_ratio}, scan.ignored, scan.classes)
    train = scan_class_folders(a.train_dir, a.file_pattern, "train_dir", outside)
    test = scan_class_folders(a.test_dir, a.file_pattern, "test_dir", outside)
    if not set(test.classes) <= set(train.classes):
        raise DataError(f"test_dir classes {test.classes} are not all among train_dir classes {train.classes}; "
                        "the two folders need the same class sub-folders")
    root = Path(os.path.commonpath([train.root.resolve(), test.root.resolve()]))
    return Source(root, train.samples + test.samples, [None] * len(train.samples) + ["test"] * len(test.samples),
                  {"validation": a.val_ratio}, train.ignored + test.ignored, train.classes)
