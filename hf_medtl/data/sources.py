"""Data sources: where the images and their labels come from (class folders, a label CSV; a MedMNIST .npz and a
multi-label CSV through their own readers), and the dispatch on the recipe's one data source."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from hf_medtl.data.medmnist import read_medmnist_npz
from hf_medtl.data.multilabel import scan_multilabel
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


def read_label_csv(csv_file: str | Path, allow_outside: bool = False, min_classes: int = 2) -> FolderScan:
    """A CSV with columns ``path`` (relative to the CSV's folder), ``label`` and optionally ``group`` (e.g. a
    patient id: a group is never split across train/validation/test). Every row is checked before any work."""
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise DataError(f"csv_file '{csv_file}': file not found")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing_cols = {"path", "label"} - set(reader.fieldnames or [])
            if missing_cols:
                raise DataError(f"csv_file '{csv_file}': needs columns path,label; missing {', '.join(sorted(missing_cols))}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"csv_file '{csv_file}': not a readable UTF-8 CSV ({type(e).__name__})") from None
    samples = []
    for line, r in enumerate(rows, start=2):  # line 1 is the header
        if None in r or any(r.get(k) is None for k in ("path", "label")):
            raise DataError(f"csv_file '{csv_file}', line {line}: wrong number of fields; each row needs "
                            f"{','.join(reader.fieldnames)}")
        path, label = r["path"].strip(), r["label"].strip()
        if not path or not label:
            raise DataError(f"csv_file '{csv_file}', line {line}: empty {'path' if not path else 'label'}; "
                            "fill it in or remove the row")
        image = inside(csv_file.parent / path, csv_file.parent, allow_outside, f"csv_file '{csv_file}', line {line}")
        if not image.is_file():
            raise DataError(f"csv_file '{csv_file}', line {line}: image '{path}' does not exist; fix the path "
                            "(relative to the CSV's folder) or remove the row")
        samples.append(Sample(image, label, group=(r.get("group") or "").strip() or None))
    if len({s.label for s in samples}) < min_classes:
        raise DataError(f"csv_file '{csv_file}': fewer than two classes in column label")
    return FolderScan(csv_file.parent, samples, [])


def scan_source(a) -> Source:
    """The recipe's one data source (DataArguments ``a``), with the chosen slice of each 3-D NIfTI volume."""
    source = _scan(a)
    if getattr(a, "nifti_slice", None) is not None:
        source.samples = [_with_nifti_slice(s, a) for s in source.samples]
    return source


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
                else read_label_csv(a.csv_file, outside))
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
