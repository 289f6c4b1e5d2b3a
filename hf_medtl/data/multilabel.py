"""Multi-label data (seed 001's ChestX-ray14 setting): several findings per image, or none.

Two CSV forms (``multilabel_csv``):
- ``path`` (relative to the CSV's folder), one 0/1 column per finding, optionally ``group`` (a patient id);
- ChestX-ray14's ``Data_Entry_2017.csv``: ``Image Index`` (a file in ``images/`` beside the CSV, or beside it),
  ``Finding Labels`` (names separated by '|'; "No Finding" is the empty set) and ``Patient ID`` (the leakage
  group).
A sample's label is its findings joined by '|' in class order ("" for none), so the manifest and the split
reuse
work unchanged; splits are stratified per label (every label in every split where it has enough images).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hf_medtl.data.types import DataError, Sample, Source, inside

NO_FINDING = "No Finding"
SEP = "|"


def label_set(sample: Sample) -> list[str]:
    return [x for x in sample.label.split(SEP) if x]


def _rows(csv_file: Path) -> tuple[list[str], list[dict]]:
    if not csv_file.is_file():
        raise DataError(f"multilabel_csv '{csv_file}': file not found")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"multilabel_csv '{csv_file}': not a readable UTF-8 CSV ({type(e).__name__})") from None


def read_multilabel_csv(csv_file: str | Path, allow_outside: bool = False) -> tuple[list[Sample], list[str]]:
    """(samples whose label is 'A|B' or '', finding names) from either CSV form; every row checked."""
    csv_file = Path(csv_file)
    columns, rows = _rows(csv_file)
    chestxray = {"Image Index", "Finding Labels"} <= set(columns)
    if chestxray:
        images = csv_file.parent / "images" if (csv_file.parent / "images").is_dir() else csv_file.parent
        findings = [[x.strip() for x in r["Finding Labels"].split(SEP) if x.strip() and x.strip() != NO_FINDING]
                    for r in rows]
        classes = sorted({x for f in findings for x in f})
        paths = [images / r["Image Index"].strip() for r in rows]
        groups = [(r.get("Patient ID") or "").strip() or None for r in rows]
    else:
        if "path" not in columns:
            raise DataError(f"multilabel_csv '{csv_file}': needs a 'path' column and one 0/1 column per finding, "
                            "or ChestX-ray14's 'Image Index' and 'Finding Labels'")
        classes = [c for c in columns if c not in ("path", "group")]
        findings = []
        for line, r in enumerate(rows, start=2):
            bad = [c for c in classes if (r.get(c) or "").strip() not in ("0", "1")]
            if bad:
                raise DataError(f"multilabel_csv '{csv_file}', line {line}: column '{bad[0]}' must be 0 or 1, got "
                                f"{r.get(bad[0])!r}")
            findings.append([c for c in classes if r[c].strip() == "1"])
        paths = [csv_file.parent / r["path"].strip() for r in rows]
        groups = [(r.get("group") or "").strip() or None for r in rows]
    if len(classes) < 2:
        raise DataError(f"multilabel_csv '{csv_file}': fewer than two findings; multi-label needs two or more")
    samples = []
    for line, (path, f, g) in enumerate(zip(paths, findings, groups), start=2):
        inside(path, csv_file.parent, allow_outside, f"multilabel_csv '{csv_file}', line {line}")
        if not path.is_file():
            raise DataError(f"multilabel_csv '{csv_file}', line {line}: image '{path.name}' does not exist")
        samples.append(Sample(path, SEP.join(c for c in classes if c in f), group=g))
    return samples, classes


def scan_multilabel(a) -> Source:
    samples, classes = read_multilabel_csv(a.multilabel_csv, a.allow_paths_outside_root)
    return Source(Path(a.multilabel_csv).parent, samples, [None] * len(samples),
                  {"validation": a.val_ratio, "test": a.test_ratio}, [], classes, multi_label=True)
